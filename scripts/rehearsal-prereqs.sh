#!/usr/bin/env bash
# What the rehearsal needs beyond scripts/setup.sh on a fresh Debian bookworm machine, run as
# root: Docker (Debian's engine and client), debootstrap to make the base images locally (no
# image registry is reachable), shellcheck for the boot script's tests, Graphviz for
# `overseer graph --format png`'s test. Idempotent. The images
# themselves are built lazily by tests/rehearsal/docker_env.py.
set -euo pipefail

packages=(docker.io debootstrap shellcheck graphviz)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query --show --showformat='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "rehearsal-prereqs: run as root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
