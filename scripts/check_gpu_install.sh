#!/usr/bin/env bash
# The GPU install, proven on any machine (a GPU is not needed): install '.[gpu,serve]' into a
# venv of its own, bulk-index crops with `reid-index build --device auto` and answer a /search
# through `reid-serve --faiss-device auto --providers auto`, next to the same two steps with the
# CPU install (.venv, or CPU_VENV). Without a GPU, each step of the GPU install must fall back to
# the CPU with one log line from ONNX Runtime and one from the gallery, and give the CPU
# install's results. (`cuda` without a GPU is refused by design: docs/runtime.md, devices.)
# scripts/check_serving_install.sh is the torch-free check of the CPU serving install.
#
#   bash scripts/check_gpu_install.sh [WORKDIR]     # downloads ~1.5 GB of CUDA wheels once
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${1:-}" ]; then
  WORK=$1
else  # a scratch folder of our own (~2 GB with the GPU venv) goes when the check passes
  WORK=$(mktemp -d)
  trap 'if [ $? -eq 0 ]; then rm -rf "$WORK"; else echo "check-gpu: logs kept in $WORK" >&2; fi' EXIT
fi
CPU_VENV=$(cd "${CPU_VENV:-$ROOT/.venv}" && pwd)  # absolute: .ci/run may pass a relative path
GPU_VENV=$WORK/gpu-venv
PY=${PYTHON:-python3}
mkdir -p "$WORK"

if [ ! -x "$GPU_VENV/bin/reid-serve" ]; then
  echo "check-gpu: installing '.[gpu,serve]' into $GPU_VENV"
  "$PY" -m venv "$GPU_VENV"
  "$GPU_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$ROOT[gpu,serve]"
else
  echo "check-gpu: reusing $GPU_VENV, reinstalling the project only"
  "$GPU_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$ROOT"
fi
"$GPU_VENV/bin/python" -c "import faiss, onnxruntime; print('check-gpu: faiss', faiss.__version__, \
'(GPU build)' if hasattr(faiss, 'StandardGpuResources') else '(CPU build)', '| onnxruntime', \
onnxruntime.__version__, onnxruntime.get_available_providers())"

# A tiny model and a few crops, made with the CPU install (the test helpers need onnx).
PYTHONPATH=$ROOT:$ROOT/tests "$CPU_VENV/bin/python" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from onnx_models import write_tiny_model

work = Path(sys.argv[1])
write_tiny_model(work / "model.onnx", seed=3)
crops = work / "crops"
crops.mkdir(exist_ok=True)
rng = np.random.default_rng(0)
for i in range(24):
    pixels = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(crops / f"{1 + i % 6:04d}_c{1 + i % 3}s1_{i:06d}_00.png")
EOF

run_flavour() {  # $1 = cpu | gpu, $2 = venv, $3 = PYTHONPATH (the checkout for a shared dev venv)
  local name=$1 venv=$2 path=$3 port
  rm -rf "$WORK/$name-gallery"
  PYTHONPATH=$path "$venv/bin/reid-index" build --model "$WORK/model.onnx" --out "$WORK/$name-gallery" \
    --device auto --quiet "$WORK/crops" > "$WORK/$name-build.log" 2>&1
  port=$("$venv/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  PYTHONPATH=$path "$venv/bin/reid-serve" --model "$WORK/model.onnx" --gallery "$WORK/$name-gallery" \
    --port "$port" --faiss-device auto --providers auto --log-level info > "$WORK/$name-serve.log" 2>&1 &
  local pid=$!
  "$venv/bin/python" - "$port" "$WORK/crops/0001_c1s1_000000_00.png" "$WORK/$name-search.json" <<'EOF'
import json, sys, time, urllib.request, uuid
port, image, out = sys.argv[1:]
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
        break
    except OSError:
        time.sleep(0.2)
boundary = uuid.uuid4().hex
body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\n"
        "Content-Type: image/png\r\n\r\n").encode() + open(image, "rb").read() + f"\r\n--{boundary}--\r\n".encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/search?k=10", data=body,
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
answer = json.load(urllib.request.urlopen(req, timeout=60))
json.dump(answer, open(out, "w"), indent=1, sort_keys=True)
EOF
  kill "$pid"
  wait "$pid" || true
}

run_flavour cpu "$CPU_VENV" "$ROOT"
run_flavour gpu "$GPU_VENV" ""  # the installed package, as a user would run it

"$CPU_VENV/bin/python" - "$WORK" <<'EOF'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])

def hits(name):
    answer = json.loads((work / f"{name}-search.json").read_text())
    return [(m["id"], round(m["distance"], 5)) for m in answer["matches"]]

failures = []
if hits("gpu") != hits("cpu") or not hits("cpu"):
    failures.append(f"results differ: cpu {hits('cpu')} gpu {hits('gpu')}")
for step in ("build", "serve"):
    log = (work / f"gpu-{step}.log").read_text().splitlines()
    faiss_lines = [l for l in log if "device=auto" in l and "searching on the CPU" in l]
    ort_lines = [l for l in log if "CUDAExecutionProvider" in l and "fell back" in l]
    print(f"check-gpu: {step}: {faiss_lines[:1]} {ort_lines[:1]}")
    if len(faiss_lines) != 1 or len(ort_lines) != 1:
        failures.append(f"{step}: expected one FAISS and one ONNX Runtime fallback line, got "
                        f"{len(faiss_lines)} and {len(ort_lines)} (see {work}/gpu-{step}.log)")
if failures:
    sys.exit("check-gpu: FAILED: " + "; ".join(failures))
print(f"check-gpu: ok: the GPU install fell back to the CPU and answered like the CPU install "
      f"({len(hits('cpu'))} matches)")
EOF
