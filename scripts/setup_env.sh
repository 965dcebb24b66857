#!/usr/bin/env bash
# Create .venv and install the project with everything the tests and the quickstart need.
# torch is pinned first: a plain range would pull a multi-GB CUDA build on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e ".[all]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
