#!/bin/bash
# Runs once on every Batch instance at boot (launch-template user data, before the ECS
# agent starts containers): puts the scratch space at /scratch, which the job definition
# bind-mounts into every worker container as OVERSEER_SCRATCH_DIR.
#
# Devices are recognised by lsblk's model and size, never by name (NVMe names change
# from one boot to the next):
# - NVMe instance store (m6id, c6id, r6id, i4i, ...) is preferred: local, fast and free
#   with the instance. Several devices are striped (RAID 0); if they cannot be, the
#   script fails rather than silently use one of them.
# - Otherwise the gp3 EBS volume that the launch template attaches as /dev/xvdb (on
#   Nitro, an NVMe "Amazon Elastic Block Store" disk). It is also used when it is
#   larger than the whole instance store. The infra may leave it out when every
#   instance type has enough instance store, so its absence is not an error.
# - With neither, /scratch stays on the root volume, with a warning.
#
# Safe to run again (a reboot): a mounted /scratch is left alone, an existing file
# system is never reformatted, and the fstab line is written once.
#
# The OVERSEER_SCRATCH_* variables exist for the tests; on an instance none is set.
set -euo pipefail

MOUNT_POINT="${OVERSEER_SCRATCH_MOUNT:-/scratch}"
FSTAB="${OVERSEER_SCRATCH_FSTAB:-/etc/fstab}"
EBS_DEVICE="${OVERSEER_SCRATCH_EBS_DEVICE:-/dev/xvdb}"
# Attached at launch, the volume can still take a few seconds to show up.
EBS_WAIT_SECONDS="${OVERSEER_SCRATCH_EBS_WAIT:-60}"
RAID_DEVICE=/dev/md0
INSTANCE_STORE_MODEL="Amazon EC2 NVMe Instance Storage"
EBS_MODEL="Amazon Elastic Block Store"

log() { echo "overseer mount-scratch: $*" >&2; }
fail() {
  log "ERROR: $*"
  exit 1
}

# Whole disks by name: size in bytes and model; IN_USE marks a disk that is mounted or
# has partitions or other children (the root disk, for one).
declare -A SIZE=() MODEL=() IN_USE=()

field() { # field KEY LINE: the value of KEY="..." in a line of `lsblk -P`
  if [[ $2 =~ (^|[[:space:]])$1=\"([^\"]*)\" ]]; then
    printf '%s' "${BASH_REMATCH[2]}"
  fi
}

read_disks() {
  SIZE=() MODEL=() IN_USE=()
  local listing line name parent
  listing=$(lsblk -bnpP -o NAME,SIZE,TYPE,MOUNTPOINT,PKNAME,MODEL)
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    name=$(field NAME "$line")
    parent=$(field PKNAME "$line")
    if [ -n "$parent" ]; then
      IN_USE[$parent]=1
    fi
    if [ "$(field TYPE "$line")" = disk ]; then
      SIZE[$name]=$(field SIZE "$line")
      MODEL[$name]=$(field MODEL "$line")
      if [ -n "$(field MOUNTPOINT "$line")" ]; then
        IN_USE[$name]=1
      fi
    fi
  done <<<"$listing"
}

instance_store_disks() { # one per line, in name order
  local disk
  for disk in "${!MODEL[@]}"; do
    if [[ ${MODEL[$disk]} == "$INSTANCE_STORE_MODEL"* ]]; then
      echo "$disk"
    fi
  done | sort
}

ebs_scratch_disk() { # the launch template's volume: its /dev/xvdb link, else the largest free EBS disk
  if [ -e "$EBS_DEVICE" ]; then
    readlink -f "$EBS_DEVICE"
    return
  fi
  local disk best="" best_size=0
  for disk in "${!MODEL[@]}"; do
    if [[ ${MODEL[$disk]} == "$EBS_MODEL"* && -z ${IN_USE[$disk]:-} ]] &&
      ((${SIZE[$disk]} > best_size)); then
      best=$disk
      best_size=${SIZE[$disk]}
    fi
  done
  echo "$best"
}

stripe() { # stripe DISK...: RAID 0 over the disks, prints the array's device
  command -v mdadm >/dev/null 2>&1 ||
    fail "$# instance-store devices ($*) but mdadm is not installed, so they cannot be striped;" \
      "install mdadm in the AMI"
  mdadm --create "$RAID_DEVICE" --run --level=0 --raid-devices="$#" "$@" >&2 ||
    fail "mdadm could not stripe the instance-store devices ($*) into $RAID_DEVICE"
  echo "$RAID_DEVICE"
}

main() {
  mkdir -p "$MOUNT_POINT"
  if mountpoint -q "$MOUNT_POINT"; then
    log "$MOUNT_POINT is already mounted"
    return 0
  fi

  read_disks
  local store ebs device fstype uuid waited store_bytes=0 disk
  mapfile -t store < <(instance_store_disks)
  ebs=$(ebs_scratch_disk)
  if [ "${#store[@]}" -eq 0 ]; then
    for ((waited = 0; waited < EBS_WAIT_SECONDS && ${#ebs} == 0; waited++)); do
      sleep 1
      read_disks
      ebs=$(ebs_scratch_disk)
    done
  fi
  for disk in "${store[@]}"; do
    store_bytes=$((store_bytes + ${SIZE[$disk]}))
  done

  # An attached EBS volume larger than the instance store means the instance store is too
  # small for the scratch size asked for (the infra attaches the volume only then).
  if [ "${#store[@]}" -gt 0 ] && ! [[ -n $ebs && ${SIZE[$ebs]:-0} -gt $store_bytes ]]; then
    if [ "${#store[@]}" -eq 1 ]; then
      device=${store[0]}
    else
      device=$(stripe "${store[@]}")
    fi
  elif [ -n "$ebs" ]; then
    device=$ebs
  else
    log "WARNING: no instance store and no EBS scratch volume; $MOUNT_POINT is on the root volume"
    chmod 1777 "$MOUNT_POINT"
    return 0
  fi

  fstype=$(blkid -s TYPE -o value "$device" || true)
  if [ -z "$fstype" ]; then
    mkfs.xfs -f "$device"
    fstype=xfs
  fi
  mount -o noatime "$device" "$MOUNT_POINT"
  # By UUID: device names (and the RAID array's number) may differ after a reboot.
  uuid=$(blkid -s UUID -o value "$device")
  if ! awk -v mp="$MOUNT_POINT" '$1 !~ /^#/ && $2 == mp { found = 1 } END { exit !found }' "$FSTAB"; then
    echo "UUID=$uuid $MOUNT_POINT $fstype noatime,nofail 0 2" >>"$FSTAB"
  fi
  # Workers run as a non-root user; each job gets its own subdirectory.
  chmod 1777 "$MOUNT_POINT"
  log "$device ($fstype) mounted at $MOUNT_POINT"
}

# A function, not top-level exits: the user data may carry more commands after this script.
main
