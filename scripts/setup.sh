#!/usr/bin/env bash
# Create (or reuse) .venv with the project installed for training, CPU serving and tests.
# Sourced by scripts/test.sh and scripts/demo.sh; sets VENV.
# Prints one "setup:" line per step; pip runs quietly, so what it still prints is a warning or an
# error worth reading. A failed step names itself and ends with pip's exit status.
set -euo pipefail
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

# pip's notice for a configured index that has no folder for a package, one or two per package
# looked up: harmless (the package comes from another index), and many per install on machines
# whose pip configuration lists local indexes (`pip config list`). Only that notice is dropped.
_SETUP_PIP_NOISE="^ *WARNING: Location 'file:[^']*' is ignored: it is neither a file nor a directory\.?$"

# _setup_pip "what this step does" PIP-ARGS...: run pip quietly, filtered as above, on stderr.
_setup_pip() {
  local - what=$1 status=0  # "local -": the pipefail below stays inside this function
  set -o pipefail
  shift
  echo "setup: $what"
  "$VENV/bin/python" -m pip --quiet "$@" 2>&1 \
    | { grep --line-buffered -v -E "$_SETUP_PIP_NOISE" >&2 || true; } || status=$?
  if [ "$status" -ne 0 ]; then
    echo "setup: $what failed (pip exit status $status)" >&2
  fi
  return "$status"
}

if [ -x "$VENV/bin/python" ]; then
  echo "setup: using the existing virtual environment $VENV"
else
  echo "setup: creating a virtual environment in $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
_setup_pip "upgrading pip" install --upgrade pip
# torch first, with exact versions: these builds are served from the local wheel store where
# one exists, and the project's range (torch>=2.4,<=2.14.1) then installs nothing more.
if "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "setup: torch $("$VENV/bin/python" -c "import torch; print(torch.__version__)") is already installed"
else
  _setup_pip "installing torch ${TORCH_VERSION:-2.14.1} and torchvision ${TORCHVISION_VERSION:-0.29.1}" \
    install "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
fi
_setup_pip "installing the project (editable, extras train,cpu,serve,client,dev,milvus)" install -e ".[train,cpu,serve,client,dev,milvus]"
echo "setup: $VENV is ready"
unset -f _setup_pip
unset _SETUP_PIP_NOISE
export VENV
