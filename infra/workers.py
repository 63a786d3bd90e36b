"""Workers: the VPC, and per worker pool a Batch compute environment with 1 TB scratch (shared by
pools whose instance needs agree), job queue, job definition, image and job role."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import EgressRule, PoolConfig
from infra.instance_store import instance_store_suffices
from infra.lambda_code import REPO_ROOT

SCRATCH_HOST_PATH = "/scratch"
SCRATCH_CONTAINER_PATH = "/scratch"
SCRATCH_DEVICE = "/dev/xvdb"
# The root device of the ECS-optimized AL2023 AMIs (rootVolumeGiB resizes it).
ROOT_DEVICE = "/dev/xvda"
MOUNT_SCRIPT = REPO_ROOT / "worker_batch" / "mount-scratch.sh"

# Kept out of the worker image's build context (and out of the asset hash).
IMAGE_EXCLUDES = [
    ".git",
    ".cache",
    "cdk.out",
    "node_modules",
    "venv",
    ".venv",
    "**/__pycache__",
    "**/*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "*.egg-info",
    "build",
    "dist",
    ".overseer",
    "tests",
    "bench",
    "docs",
    "infra",
    "functions",
    ".ci",
    "cdk.json",
    "package.json",
    "package-lock.json",
]


@dataclass(frozen=True)
class WorkerCompute:
    """Instances for one or more pools: a launch template and the compute environment using it.

    ``ebs_scratch``: whether instances get the EBS scratch volume (False when every
    instance type's NVMe instance store is at least the scratch size).
    """

    launch_template: ec2.LaunchTemplate
    compute_environment: batch.ManagedEc2EcsComputeEnvironment
    ebs_scratch: bool


class _PoolWorkers(Construct):
    """What every pool's workers are: a job queue on a compute environment (its own, or one
    shared with pools of the same instance needs), the worker image (shared by pools with
    the same ``handlersDir``), a job role, and a job definition running ``overseer worker``
    with the pool's vCPUs, memory and GPUs and ``/scratch`` bind-mounted as
    ``OVERSEER_SCRATCH_DIR``. Host failures (a Spot reclaim or a lost instance: status
    reason ``Host EC2*``) are retried; any other exit ends the Batch job. A worker exits by
    itself when its queue has been idle for a while.

    Attributes
    ----------
    pool:
        Its settings (``infra.config.PoolConfig``).
    compute, launch_template, compute_environment, ebs_scratch:
        Its instances (``compute`` may be another pool's).
    job_queue, image, job_role, container, job_definition:
        The resources. The stack grants ``job_role`` table, queue (its pool's only) and
        bucket access, and what ``rowsTables`` and the pool's ``workerPolicies`` add.
    """

    pool: PoolConfig
    compute: WorkerCompute
    image: ecr_assets.DockerImageAsset

    @property
    def launch_template(self) -> ec2.LaunchTemplate:
        return self.compute.launch_template

    @property
    def compute_environment(self) -> batch.ManagedEc2EcsComputeEnvironment:
        return self.compute.compute_environment

    @property
    def ebs_scratch(self) -> bool:
        return self.compute.ebs_scratch

    def _add_compute(
        self, pool: PoolConfig, vpc: ec2.IVpc, security_group: ec2.ISecurityGroup
    ) -> WorkerCompute:
        """A launch template and a managed EC2 compute environment for ``pool``'s instances.

        Minimum 0 vCPUs, On-Demand or Spot; every instance gets a 1 TB gp3 volume (unless
        every instance type's NVMe instance store is that large) and a boot script that
        mounts NVMe instance store (when the instance type has it) or that volume at
        ``/scratch``. GPU pools run the ECS AL2023 NVIDIA AMI.
        """
        user_data = ec2.MultipartUserData()
        shell = ec2.UserData.for_linux()
        user_data.add_user_data_part(shell, ec2.MultipartBody.SHELL_SCRIPT, True)
        user_data.add_commands(MOUNT_SCRIPT.read_text())
        block_devices = []
        if pool.root_volume_gib:
            block_devices.append(_gp3_volume(ROOT_DEVICE, pool.root_volume_gib))
        # The boot script prefers NVMe instance store; the EBS volume is only for instance
        # types whose store is missing or too small (or unknown to infra/instance_store.py).
        ebs_scratch = pool.scratch_volume_gib > 0 and not instance_store_suffices(
            pool.instance_types, pool.scratch_volume_gib
        )
        if ebs_scratch:
            block_devices.append(
                _gp3_volume(SCRATCH_DEVICE, pool.scratch_volume_gib, iops=3000, throughput=250)
            )
        launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            block_devices=block_devices or None,
            user_data=user_data,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
        )
        image_type = (
            batch.EcsMachineImageType.ECS_AL2023_NVIDIA if pool.gpus else batch.EcsMachineImageType.ECS_AL2023
        )
        compute_environment = batch.ManagedEc2EcsComputeEnvironment(
            self,
            "ComputeEnvironment",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[security_group],
            instance_types=[ec2.InstanceType(t) for t in pool.instance_types],
            use_optimal_instance_classes=False,
            images=[batch.EcsMachineImage(image_type=image_type)],
            minv_cpus=0,
            maxv_cpus=pool.max_vcpus,
            spot=pool.spot,
            allocation_strategy=(
                batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED
                if pool.spot
                else batch.AllocationStrategy.BEST_FIT_PROGRESSIVE
            ),
            launch_template=launch_template,
            update_to_latest_image_version=True,
        )
        # Pin the launch template version: with none (the template's default version) a
        # changed template never reaches Batch; a new version number is a change that
        # CloudFormation applies as an infrastructure update (see docs/deploy.md).
        compute = compute_environment.node.default_child
        assert isinstance(compute, batch.CfnComputeEnvironment)
        compute.add_property_override(
            "ComputeResources.LaunchTemplate.Version", launch_template.latest_version_number
        )
        return WorkerCompute(launch_template, compute_environment, ebs_scratch)

    def _add_jobs(
        self,
        pool: PoolConfig,
        *,
        compute: WorkerCompute,
        image: ecr_assets.DockerImageAsset | None,
        environment: Mapping[str, str],
        log_group: logs.ILogGroup,
        batch_timeout_seconds: int,
    ) -> None:
        """The pool's job queue, image (unless ``image`` is shared), job role and job definition."""
        self.pool = pool
        self.compute = compute
        self.job_queue = batch.JobQueue(
            self,
            "JobQueue",
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=compute.compute_environment, order=1)
            ],
        )
        self.image = image or ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(REPO_ROOT),
            file="worker_batch/Dockerfile",
            build_args={"HANDLERS_DIR": pool.handlers_dir},
            platform=ecr_assets.Platform.LINUX_AMD64,
            exclude=IMAGE_EXCLUDES,
        )
        self.job_role = iam.Role(
            self,
            "JobRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description=(
                "Overseer worker containers: jobs table, dispatch queue, artifact bucket"
                + ("" if pool.is_default else f" (pool {pool.name})")
            ),
        )
        scratch = batch.EcsVolume.host(
            name="scratch", host_path=SCRATCH_HOST_PATH, container_path=SCRATCH_CONTAINER_PATH
        )
        self.container = container = batch.EcsEc2ContainerDefinition(
            self,
            "Container",
            image=ecs.ContainerImage.from_docker_image_asset(self.image),
            cpu=pool.vcpus,
            memory=Size.mebibytes(pool.memory_mib),
            gpu=pool.gpus or None,
            environment={
                **environment,
                "OVERSEER_SCRATCH_DIR": SCRATCH_CONTAINER_PATH,
                # Recorded on every job a worker runs: which build of the handlers ran it (the
                # image's asset hash, its tag in the stack's asset repository).
                "OVERSEER_CODE_VERSION": f"image:{self.image.asset_hash[:12]}",
                # boto3 in the container finds the region without instance metadata (IMDSv2
                # with hop limit 1 keeps containers away from the instance role).
                "AWS_REGION": Stack.of(self).region,
                "AWS_DEFAULT_REGION": Stack.of(self).region,
            },
            job_role=self.job_role,
            # Injected by the ECS agent with the execution role (which CDK grants
            # GetSecretValue / DescribeSecret on each), never visible in the job definition.
            secrets={
                name: batch.Secret.from_secrets_manager(
                    secretsmanager.Secret.from_secret_complete_arn(self, f"Secret{name}", arn)
                )
                for name, arn in pool.worker_secrets.items()
            }
            or None,
            volumes=[scratch],
            logging=ecs.LogDriver.aws_logs(
                stream_prefix="worker" if pool.is_default else f"worker-{pool.name}", log_group=log_group
            ),
        )
        self.job_definition = batch.EcsJobDefinition(
            self,
            "JobDefinition",
            container=container,
            retry_attempts=5,
            retry_strategies=[
                batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.custom(on_status_reason="Host EC2*")),
                batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_reason="*")),
            ],
            timeout=Duration.seconds(batch_timeout_seconds),
        )


class Workers(_PoolWorkers):
    """The default pool's workers, and what every pool's workers share: the VPC, the
    instances' security group and the log group.

    Attributes
    ----------
    vpc, security_group:
        The network of every pool's instances.
    log_group:
        Worker logs of every pool (one stream per Batch job, prefixed ``worker`` for the
        default pool and ``worker-<pool>`` for the others).
    (and those of every pool's workers: see ``_PoolWorkers``)
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        pool: PoolConfig,
        batch_timeout_seconds: int,
        environment: Mapping[str, str],
        log_retention: logs.RetentionDays,
        existing_vpc_id: str = "",
        egress: Sequence[EgressRule] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = self._vpc(existing_vpc_id, log_retention)
        # Security groups do not filter the VPC's DNS resolver, instance metadata or the
        # Time Sync Service: HTTPS (AWS APIs, ECR, handlers' own calls) is all that is needed.
        self.security_group = ec2.SecurityGroup(
            self,
            "InstanceSecurityGroup",
            vpc=self.vpc,
            description="Overseer Batch workers: no inbound traffic, outbound HTTPS (and workerEgress)",
            allow_all_outbound=False,
        )
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS")
        for rule in egress:
            peer = ec2.Peer.ipv6(rule.cidr) if ":" in rule.cidr else ec2.Peer.ipv4(rule.cidr)
            self.security_group.add_egress_rule(peer, ec2.Port.tcp(rule.port), "workerEgress")
        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self._add_jobs(
            pool,
            compute=self._add_compute(pool, self.vpc, self.security_group),
            image=None,
            environment=environment,
            log_group=self.log_group,
            batch_timeout_seconds=batch_timeout_seconds,
        )

    def _vpc(self, existing_vpc_id: str, log_retention: logs.RetentionDays) -> ec2.IVpc:
        if existing_vpc_id:
            # Needs an explicit account and region (CDK_DEFAULT_ACCOUNT / CDK_DEFAULT_REGION).
            return ec2.Vpc.from_lookup(self, "Vpc", vpc_id=existing_vpc_id)
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC),
                ec2.SubnetConfiguration(name="workers", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            ],
            gateway_endpoints={
                # Artifacts and job state stay off the NAT gateway (and its per-GB charge).
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
        )
        flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        return vpc


class WorkerPool(_PoolWorkers):
    """The workers of a pool other than the default, in the default pool's network
    (``Workers``): its own job queue, job role and job definition; its own compute
    environment unless ``compute`` (another pool's, of the same instance needs) is given;
    its own image unless ``image`` (another pool's, of the same ``handlersDir``) is given."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        pool: PoolConfig,
        batch_timeout_seconds: int,
        environment: Mapping[str, str],
        network: Workers,
        compute: WorkerCompute | None = None,
        image: ecr_assets.DockerImageAsset | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._add_jobs(
            pool,
            compute=compute or self._add_compute(pool, network.vpc, network.security_group),
            image=image,
            environment=environment,
            log_group=network.log_group,
            batch_timeout_seconds=batch_timeout_seconds,
        )


def _gp3_volume(
    device: str, size_gib: int, *, iops: int | None = None, throughput: int | None = None
) -> ec2.BlockDevice:
    """An encrypted gp3 volume deleted with its instance."""
    return ec2.BlockDevice(
        device_name=device,
        volume=ec2.BlockDeviceVolume.ebs(
            size_gib,
            volume_type=ec2.EbsDeviceVolumeType.GP3,
            encrypted=True,
            delete_on_termination=True,
            iops=iops,
            throughput=throughput,
        ),
    )
