#!/usr/bin/env bash
# Create (or reuse) .venv with the project installed for training, CPU serving and tests.
# Sourced by scripts/test.sh and scripts/demo.sh; sets VENV.
set -euo pipefail
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch first, with exact versions: these builds are served from the local wheel store where
# one exists, and the project's range (torch>=2.4,<=2.14.1) then installs nothing more.
if ! "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install --quiet "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[train,cpu,serve,client,dev]"
export VENV
