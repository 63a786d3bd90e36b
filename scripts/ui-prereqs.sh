#!/usr/bin/env bash
# What the `overseer ui` browser tests (tests/ui) need beyond scripts/setup.sh on Debian
# bookworm, run as root: Debian's Chromium and its driver (Selenium's own driver download
# cannot work without the internet). Idempotent: nothing is done when both are installed.
set -euo pipefail

exec "$(dirname "$0")/apt-packages.sh" chromium chromium-driver
