#!/usr/bin/env bash
# The serving install really works without torch: install `.[cpu,serve]` (plus httpx, to send a
# request) into a fresh venv, generate crops with the torch-free `reid-synth`, build a gallery
# with `reid-index build`, start `reid-serve` on a free local port, send one /search and check
# the crop finds itself first, and check that `import torch` fails in that venv.
#
#   bash scripts/check_serving_install.sh
#
# The tiny ONNX model is written by tests/onnx_models.py, which needs `onnx` (a training
# dependency, not a serving one), so it is made with MODEL_PYTHON (default: .venv/bin/python,
# the development venv of scripts/setup.sh). Pass MODEL=path.onnx to use an existing model
# instead. KEEP=1 keeps the scratch folder for inspection; SERVING_VENV=dir reuses (or creates
# there) the serving venv, reinstalling only the project into it.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
MODEL_PYTHON=${MODEL_PYTHON:-$REPO/.venv/bin/python}
# Absolute, because the checks below run from a scratch folder (the venv's own path is kept:
# resolving its symlink would leave the venv).
MODEL_PYTHON="$(cd "$(dirname "$MODEL_PYTHON")" && pwd)/$(basename "$MODEL_PYTHON")"
started=$(date +%s)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/reid-serving-check.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "serving check: scratch kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
step() { echo "serving check [$(( $(date +%s) - started ))s]: $*"; }
# Commands run from the scratch folder, so the checkout is never importable by accident.
cd "$WORK"

if [ -z "${MODEL:-}" ]; then
    step "tiny ONNX model (built with $MODEL_PYTHON)"
    MODEL="$WORK/tiny.onnx"
    PYTHONPATH="$REPO:$REPO/tests" "$MODEL_PYTHON" -c \
        "import sys; from pathlib import Path; from onnx_models import write_tiny_model; write_tiny_model(Path(sys.argv[1]))" \
        "$MODEL"
fi

VENV_DIR=${SERVING_VENV:-$WORK/venv}
VPY="$VENV_DIR/bin/python"
if [ -x "$VPY" ]; then
    step "reusing the serving venv $VENV_DIR"
    "$VPY" -m pip install --quiet --force-reinstall --no-deps "$REPO"
else
    step "fresh venv with .[cpu,serve] and httpx (no torch)"
    "$PY" -m venv "$VENV_DIR"
    "$VPY" -m pip install --quiet "$REPO[cpu,serve]" "httpx>=0.27,<1"
fi
if "$VPY" -c "import torch" >/dev/null 2>&1; then
    echo "serving check: FAILED: torch is importable in the serving venv" >&2
    exit 1
fi

step "crops with reid-synth, two of them rewritten as .bmp and .webp"
"$VENV_DIR/bin/reid-synth" --out "$WORK/market" --domain market --ids 6 --images-per-id 3 \
    --height 64 --width 32 --distractors 2 --junk 0 --workers 1 >/dev/null 2>&1
CROPS="$WORK/market/bounding_box_test"
"$VPY" - "$CROPS" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

crops = sorted(Path(sys.argv[1]).glob("*.jpg"))
for path, fmt, suffix in zip(crops, ("BMP", "WEBP"), (".bmp", ".webp")):
    with Image.open(path) as image:
        image.convert("RGB").save(path.with_suffix(suffix), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    path.unlink()
EOF
expected=$(find "$CROPS" -maxdepth 1 -type f ! -name '.*' | wc -l)

step "reid-index build ($expected crops)"
"$VENV_DIR/bin/reid-index" build --model "$MODEL" --out "$WORK/gallery" --quiet --workers 1 --threads 1 "$CROPS"
count=$("$VENV_DIR/bin/reid-index" stats "$WORK/gallery" --json | "$VPY" -c "import json, sys; print(json.load(sys.stdin)['count'])")
if [ "$count" != "$expected" ]; then
    echo "serving check: FAILED: the gallery holds $count items, the folder $expected crops" >&2
    exit 1
fi

PORT=$("$VPY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()")
step "reid-serve on 127.0.0.1:$PORT"
"$VENV_DIR/bin/reid-serve" --model "$MODEL" --gallery "$WORK/gallery" --host 127.0.0.1 --port "$PORT" \
    --workers 1 --onnx-threads 1 --faiss-threads 1 --log-level warning >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!

step "POST /search"
if ! "$VPY" - "http://127.0.0.1:$PORT" "$CROPS" "$SERVER_PID" <<'EOF'
import os
import sys
import time
from pathlib import Path

import httpx

url, crops, server_pid = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 120
while True:
    try:
        if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
            break
    except httpx.TransportError:
        pass
    try:
        os.kill(server_pid, 0)
    except ProcessLookupError:
        sys.exit("serving check: FAILED: reid-serve exited before it was ready")
    if time.monotonic() > deadline:
        sys.exit("serving check: FAILED: reid-serve was not ready within 120 s")
    time.sleep(0.5)

query = next(p for p in sorted(crops.iterdir()) if p.suffix == ".webp")
answer = httpx.post(f"{url}/search", params={"k": 5}, timeout=30,
                    files={"image": (query.name, query.read_bytes())})
answer.raise_for_status()
body = answer.json()
matches = body["matches"]
assert len(matches) == 5, f"expected 5 ranked matches, got {len(matches)}"
distances = [m["distance"] for m in matches]
assert distances == sorted(distances), f"matches are not ranked by distance: {distances}"
best = matches[0]
assert Path(best["path"]).name == query.name and best["distance"] < 1e-4, f"the query did not find itself first: {best}"
print(f"serving check: /search ranked {len(matches)} of {body['gallery_size']} items; "
      f"best {Path(best['path']).name} at distance {best['distance']:.2e}")
EOF
then
    echo "serving check: reid-serve's output:" >&2
    cat "$WORK/serve.log" >&2
    exit 1
fi
step "passed"
