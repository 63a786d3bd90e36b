#!/usr/bin/env bash
# What the rehearsal needs beyond scripts/setup.sh on a fresh Debian bookworm machine, run as
# root: Docker (Debian's engine and client), debootstrap to make the base images locally (no
# image registry is reachable), shellcheck for the boot script's tests, Graphviz for
# `overseer graph --format png`'s test. Idempotent. The images
# themselves are built lazily by tests/rehearsal/docker_env.py.
set -euo pipefail

exec "$(dirname "$0")/apt-packages.sh" docker.io debootstrap shellcheck graphviz
