"""vCPUs, memory and GPUs of common EC2 instance types, and what a Batch job may use of them.

A job definition asking for more than any of its compute environment's instance types can
give waits in RUNNABLE for ever; synthesis checks each pool against this table instead
(``infra/pool_plan.py``). A type missing here is not checked (a family name such as
``c6i``, which lets Batch choose the size, is checked against the sizes listed).

What a job may use of an instance, as the AWS Batch User Guide documents it ("Compute
resource memory management", https://docs.aws.amazon.com/batch/latest/userguide/memory-management.html,
and "Reserve system memory", .../ecs-reserved-memory.html): every vCPU and GPU, but not
all the installed memory. The ECS agent registers the memory the operating system reports,
which platform overhead and the kernel keep below the installed amount (the guide's
example: an m4.large, 8192 MiB installed, registers 7985 MiB), and the Batch AMI's
ECS_RESERVED_MEMORY removes another 32 MiB for the agent and system processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# The share of installed memory the operating system reports, from the guide's m4.large.
OS_MEMORY_SHARE = 7985 / 8192
# ECS_RESERVED_MEMORY of the Batch AMI.
ECS_RESERVED_MIB = 32


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_mib: int
    gpus: int = 0

    @property
    def usable_memory_mib(self) -> int:
        """Memory a job may ask for on this type (after the OS's share and the agent's)."""
        return int(self.memory_mib * OS_MEMORY_SHARE) - ECS_RESERVED_MIB

    def fits(self, vcpus: int, memory_mib: int, gpus: int = 0) -> bool:
        return vcpus <= self.vcpus and memory_mib <= self.usable_memory_mib and gpus <= self.gpus

    def describe(self) -> str:
        gpus = f", {self.gpus} GPU{'s' if self.gpus != 1 else ''}" if self.gpus else ""
        return f"{self.name}: {self.vcpus} vCPUs, {self.usable_memory_mib} MiB usable{gpus}"


GIB = 1024

# size -> (vCPUs, GiB) of the general purpose, compute and memory families.
_GENERAL = {
    "large": (2, 8), "xlarge": (4, 16), "2xlarge": (8, 32), "4xlarge": (16, 64),
    "8xlarge": (32, 128), "12xlarge": (48, 192), "16xlarge": (64, 256), "24xlarge": (96, 384),
}  # fmt: skip
_COMPUTE = {
    "large": (2, 4), "xlarge": (4, 8), "2xlarge": (8, 16), "4xlarge": (16, 32),
    "8xlarge": (32, 64), "12xlarge": (48, 96), "16xlarge": (64, 128), "24xlarge": (96, 192),
}  # fmt: skip
_C5 = {
    "large": (2, 4), "xlarge": (4, 8), "2xlarge": (8, 16), "4xlarge": (16, 32),
    "9xlarge": (36, 72), "12xlarge": (48, 96), "18xlarge": (72, 144), "24xlarge": (96, 192),
}  # fmt: skip
_MEMORY = {
    "large": (2, 16), "xlarge": (4, 32), "2xlarge": (8, 64), "4xlarge": (16, 128),
    "8xlarge": (32, 256), "12xlarge": (48, 384), "16xlarge": (64, 512), "24xlarge": (96, 768),
}  # fmt: skip
# size -> (vCPUs, GiB, GPUs) of the GPU families.
_G4DN = {
    "xlarge": (4, 16, 1), "2xlarge": (8, 32, 1), "4xlarge": (16, 64, 1), "8xlarge": (32, 128, 1),
    "12xlarge": (48, 192, 4), "16xlarge": (64, 256, 1),
}  # fmt: skip
_G5_G6 = {
    **_G4DN,
    "24xlarge": (96, 384, 4), "48xlarge": (192, 768, 8),
}  # fmt: skip
_P3 = {"2xlarge": (8, 61, 1), "8xlarge": (32, 244, 4), "16xlarge": (64, 488, 8)}
_P4D = {"24xlarge": (96, 1152, 8)}

_FAMILIES: dict[str, dict[str, tuple[int, ...]]] = {
    # The d variants (NVMe instance store, infra/instance_store.py) have the same shapes.
    **{family: _GENERAL for family in ("m5", "m6i", "m6id", "m7i")},
    "c5": _C5,
    **{family: _COMPUTE for family in ("c6i", "c6id", "c7i")},
    **{family: _MEMORY for family in ("r5", "r6i", "r6id", "r7i", "i4i")},
    "g4dn": _G4DN,
    "g5": _G5_G6,
    "g6": _G5_G6,
    "p3": _P3,
    "p4d": _P4D,
}

INSTANCE_TYPES: dict[str, InstanceType] = {
    f"{family}.{size}": InstanceType(f"{family}.{size}", spec[0], spec[1] * GIB, *spec[2:])
    for family, sizes in _FAMILIES.items()
    for size, spec in sizes.items()
}


def known_types(names: Iterable[str]) -> tuple[list[InstanceType], list[str]]:
    """The table's entries for ``names`` (every size of a family name), and the names it
    does not know."""
    known: list[InstanceType] = []
    unknown: list[str] = []
    for name in names:
        if name in INSTANCE_TYPES:
            known.append(INSTANCE_TYPES[name])
        elif "." not in name and name in _FAMILIES:
            known += [t for t in INSTANCE_TYPES.values() if t.name.startswith(f"{name}.")]
        else:
            unknown.append(name)
    return known, unknown
