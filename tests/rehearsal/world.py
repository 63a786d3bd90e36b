"""The synthesized stack, running as deployed: assembled from a fresh ``cdk synth`` only.

``Rehearsal.start(outdir)`` creates the template's tables, queues and bucket in moto,
builds the worker image from the staged asset, gives every component credentials of its
own role, runs each Python Lambda from its asset directory under Python 3.12 in a
container (tests.rehearsal.lambda_runtime), and wires what AWS would wire: the stream's
event source mapping, the sweep's schedule, the trigger rules, API Gateway, and Batch
starting worker containers. Every AWS request goes through the gateway, which holds each
component to its synthesized policies.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.rehearsal import docker_env
from tests.rehearsal.batch import BatchStandIn
from tests.rehearsal.gateway import Gateway, Principal
from tests.rehearsal.lambda_runtime import LambdaFunction
from tests.rehearsal.resources import create_resources
from tests.rehearsal.sources import RestApi, StreamPoller, invoke_async, rule_input, scheduled_event
from tests.rehearsal.template import REGION, Template

SWEEP_PERIOD_SECONDS = 3.0  # the schedule says a minute; the rehearsal compresses time


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Function:
    logical_id: str
    name: str  # the service: "scheduler", "sweep", "api", "trigger"
    arn: str
    principal: Principal
    runtime: LambdaFunction
    invocations: int = 0
    errors: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def invoke(self, event: Any) -> Any:
        with self.lock:  # one instance per function here; AWS would add concurrency
            self.invocations += 1
            result = self.runtime.invoke(event)
        if result.error is not None:
            self.errors.append(result.error)
        return result


class Rehearsal:
    def __init__(self, template: Template, workdir: Path) -> None:
        self.template = template
        self.workdir = workdir
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def start(cls, outdir: Path) -> Rehearsal:
        self = cls(Template.load(outdir), Path(tempfile.mkdtemp(prefix="rehearsal-")))
        docker_env.ensure_docker()
        docker_env.remove_leftovers()
        docker_env.ensure_base_images()
        self.image = docker_env.build_worker_image(outdir)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        self.moto.start()
        self.moto_url = f"http://127.0.0.1:{self.moto._port}"
        # moto keeps every server's resources in the process: a world started after another
        # one in this process (its module's) starts from an empty account.
        urllib.request.urlopen(urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST"))
        self.admin = boto3.session.Session(
            aws_access_key_id="AKIAREHEARSALADMIN", aws_secret_access_key="x", region_name=REGION
        )
        create_resources(self.template, _EndpointSession(self.admin, self.moto_url))
        self.gateway = Gateway(self.moto_url, batch=lambda *a: self.batch(*a))
        self._start_functions()
        self._start_batch()
        self.api = RestApi(self.template, lambda arn: self.function_by_arn(arn).invoke)
        self.operator = self.gateway.add_principal("operator", "Operator", [("admin", _ALLOW_ALL)])
        self._start_poller()
        return self

    # -- assembly -----------------------------------------------------------------------------

    def _principal_for_role(self, name: str, role_arn: Any) -> Principal:
        role = self.template.role_of(role_arn)
        return self.gateway.add_principal(name, role, self.template.role_policies(role))

    def _start_functions(self) -> None:
        self.functions: dict[str, Function] = {}
        for logical_id, resource in self.template.python_functions().items():
            props = resource["Properties"]
            environment = self.template.resolve(props.get("Environment", {}).get("Variables", {}))
            name = environment.get("POWERTOOLS_SERVICE_NAME", logical_id).removeprefix("overseer-")
            principal = self._principal_for_role(name, props["Role"])
            arn = self.template.get_att(logical_id, "Arn")
            runtime = LambdaFunction(
                name=name,
                function_name=self.template.ref(logical_id),
                asset_dir=self.template.asset_dir(logical_id),
                handler=props["Handler"],
                environment=environment,
                timeout_seconds=int(props.get("Timeout", 3)),
                memory_mib=int(props.get("MemorySize", 128)),
                credentials=principal.credentials,
                region=REGION,
                endpoint_url=self.gateway.url,
            )
            self.functions[name] = Function(logical_id, name, arn, principal, runtime)

    def function_by_arn(self, arn: str) -> Function:
        return next(f for f in self.functions.values() if f.arn == arn)

    def _start_batch(self) -> None:
        scratch = self.workdir / "instance-scratch"
        scratch.mkdir()
        scratch.chmod(0o1777)  # as the boot script leaves /scratch
        # Each job definition's container runs as its own job role ("worker", "worker-large").
        self.batch = BatchStandIn(
            template=self.template,
            image=self.image,
            gateway=self.gateway,
            principal_for_role=self._principal_for_role,
            scratch_dir=scratch,
        )

    def _start_poller(self) -> None:
        ((mapping_id, mapping),) = self.template.of_type("AWS::Lambda::EventSourceMapping").items()
        function_id = mapping["Properties"]["FunctionName"]["Ref"]
        function = next(f for f in self.functions.values() if f.logical_id == function_id)
        # Lambda's poller reads the stream and sends failures with the function's own role.
        self.poller = StreamPoller(
            template=self.template,
            mapping_id=mapping_id,
            invoke=function.invoke,
            principal=function.principal,
            endpoint=self.gateway.url,
            function_arn=function.arn,
        )
        self.poller.start()

    def start_sweep_schedule(self) -> None:
        rule_id, _ = self.rule_targeting(self.functions["sweep"])

        def tick() -> None:
            while not self._stop.wait(SWEEP_PERIOD_SECONDS):
                self.fire_rule(rule_id)

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        self._threads.append(thread)

    def rule_targeting(self, function: Function) -> tuple[str, dict[str, Any]]:
        for rule_id, rule in self.template.of_type("AWS::Events::Rule").items():
            for target in self.template.resolve(rule["Properties"].get("Targets", [])):
                if target["Arn"] == function.arn:
                    return rule_id, target
        raise LookupError(f"no rule targets {function.name}")

    def fire_rule(self, rule_id: str, event: dict[str, Any] | None = None) -> list[Any]:
        """What EventBridge does when a rule matches: each target gets its input, invoked
        asynchronously, after checking that EventBridge may invoke it."""
        rule_arn = self.template.get_att(rule_id, "Arn")
        event = event or scheduled_event(rule_arn)
        results = []
        for target in self.template.resolve(self.template.props(rule_id)["Targets"]):
            function = self.function_by_arn(target["Arn"])
            self._check_events_may_invoke(function, rule_arn)
            results.append(
                invoke_async(
                    self.template,
                    function.logical_id,
                    function.invoke,
                    rule_input(target, event),
                    function.principal,
                    self.gateway.url,
                )
            )
        return results

    def _check_events_may_invoke(self, function: Function, rule_arn: str) -> None:
        for permission in self.template.of_type("AWS::Lambda::Permission").values():
            props = self.template.resolve(permission["Properties"])
            if (
                props.get("Principal") == "events.amazonaws.com"
                and props.get("FunctionName") == function.arn
                and props.get("SourceArn") == rule_arn
                and props.get("Action") == "lambda:InvokeFunction"
            ):
                return
        raise AssertionError(f"EventBridge rule {rule_arn} has no permission to invoke {function.name}")

    # -- watching -----------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """An administrator's client straight to the emulator (the test's own reads)."""
        return self.admin.client(service, endpoint_url=self.moto_url)

    def wait_for(self, condition: Callable[[], Any], *, timeout: float, what: str, every: float = 1.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; {self.diagnostics()}")

    def diagnostics(self) -> str:
        denied = [c.describe_denial() for c in self.gateway.denied()]
        errors = {name: f.errors[-3:] for name, f in self.functions.items() if f.errors}
        containers = [
            f"{c.name}: {c.status()} {c.exit_code()}\n{c.logs()[-2000:]}" for c in self.batch.containers()
        ]
        return (
            json.dumps(
                {
                    "denied": denied,
                    "gateway errors": self.gateway.harness_errors[-3:],
                    "function errors": errors,
                    "poller": self.poller.errors[-3:],
                    "stream failures": len(self.poller.failures),
                },
                default=str,
                indent=1,
            )
            + "\n"
            + "\n".join(containers)
        )

    def close(self) -> None:
        self._stop.set()
        self.poller.stop()
        for function in self.functions.values():
            function.runtime.close()
        for container in self.batch.containers():
            container.remove()
        self.gateway.close()
        self.moto.stop()


class _EndpointSession:
    """A boto3 session whose clients all talk to one endpoint."""

    def __init__(self, session: Any, endpoint: str) -> None:
        self.session, self.endpoint = session, endpoint

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint)


_ALLOW_ALL = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
