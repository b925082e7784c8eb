"""Bulk-indexing throughput against the raw embedding throughput of the same model, same run.

A small dual-branch model (resnet18 trunk, 128x64 input, last stride 1, random weights) is
exported with the project's exporter (``export.exporter.export_model``); reid-synth writes a
few thousand 128x64 JPEG crops in the Market-1501 layout. Then, on the same machine and in
one process:

* raw: every crop decoded and resized up front (not timed), then ``Embedder.embed_arrays``
  over the stacked arrays, batch 64: the ceiling bulk indexing can reach;
* bulk: ``index.bulk.index_images`` into a new gallery (read, sha256, already-indexed check,
  decode + resize in worker threads, embed, one durable SQLite transaction per batch, FAISS
  add, final snapshot), for both decode schedules (burst: between inference calls; overlap:
  during them) with 1 and 2 decode threads;
* decode only: decode + resize of every crop on one thread, to show how far it is from
  being the bottleneck.

The raw pass runs before and after the bulk passes; the ratio uses their mean.

    python benchmarks/bulk_index.py                  # ~3000 crops, writes results/bulk_index.md
    python benchmarks/bulk_index.py --ids 20 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "bulk_index.md"
BATCH = 64
# (decode schedule, decode threads): overlap with one thread per four cores (at least one) is the default
VARIANTS = (("burst", 2), ("burst", 1), ("overlap", 1), ("overlap", 2))


def make_model(folder: Path, threads: int) -> Path:
    import torch

    from export.exporter import export_model
    from training.checkpoint import Checkpoint
    from training.model import ModelConfig, ReIDModel

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    config = ModelConfig(num_classes=100, backbone="resnet18", height=128, width=64, last_stride=1)
    model = ReIDModel(config).eval()
    path = folder / "resnet18_128x64.onnx"
    export_model(Checkpoint(model_config=config, model_state=model.state_dict()), path, seed=0, threads=threads)
    return path


def make_crops(folder: Path, ids: int) -> list[Path]:
    from training.cli.synth import main as synth
    from training.core.datasets import list_images

    root = folder / "synth"
    code = synth(["--out", str(root), "--domain", "market", "--ids", str(ids), "--images-per-id", "10",
                  "--height", "128", "--width", "64", "--distractors", "0", "--junk", "0", "--workers", "2"])
    if code:
        raise SystemExit("reid-synth failed")
    return [p for split in ("bounding_box_train", "bounding_box_test", "query") for p in list_images(root / split)]


def time_raw(embedder, pixels: np.ndarray) -> float:
    start = time.perf_counter()
    embedder.embed_arrays(pixels)
    return pixels.shape[0] / (time.perf_counter() - start)


def time_bulk(embedder, paths: list[Path], folder: Path, workers: int, decode: str) -> tuple[float, int]:
    from index.bulk import index_images
    from index.opening import open_or_create
    from index.sources import SourceImage

    images = [SourceImage(p, None, None, None) for p in paths]
    start = time.perf_counter()
    with open_or_create(folder, embedder) as gallery:
        report = index_images(gallery, embedder, images, batch_size=BATCH, workers=workers, decode=decode,
                              progress=False)
    seconds = time.perf_counter() - start  # includes the snapshot written on close
    return report.added / seconds, report.added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=300, help="identities for reid-synth, 10 crops each")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    from export.runtime import Embedder
    from training.core.cores import usable_cores

    cores = usable_cores()
    with tempfile.TemporaryDirectory(prefix="bulk-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        model = make_model(work, cores)
        t_export = time.perf_counter() - t0
        paths = make_crops(work, args.ids)
        print(f"exported model in {t_export:.0f} s; {len(paths)} crops", flush=True)

        embedder = Embedder(model, providers=["cpu"], intra_op_threads=cores, batch_size=BATCH)
        start = time.perf_counter()
        pixels = np.stack([embedder.preprocess(p) for p in paths])
        decode_rate = len(paths) / (time.perf_counter() - start)
        embedder.embed_arrays(pixels[:BATCH])  # warm-up: first-run allocations

        raw_before = time_raw(embedder, pixels)
        print(f"raw {raw_before:.1f} img/s", flush=True)
        bulk = {}
        for decode, workers in VARIANTS:
            bulk[decode, workers] = time_bulk(embedder, paths, work / f"g-{decode}-{workers}", workers, decode)
            print(f"bulk {decode} workers={workers}: {bulk[decode, workers][0]:.1f} img/s", flush=True)
        raw_after = time_raw(embedder, pixels)
        print(f"raw {raw_after:.1f} img/s", flush=True)

    raw = (raw_before + raw_after) / 2
    lines = [
        "# Bulk indexing throughput vs raw embedding",
        "",
        f"Run: `python benchmarks/bulk_index.py` on {platform.machine()} with {cores} usable cores "
        f"(`os.sched_getaffinity`), Python {platform.python_version()}, shared with other work.",
        f"Model: ReIDModel resnet18, 128x64 input, last stride 1, random weights, exported by "
        f"`export.exporter.export_model` (fp32, {embedder.embedding_dim}-d global embedding). "
        f"Crops: {len(paths)} reid-synth JPEGs of 128x64 in the Market-1501 layout. "
        f"ONNX Runtime: CPU, intra-op threads {cores}, batch {BATCH}.",
        "",
        "| pass | images/s | vs raw |",
        "| --- | ---: | ---: |",
        f"| raw `embed_arrays` (before bulk) | {raw_before:.1f} | |",
        f"| raw `embed_arrays` (after bulk) | {raw_after:.1f} | |",
    ]
    for (decode, workers), (rate, added) in bulk.items():
        mark = " (default)" if (decode, workers) == ("overlap", max(1, cores // 4)) else ""
        lines.append(f"| bulk `index_images`, decode={decode}, {workers} thread(s){mark}, {added} added | "
                     f"{rate:.1f} | {rate / raw:.2f} |")
    lines += [
        f"| decode + resize only, 1 thread | {decode_rate:.0f} | {decode_rate / raw:.0f}x |",
        "",
        "`vs raw` = bulk images/s / mean of the two raw passes. Bulk includes reading and hashing each "
        "file, the already-indexed check, decoding and resizing, one fsynced SQLite transaction per "
        "batch, the FAISS add and the snapshot written when the gallery closes.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
