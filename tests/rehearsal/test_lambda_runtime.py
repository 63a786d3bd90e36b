"""The Lambda stand-in itself: a throwaway asset run in it shows what a function sees."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rehearsal import docker_env
from tests.rehearsal.lambda_runtime import RESERVED_VARIABLES, LambdaFunction, lambda_environment

pytestmark = pytest.mark.rehearsal

APP = """
import os, sys, tempfile, time

invocations = 0  # module state: survives between invocations of one warm container
print("init", flush=True)


def _writable(path):
    try:
        with tempfile.NamedTemporaryFile(dir=path):
            return True
    except OSError:
        return False


def _memory_limit():
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if os.path.exists(path):  # cgroup v2, else v1
            return int(open(path).read())


def handler(event, context):
    global invocations
    invocations += 1
    print("handling", event["do"])
    if event["do"] == "sleep":
        time.sleep(event["seconds"])
    if event["do"] == "exit":
        os._exit(3)
    if event["do"] == "fail":
        raise ValueError("bad input: " + event["why"])
    home = os.path.expanduser("~")
    return {
        "version": list(sys.version_info[:2]), "uid": os.getuid(), "invocations": invocations,
        "writable": {p: _writable(p) for p in ("/var/task", "/", "/root", "/home", home, "/tmp")},
        "sys_path0": sys.path[0], "cwd": os.getcwd(), "environment": dict(os.environ),
        "memory_limit": _memory_limit(),
        "context": [context.function_name, context.memory_limit_in_mb, context.aws_request_id,
                    context.get_remaining_time_in_millis()],
    }
"""
TEMPLATE_ENV = {"OVERSEER_JOBS_TABLE": "jobs", "POWERTOOLS_SERVICE_NAME": "overseer-probe"}
CREDENTIALS = {"AccessKeyId": "ASIATEST", "SecretAccessKey": "secret", "SessionToken": "token"}


@pytest.fixture(scope="module")
def asset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        docker_env.ensure_docker()
    except docker_env.DockerError as exc:
        pytest.skip(f"Docker cannot start here: {exc}")
    docker_env.ensure_base_images()
    asset = tmp_path_factory.mktemp("asset")
    (asset / "app.py").write_text(textwrap.dedent(APP))
    (asset / "broken.py").write_text("import module_that_is_not_in_the_asset\n")
    asset.chmod(0o755)  # readable by the function's user, as a deployed zip is
    return asset


def _function(asset: Path, handler: str = "app.handler") -> LambdaFunction:
    return LambdaFunction(
        name="probe", asset_dir=asset, handler=handler, environment=TEMPLATE_ENV, timeout_seconds=2,
        memory_mib=256, credentials=CREDENTIALS, region="eu-west-1", endpoint_url="http://127.0.0.1:5999",
    )  # fmt: skip


@pytest.fixture(scope="module")
def function(asset: Path) -> Iterator[LambdaFunction]:
    with _function(asset) as function:
        yield function


def test_a_function_runs_on_python_312_as_a_user_with_only_tmp_writable(function: LambdaFunction) -> None:
    result = function.invoke({"do": "probe"})
    assert result.error is None, result
    seen = result.payload
    assert seen["version"] == [3, 12]
    assert seen["uid"] == 993
    assert seen["writable"] == {
        "/var/task": False, "/": False, "/root": False, "/home": False, "~": False, "/tmp": True,
    }  # fmt: skip
    assert seen["sys_path0"] == "/var/task" and seen["cwd"] == "/var/task"
    assert seen["memory_limit"] == 256 * 1024 * 1024
    assert seen["context"][:3] == ["probe", "256", result.request_id]
    assert 0 < seen["context"][3] <= 2000
    assert "handling probe" in result.logs


def test_the_environment_is_the_templates_plus_lambdas_and_the_endpoint(function: LambdaFunction) -> None:
    environment = function.invoke({"do": "probe"}).payload["environment"]
    lambda_set = lambda_environment(
        function_name="probe", handler="app.handler", memory_mib=256, region="eu-west-1",
        credentials=CREDENTIALS, runtime_api="", log_group_name="", log_stream_name="",
    )  # fmt: skip
    expected = {*TEMPLATE_ENV, *lambda_set, "AWS_ENDPOINT_URL", "_X_AMZN_TRACE_ID"}
    # LC_CTYPE: CPython's own locale coercion (PEP 538), set by the interpreter at start-up.
    assert set(environment) - {"LC_CTYPE"} == expected
    assert {k: environment[k] for k in TEMPLATE_ENV} == TEMPLATE_ENV
    assert environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5999"
    assert environment["AWS_SESSION_TOKEN"] == "token" and environment["AWS_REGION"] == "eu-west-1"
    assert environment["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    assert environment["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/probe"


def test_a_container_is_reused_until_a_timeout_kills_it(asset: Path) -> None:
    with _function(asset) as function:
        first, second = function.invoke({"do": "probe"}), function.invoke({"do": "probe"})
        assert (first.cold, first.payload["invocations"]) == (True, 1)
        assert "init" in first.logs  # the module's import ran in this (cold) invocation
        assert (second.cold, second.payload["invocations"]) == (False, 2)
        assert "init" not in second.logs

        late = function.invoke({"do": "sleep", "seconds": 30})
        assert late.timed_out and late.error is not None
        assert late.error["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 2.00 seconds" in late.error["errorMessage"]
        assert 2000 <= late.duration_ms < 4000
        assert "handling sleep" in late.logs

        after = function.invoke({"do": "probe"})
        assert (after.cold, after.payload["invocations"]) == (True, 1)


def test_a_handler_exception_returns_the_runtimes_error_object_and_keeps_the_container(
    function: LambdaFunction,
) -> None:
    function.invoke({"do": "probe"})
    failed = function.invoke({"do": "fail", "why": "no graph"})
    assert not failed.timed_out and failed.payload is None
    assert failed.error is not None
    assert failed.error["errorType"] == "ValueError"
    assert failed.error["errorMessage"] == "bad input: no graph"
    assert failed.error["requestId"] == failed.request_id
    (frame,) = failed.error["stackTrace"]  # the runtime's own frames are left out
    assert 'File "/var/task/app.py"' in frame and "in handler" in frame
    assert "ValueError: bad input: no graph" in failed.logs
    assert not function.invoke({"do": "probe"}).cold


def test_a_runtime_that_exits_fails_the_invocation_and_the_next_one_starts_cold(asset: Path) -> None:
    with _function(asset) as function:
        function.invoke({"do": "probe"})
        exited = function.invoke({"do": "exit"})
        assert exited.error is not None and not exited.timed_out
        assert exited.error["errorType"] == "Runtime.ExitError"
        assert "Runtime exited with error: exit status 3" in exited.error["errorMessage"]
        assert function.invoke({"do": "probe"}).cold


def test_a_module_that_cannot_be_imported_fails_the_invocation_as_the_runtime_reports_it(
    asset: Path,
) -> None:
    with _function(asset, handler="broken.handler") as function:
        result = function.invoke({})
    assert result.error is not None
    assert result.error["errorType"] == "Runtime.ImportModuleError"
    assert result.error["errorMessage"] == (
        "Unable to import module 'broken': No module named 'module_that_is_not_in_the_asset'"
    )


def test_a_template_setting_a_reserved_variable_is_refused_as_lambda_refuses_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="AWS_REGION"):
        LambdaFunction(
            name="probe", asset_dir=tmp_path, handler="app.handler", environment={"AWS_REGION": "x"},
            timeout_seconds=2, memory_mib=128, credentials=CREDENTIALS, region="eu-west-1", endpoint_url="",
        )  # fmt: skip
    assert "AWS_ENDPOINT_URL" not in RESERVED_VARIABLES  # the rehearsal's one deviation is settable
