"""Load test of reid-serve: requests/s and latency percentiles over a concurrency sweep, with and
without micro-batching, against calling the embedder and the gallery directly in-process.

Exports an untrained ReIDModel (resnet18, 128x64, BiLSTM branch included) with
``export.exporter.export_model``, fills a gallery with ``--gallery-size`` generated crops, then

1. direct: decode + embed + identity search, in this process, one query at a time and in
   batches of ``--max-batch`` (the best the server could do with no HTTP at all);
2. server: ``reid-serve`` in a subprocess on 127.0.0.1, with and without micro-batching; an
   asyncio httpx load generator keeps 1, 2, 4, 8, 16 uploads in flight for ``--seconds`` each.

Writes ``benchmarks/results/serve_load.md``. The load generator shares the machine with the
server, so on a small machine the numbers include its CPU too (it is one asyncio thread).

    python benchmarks/serve_load.py          # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

RESULTS = Path(__file__).parent / "results" / "serve_load.md"
CONCURRENCY = (1, 2, 4, 8, 16)
API_KEY = "bench-key"


def export_model(out: Path) -> Path:
    import torch

    from export.exporter import export_model as export
    from training.checkpoint import Checkpoint
    from training.model import ModelConfig, ReIDModel

    torch.manual_seed(0)
    torch.set_num_threads(2)
    config = ModelConfig(num_classes=16, backbone="resnet18", height=128, width=64)
    model = ReIDModel(config).eval()
    export(Checkpoint(config, model.state_dict()), out, embedding="global", seed=0, threads=2)
    return out


def crops(n: int, seed: int, height: int = 128, width: int = 64) -> list[bytes]:
    """JPEG crops: a few vertical colour bands plus noise, so embeddings differ."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        bands = rng.integers(0, 255, (4, 1, 3))
        img = np.repeat(bands, height // 4, axis=0).repeat(width, axis=1).astype(np.float32)
        img += rng.normal(0, 12, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def build_gallery(model: Path, folder: Path, size: int) -> None:
    from export.runtime import Embedder
    from index.gallery import Gallery
    from index.records import ItemRecord

    embedder = Embedder(model, intra_op_threads=2)
    data = crops(size, seed=1)
    xb = embedder.embed(data)
    records = [ItemRecord(pid=i // 4, camid=1 + i % 6, timestamp=float(i)) for i in range(size)]
    with Gallery.create(folder, dim=embedder.embedding_dim, fingerprint=embedder.fingerprint) as g:
        g.add(xb, records)


@dataclass
class Row:
    mode: str
    concurrency: int
    requests: int
    rps: float
    p50: float
    p95: float
    p99: float
    batch: float = 1.0


def percentiles(latencies_s: list[float]) -> tuple[float, float, float]:
    ms = np.asarray(latencies_s) * 1000.0
    return tuple(float(np.percentile(ms, q)) for q in (50, 95, 99))  # type: ignore[return-value]


def direct(model: Path, gallery: Path, queries: list[bytes], batch: int, seconds: float) -> Row:
    """The same work as one /search, in-process: decode, embed, item and identity search."""
    from export.runtime import Embedder
    from index import faiss_index
    from index.gallery import Gallery

    faiss_index.set_num_threads(1)
    embedder = Embedder(model, intra_op_threads=2)
    latencies: list[float] = []
    done = 0
    with Gallery.open(gallery) as g:
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            group = [queries[(i + j) % len(queries)] for j in range(batch)]
            xq = embedder.embed_arrays(np.stack([embedder.preprocess(q) for q in group]))
            for row in xq:
                g.search(row[None], 10)
                g.search_identities(row[None], 5, items_per_identity=3)
            latencies += [time.perf_counter() - t0] * batch
            done += batch
            i += batch
        elapsed = time.perf_counter() - start
    p50, p95, p99 = percentiles(latencies)
    return Row(f"direct, batch {batch}", 1, done, done / elapsed, p50, p95, p99, float(batch))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, gallery: Path, port: int, batching: bool, max_batch: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())",
           "--model", str(model), "--gallery", str(gallery), "--port", str(port),
           "--max-batch", str(max_batch), "--log-level", "warning"]
    if not batching:
        cmd.append("--no-micro-batching")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env={**os.environ, "REID_API_KEY": API_KEY})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"reid-serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("reid-serve did not become ready in 60 s")


async def load(url: str, queries: list[bytes], concurrency: int, seconds: float, max_requests: int) -> Row:
    latencies: list[float] = []
    batches: list[int] = []
    stop_at = time.perf_counter() + seconds
    counter = iter(range(max_requests))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.perf_counter() > stop_at:
                return
            t0 = time.perf_counter()
            r = await client.post("/search", params={"k": 10, "k_identities": 5},
                                  files={"image": ("q.jpg", queries[i % len(queries)], "image/jpeg")})
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()
            batches.append(r.json()["timings"]["batch_size"])

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await client.post("/search", files={"image": ("q.jpg", queries[0], "image/jpeg")})  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    p50, p95, p99 = percentiles(latencies)
    return Row("", concurrency, len(latencies), len(latencies) / elapsed, p50, p95, p99,
               float(np.mean(batches)))


def report(rows: list[Row], model_note: str, args: argparse.Namespace) -> str:
    lines = [
        "# reid-serve under load",
        "",
        f"Model: {model_note}. Gallery: {args.gallery_size} items, exact (flat) index, "
        f"{os.cpu_count()} CPUs (shared machine). Each request: upload a 128x64 JPEG, k=10 items "
        "and 5 identities x 3 items. Server: one uvicorn process, default thread plan; "
        f"micro-batching max batch {args.max_batch}, max wait 2 ms. Load: one asyncio httpx client "
        f"on the same machine, {args.seconds:g} s per level. `python benchmarks/serve_load.py`.",
        "",
        "| mode | clients | requests | req/s | p50 ms | p95 ms | p99 ms | mean batch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r.mode} | {r.concurrency} | {r.requests} | {r.rps:.1f} | {r.p50:.1f} | "
                     f"{r.p95:.1f} | {r.p99:.1f} | {r.batch:.2f} |")
    by_mode = {}
    for r in rows:
        by_mode.setdefault(r.mode, []).append(r)
    best = {m: max(rs, key=lambda r: r.rps) for m, rs in by_mode.items()}
    d1, dB = best["direct, batch 1"], best[f"direct, batch {args.max_batch}"]
    sb, su = best["server, micro-batching"], best["server, no batching"]
    lines += [
        "",
        "Overhead of HTTP, multipart parsing and queueing at the best concurrency "
        "(1 - server req/s / direct req/s):",
        "",
        f"- micro-batching: best {sb.rps:.1f} req/s at {sb.concurrency} clients vs direct batch-"
        f"{args.max_batch} {dB.rps:.1f} q/s -> {100 * (1 - sb.rps / dB.rps):.1f} %; "
        f"vs direct batch-1 {d1.rps:.1f} q/s -> {100 * (1 - sb.rps / d1.rps):.1f} %",
        f"- no batching: best {su.rps:.1f} req/s at {su.concurrency} clients vs direct batch-1 "
        f"{d1.rps:.1f} q/s -> {100 * (1 - su.rps / d1.rps):.1f} %",
        f"- one client: server p50 {by_mode['server, no batching'][0].p50:.1f} ms (no batching), "
        f"{by_mode['server, micro-batching'][0].p50:.1f} ms (micro-batching) vs direct p50 {d1.p50:.1f} ms",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery-size", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=8.0, help="per concurrency level")
    p.add_argument("--max-requests", type=int, default=2000, help="per concurrency level")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        work = Path(tmp)
        print("exporting resnet18 128x64 ...", flush=True)
        model = export_model(work / "model.onnx")
        model_note = "untrained ReIDModel, resnet18 trunk + BiLSTM branch, 128x64 input, " \
                     "global embedding, exported with export.exporter (fp32 ONNX)"
        build_gallery(model, work / "gallery", args.gallery_size)
        queries = crops(64, seed=2)
        rows = []
        for batch in (1, args.max_batch):
            rows.append(direct(model, work / "gallery", queries, batch, args.seconds))
            print(rows[-1], flush=True)
        for batching in (True, False):
            port = free_port()
            proc = start_server(model, work / "gallery", port, batching, args.max_batch)
            try:
                for c in CONCURRENCY:
                    row = asyncio.run(load(f"http://127.0.0.1:{port}", queries, c, args.seconds,
                                           args.max_requests))
                    row.mode = "server, micro-batching" if batching else "server, no batching"
                    rows.append(row)
                    print(row, flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
        text = report(rows, model_note, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
