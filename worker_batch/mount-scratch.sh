#!/bin/bash
# Runs once on every Batch instance at boot (launch-template user data, before the ECS
# agent starts containers): puts the 1 TB scratch volume at /scratch, which the job
# definition bind-mounts into every worker container as OVERSEER_SCRATCH_DIR.
#
# NVMe instance store (m6id, c6id, r6id, i4i, ...) is preferred: it is local, fast and
# free with the instance; several devices are striped (RAID 0). Otherwise the gp3 EBS
# volume that the launch template attaches as /dev/xvdb is used.
set -euo pipefail
MOUNT_POINT=/scratch
EBS_DEVICE=/dev/xvdb

mkdir -p "$MOUNT_POINT"
if mountpoint -q "$MOUNT_POINT"; then
  exit 0
fi

mapfile -t STORE < <(lsblk -dpno NAME,MODEL | awk '/Instance Storage/ {print $1}')
if [ "${#STORE[@]}" -gt 1 ] && command -v mdadm >/dev/null 2>&1; then
  mdadm --create /dev/md0 --run --level=0 --raid-devices="${#STORE[@]}" "${STORE[@]}"
  DEVICE=/dev/md0
elif [ "${#STORE[@]}" -ge 1 ]; then
  DEVICE="${STORE[0]}"
else
  # On Nitro instances the EBS volume shows up as /dev/nvmeXn1; udev links /dev/xvdb to it.
  for _ in $(seq 1 60); do
    [ -e "$EBS_DEVICE" ] && break
    sleep 1
  done
  if [ ! -e "$EBS_DEVICE" ]; then
    # scratchVolumeGiB=0 and no instance store: scratch stays on the root volume.
    echo "overseer: no scratch device, $MOUNT_POINT is on the root volume" >&2
    chmod 1777 "$MOUNT_POINT"
    exit 0
  fi
  DEVICE=$(readlink -f "$EBS_DEVICE")
fi

if ! blkid "$DEVICE" >/dev/null 2>&1; then
  mkfs.xfs -f "$DEVICE"
fi
mount -o noatime "$DEVICE" "$MOUNT_POINT"
echo "$DEVICE $MOUNT_POINT xfs noatime,nofail 0 2" >> /etc/fstab
# Workers run as a non-root user; each job gets its own subdirectory.
chmod 1777 "$MOUNT_POINT"
