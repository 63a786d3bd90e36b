#!/usr/bin/env bash
# Everything a fresh machine (Python 3.11, Node 20, npm) needs to run the examples and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# The CDK CLI for `npx aws-cdk synth` (pinned in package.json), when the project declares it.
if [ -f package.json ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --silent; else npm install --no-audit --no-fund --silent; fi
fi
