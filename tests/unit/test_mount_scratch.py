"""The Batch instances' boot script (worker_batch/mount-scratch.sh), run by bash against stand-in tools.

Each test describes a host (what `lsblk` lists, which devices already carry a file system,
whether mdadm is installed) and runs the script with only stand-ins for the system tools on
PATH. The stand-ins log their arguments and keep the host's state (file systems made, mount
points mounted) in a directory, so a second run sees what the first one did.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "worker_batch" / "mount-scratch.sh"
GIB = 1024**3
INSTANCE_STORE = "Amazon EC2 NVMe Instance Storage"
EBS = "Amazon Elastic Block Store              "  # sysfs pads the model with spaces

# Stand-ins: each logs "<tool> <args>" to $FAKE_STATE/calls and reads or writes the host's state.
FAKE_TOOLS = {
    "lsblk": """
n=$(( $(cat "$FAKE_STATE/lsblk.calls" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$FAKE_STATE/lsblk.calls"
while [ ! -f "$FAKE_STATE/lsblk.$n" ]; do n=$((n - 1)); done
cat "$FAKE_STATE/lsblk.$n"
""",
    "mdadm": '[ ! -f "$FAKE_STATE/mdadm.fails" ] || { echo "mdadm: cannot open device" >&2; exit 1; }',
    "mkfs.xfs": 'for dev; do :; done; echo "$dev xfs uuid-$(basename "$dev")" >> "$FAKE_STATE/filesystems"',
    "blkid": """
for dev; do :; done
entry=$(grep "^$dev " "$FAKE_STATE/filesystems" 2>/dev/null) || exit 2
case "$2" in TYPE) echo "$entry" | cut -d' ' -f2 ;; UUID) echo "$entry" | cut -d' ' -f3 ;; esac
""",
    "mount": 'for mp; do :; done; echo "$mp" >> "$FAKE_STATE/mounted"',
    "mountpoint": 'grep -qxF "$2" "$FAKE_STATE/mounted" 2>/dev/null',
    "sleep": ":",
}
# Real tools the script needs besides the stand-ins.
REAL_TOOLS = ("mkdir", "chmod", "sort", "readlink", "awk")


def lsblk_row(name: str, gib: int, kind: str, model: str = "", mountpoint: str = "", parent: str = "") -> str:
    """A line of `lsblk -bnpP -o NAME,SIZE,TYPE,MOUNTPOINT,PKNAME,MODEL`."""
    fields = {"NAME": name, "SIZE": gib * GIB, "TYPE": kind, "MOUNTPOINT": mountpoint, "PKNAME": parent}
    return " ".join(f'{key}="{value}"' for key, value in {**fields, "MODEL": model}.items())


def disk(name: str, gib: int, model: str = "", mountpoint: str = "") -> str:
    return lsblk_row(name, gib, "disk", model, mountpoint)


def partition(name: str, gib: int, parent: str, mountpoint: str = "") -> str:
    return lsblk_row(name, gib, "part", mountpoint=mountpoint, parent=parent)


# The root EBS volume, partitioned and mounted; larger than any scratch volume below, so
# picking the largest EBS disk without excluding it would pick it.
ROOT = [
    disk("/dev/nvme0n1", 2000, EBS),
    partition("/dev/nvme0n1p1", 2000, "/dev/nvme0n1", mountpoint="/"),
    partition("/dev/nvme0n1p128", 1, "/dev/nvme0n1"),
]


class Host:
    """A stand-in instance: its disks, its tools, its /scratch and its fstab, all under tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.state = tmp_path / "state"
        self.bin = tmp_path / "bin"
        self.mount_point = tmp_path / "scratch"
        self.fstab = tmp_path / "fstab"
        self.ebs_link = tmp_path / "xvdb"
        self.state.mkdir()
        self.bin.mkdir()
        self.fstab.write_text("UUID=root / xfs defaults 0 0\n")
        for name, body in FAKE_TOOLS.items():
            tool = self.bin / name
            log = f'echo "{name} $*" >> "$FAKE_STATE/calls"'
            tool.write_text(f"#!/bin/sh\nPATH=/usr/bin:/bin\n{log}\n{body}\n")
            tool.chmod(0o755)
        for name in REAL_TOOLS:
            real = shutil.which(name)
            assert real, f"{name} is needed to run the script"
            (self.bin / name).symlink_to(real)

    def disks(self, *listings: list[str]) -> None:
        """What lsblk answers: the first listing on the first call, and so on; the last one after that."""
        for n, rows in enumerate(listings, start=1):
            (self.state / f"lsblk.{n}").write_text("".join(row + "\n" for row in rows))

    def has_file_system(self, device: str, fstype: str, uuid: str) -> None:
        with (self.state / "filesystems").open("a") as f:
            f.write(f"{device} {fstype} {uuid}\n")

    def without_mdadm(self) -> None:
        (self.bin / "mdadm").unlink()

    def reboot(self) -> None:
        """Instance store and file systems survive a reboot; mounts do not."""
        (self.state / "mounted").unlink()
        (self.state / "calls").unlink()

    def boot(self, wait_seconds: int = 0) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": str(self.bin),
            "FAKE_STATE": str(self.state),
            "OVERSEER_SCRATCH_MOUNT": str(self.mount_point),
            "OVERSEER_SCRATCH_FSTAB": str(self.fstab),
            "OVERSEER_SCRATCH_EBS_DEVICE": str(self.ebs_link),
            "OVERSEER_SCRATCH_EBS_WAIT": str(wait_seconds),
        }
        bash = shutil.which("bash") or "/bin/bash"
        return subprocess.run([bash, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=10)

    def calls(self, tool: str) -> list[str]:
        calls = self.state / "calls"
        lines = calls.read_text().splitlines() if calls.exists() else []
        return [line.split(" ", 1)[1] for line in lines if line.split(" ", 1)[0] == tool]

    def scratch_lines(self) -> list[str]:
        entries = [line.split() for line in self.fstab.read_text().splitlines()]
        return [" ".join(entry) for entry in entries if entry[1] == str(self.mount_point)]

    def scratch_mode(self) -> int:
        return stat.S_IMODE(self.mount_point.stat().st_mode)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def assert_mounted(host: Host, device: str, fstype: str = "xfs", uuid: str = "") -> None:
    mp = str(host.mount_point)
    uuid = uuid or f"uuid-{Path(device).name}"  # what the mkfs.xfs stand-in gives a new file system
    assert host.calls("mount") == [f"-o noatime {device} {mp}"]
    assert host.scratch_lines() == [f"UUID={uuid} {mp} {fstype} noatime,nofail 0 2"]
    assert host.scratch_mode() == 0o1777


def test_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is not installed (CI installs it with apt-get install shellcheck)")
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_instance_store_devices_are_striped(host: Host) -> None:
    # 2 x 950 GiB of instance store beats the 1000 GiB EBS volume.
    host.disks(
        [
            *ROOT,
            disk("/dev/nvme2n1", 950, INSTANCE_STORE),
            disk("/dev/nvme1n1", 950, INSTANCE_STORE),
            disk("/dev/nvme3n1", 1000, EBS),
        ]
    )
    result = host.boot()
    assert result.returncode == 0, result.stderr
    assert host.calls("mdadm") == [
        "--create /dev/md0 --run --level=0 --raid-devices=2 /dev/nvme1n1 /dev/nvme2n1"
    ]
    assert host.calls("mkfs.xfs") == ["-f /dev/md0"]
    assert_mounted(host, "/dev/md0")


def test_one_instance_store_device_is_used_as_it_is(host: Host) -> None:
    host.disks([*ROOT, disk("/dev/nvme1n1", 474, INSTANCE_STORE)])
    result = host.boot()
    assert result.returncode == 0, result.stderr
    assert host.calls("mdadm") == []
    assert host.calls("mkfs.xfs") == ["-f /dev/nvme1n1"]
    assert_mounted(host, "/dev/nvme1n1")


def test_ebs_volume_is_used_without_instance_store(host: Host) -> None:
    host.disks([*ROOT, disk("/dev/nvme1n1", 1000, EBS)])
    result = host.boot()
    assert result.returncode == 0, result.stderr
    assert host.calls("mkfs.xfs") == ["-f /dev/nvme1n1"]
    assert_mounted(host, "/dev/nvme1n1")


def test_ebs_volume_larger_than_the_instance_store_wins(host: Host) -> None:
    host.disks([*ROOT, disk("/dev/nvme1n1", 1000, EBS), disk("/dev/nvme2n1", 118, INSTANCE_STORE)])
    result = host.boot()
    assert result.returncode == 0, result.stderr
    assert host.calls("mdadm") == []
    assert_mounted(host, "/dev/nvme1n1")


def test_ebs_volume_that_shows_up_late_is_waited_for(host: Host) -> None:
    host.disks(ROOT, ROOT, [*ROOT, disk("/dev/nvme1n1", 1000, EBS)])
    result = host.boot(wait_seconds=60)
    assert result.returncode == 0, result.stderr
    assert len(host.calls("sleep")) == 2
    assert_mounted(host, "/dev/nvme1n1")


def test_ebs_volume_is_found_through_its_device_link(host: Host, tmp_path: Path) -> None:
    # A Xen instance: the volume is /dev/xvdb itself, with no model for lsblk to report.
    device = tmp_path / "xvdb-device"
    device.touch()
    host.ebs_link.symlink_to(device)
    host.disks([*ROOT, disk(str(device), 1000)])
    result = host.boot()
    assert result.returncode == 0, result.stderr
    assert_mounted(host, str(device))


def test_several_instance_store_devices_without_mdadm_fail_loudly(host: Host) -> None:
    host.disks([*ROOT, disk("/dev/nvme1n1", 950, INSTANCE_STORE), disk("/dev/nvme2n1", 950, INSTANCE_STORE)])
    host.without_mdadm()
    result = host.boot()
    assert result.returncode != 0
    assert "mdadm is not installed" in result.stderr
    assert host.calls("mount") == []
    assert host.scratch_lines() == []


def test_a_failing_mdadm_fails_loudly(host: Host) -> None:
    host.disks([*ROOT, disk("/dev/nvme1n1", 950, INSTANCE_STORE), disk("/dev/nvme2n1", 950, INSTANCE_STORE)])
    (host.state / "mdadm.fails").touch()
    result = host.boot()
    assert result.returncode != 0
    assert "mdadm could not stripe" in result.stderr
    assert host.calls("mkfs.xfs") == []
    assert host.calls("mount") == []


def test_no_scratch_device_leaves_scratch_on_the_root_volume(host: Host) -> None:
    host.disks(ROOT)
    result = host.boot(wait_seconds=3)
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "root volume" in result.stderr
    assert len(host.calls("sleep")) == 3
    assert host.calls("mkfs.xfs") == [] and host.calls("mount") == []
    assert host.scratch_lines() == []
    assert host.scratch_mode() == 0o1777


def test_a_device_with_a_file_system_is_not_reformatted(host: Host) -> None:
    host.disks([*ROOT, disk("/dev/nvme1n1", 1000, EBS)])
    host.has_file_system("/dev/nvme1n1", "ext4", "0b8e-kept")
    result = host.boot()
    assert result.returncode == 0, result.stderr
    assert host.calls("mkfs.xfs") == []
    assert_mounted(host, "/dev/nvme1n1", fstype="ext4", uuid="0b8e-kept")


def test_running_twice_mounts_once_and_writes_one_fstab_line(host: Host) -> None:
    host.disks([*ROOT, disk("/dev/nvme1n1", 950, INSTANCE_STORE), disk("/dev/nvme2n1", 950, INSTANCE_STORE)])
    assert host.boot().returncode == 0
    second = host.boot()
    assert second.returncode == 0, second.stderr
    assert len(host.calls("mdadm")) == 1 and len(host.calls("mkfs.xfs")) == 1
    assert_mounted(host, "/dev/md0")


def test_after_a_reboot_the_file_system_is_mounted_again_not_remade(host: Host) -> None:
    host.disks([*ROOT, disk("/dev/nvme1n1", 1000, EBS)])
    assert host.boot().returncode == 0
    host.reboot()
    result = host.boot()
    assert result.returncode == 0, result.stderr
    assert host.calls("mkfs.xfs") == []
    assert_mounted(host, "/dev/nvme1n1")
