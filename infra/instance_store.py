"""NVMe instance store per EC2 instance type, to tell when the EBS scratch volume is needed.

Sizes are the total instance store of each type in GB (10^9 bytes), from the EC2 instance
type specifications. A type missing here is assumed to have none, so it keeps the EBS
volume: adding a type can only save a volume, never lose scratch space.
"""

from __future__ import annotations

from collections.abc import Iterable

# Total NVMe instance store (GB) by size, shared by the families that list it.
_M6ID = {
    "large": 118, "xlarge": 237, "2xlarge": 474, "4xlarge": 950, "8xlarge": 1900,
    "12xlarge": 2850, "16xlarge": 3800, "24xlarge": 5700, "32xlarge": 7600, "metal": 7600,
}  # fmt: skip
_I4I = {
    "large": 468, "xlarge": 937, "2xlarge": 1875, "4xlarge": 3750, "8xlarge": 7500,
    "12xlarge": 11250, "16xlarge": 15000, "24xlarge": 22500, "32xlarge": 30000, "metal": 30000,
}  # fmt: skip
_I3 = {"large": 475, "xlarge": 950, "2xlarge": 1900, "4xlarge": 3800, "8xlarge": 7600, "16xlarge": 15200}
INSTANCE_STORE_GB: dict[str, dict[str, int]] = {
    "m6id": _M6ID,
    "c6id": _M6ID,
    "r6id": _M6ID,
    "i4i": _I4I,
    "i3": _I3,
}


def instance_store_gb(instance_type: str) -> int:
    """Total NVMe instance store of ``instance_type`` in GB; 0 when unknown or none."""
    family, _, size = instance_type.partition(".")
    return INSTANCE_STORE_GB.get(family, {}).get(size, 0)


def instance_store_suffices(instance_types: Iterable[str], scratch_gib: int) -> bool:
    """True when every type's instance store holds ``scratch_gib`` GiB, so no instance the
    compute environment may launch needs the EBS scratch volume."""
    needed = scratch_gib * 2**30
    return all(instance_store_gb(t) * 10**9 >= needed for t in instance_types)
