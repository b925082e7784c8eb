#!/usr/bin/env bash
# The main job, end to end: train -> evaluate -> export -> bulk-index -> serve.
#
#   bash scripts/demo.sh                       # built-in generated data, small CPU recipe
#   SOURCE=data/duke TARGET=data/market CAMSTYLE=data/market_camstyle bash scripts/demo.sh
#
# With your own data (Market-1501 / DukeMTMC-reID layouts) the paper's recipe runs: ResNet-50
# at 256x128 from ImageNet weights, 30 epochs, last epoch kept (set EPOCHS, BACKBONE, PRETRAINED
# to change it; VAL_IDS=N holds out N source identities to choose best.pt on).
# Without CAMSTYLE the target images train without camera-style images (--no-camstyle); see
# docs/camstyle.md for generating them with reid-camstyle. Everything lands in $OUT (demo/).
# SERVE=0 stops after indexing; otherwise the search service starts on http://127.0.0.1:$PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
export PATH="$PWD/$VENV/bin:$PATH"

OUT=${OUT:-demo}
PORT=${PORT:-8000}
mkdir -p "$OUT"

if [ -z "${SOURCE:-}" ] || [ -z "${TARGET:-}" ]; then
  echo "== No SOURCE/TARGET given: generating two domains of pedestrians in $OUT/data"
  reid-synth --out "$OUT/data" --ids "${IDS:-300}" --images-per-id 12 --camstyle
  SOURCE="$OUT/data/duke"
  TARGET="$OUT/data/market"
  CAMSTYLE="$OUT/data/market/camstyle"
  # A recipe sized for a CPU: a small trunk, 128x64 crops, no ImageNet weights on this machine.
  TRAIN_ARGS=(--backbone "${BACKBONE:-resnet18}" --height 128 --width 64 --last-stride 1
              --epochs "${EPOCHS:-6}" --max-steps-per-epoch 40 --ids-per-batch 8 --images-per-id 4
              --target-batch 4 --pretrained "${PRETRAINED:-none}" --eval-every 2 --val-ids 20)
else
  TRAIN_ARGS=(--backbone "${BACKBONE:-resnet50}" --epochs "${EPOCHS:-30}"
              --pretrained "${PRETRAINED:-imagenet}" --eval-every 5 --val-ids "${VAL_IDS:-0}")
fi
if [ -n "${CAMSTYLE:-}" ]; then
  TRAIN_ARGS+=(--camstyle "$CAMSTYLE")
else
  TRAIN_ARGS+=(--no-camstyle)
fi

echo "== Training on $SOURCE (labelled) -> $TARGET (unlabelled)"
reid-train --source "$SOURCE" --target "$TARGET" --out "$OUT/run" "${TRAIN_ARGS[@]}"

# The checkpoint the method may choose: best.pt when held-out source identities chose one
# (--val-ids), else the last epoch. Never one chosen on the target's query/gallery labels.
CHECKPOINT="$OUT/run/last.pt"
if [ -f "$OUT/run/best.pt" ]; then
  CHECKPOINT="$OUT/run/best.pt"
fi

echo "== Evaluating $CHECKPOINT on $TARGET's query/gallery (a report: target labels chose nothing)"
reid-eval --checkpoint "$CHECKPOINT" --data "$TARGET"

echo "== Exporting to ONNX"
reid-export --checkpoint "$CHECKPOINT" --out "$OUT/model.onnx"

echo "== Indexing $TARGET/bounding_box_test"
rm -rf "$OUT/gallery"
reid-index build --model "$OUT/model.onnx" --out "$OUT/gallery" "$TARGET/bounding_box_test"
reid-index stats "$OUT/gallery"

echo "== The deployed model + gallery on $TARGET's query/gallery"
reid-index eval --model "$OUT/model.onnx" --data "$TARGET"

# sed reads to the end (head would close the pipe early, and pipefail turns sort's SIGPIPE into a failure)
query=$(find "$TARGET/query" -name '*.jpg' | sort | sed -n 1p)
echo "== Searching the gallery for $query"
reid-index search --model "$OUT/model.onnx" --gallery "$OUT/gallery" "$query" --k 5

if [ "${SERVE:-1}" != "0" ]; then
  echo "== Serving: open http://127.0.0.1:$PORT/ and drop a crop from $TARGET/query (Ctrl-C stops)"
  exec reid-serve --model "$OUT/model.onnx" --gallery "$OUT/gallery" --port "$PORT" \
    --image-root "$TARGET/bounding_box_test"
fi
