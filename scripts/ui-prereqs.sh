#!/usr/bin/env bash
# What the `overseer ui` browser tests (tests/ui) need beyond scripts/setup.sh on Debian
# bookworm, run as root: Debian's Chromium and its driver (Selenium's own driver download
# cannot work without the internet). Idempotent: nothing is done when both are installed.
set -euo pipefail

packages=(chromium chromium-driver)
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
  echo "ui-prereqs: run as root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
