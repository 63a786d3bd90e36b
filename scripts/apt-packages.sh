#!/usr/bin/env bash
# Installs the Debian packages named as arguments that are not installed yet (as root);
# nothing to do when every one is. Used by the *-prereqs.sh scripts.
set -euo pipefail

missing=()
for package in "$@"; do
  if ! dpkg-query --show --showformat='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "$(basename "$0"): run as root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
