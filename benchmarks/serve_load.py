"""Load test of reid-serve: requests/s and latency percentiles over a concurrency sweep, with and
without micro-batching, against calling the embedder and the gallery directly in-process.

Exports an untrained ReIDModel (resnet18, 128x64, BiLSTM branch included) with
``export.exporter.export_model``, fills a gallery with ``--gallery-size`` generated crops, then

1. direct: decode + embed + identity search, in this process, one query at a time and in
   batches of ``--max-batch`` (the best the server could do with no HTTP at all);
2. server: ``reid-serve`` in a subprocess on 127.0.0.1, with and without micro-batching; a
   minimal asyncio HTTP/1.1 load generator keeps 1, 2, 4, 8, 16 uploads in flight for
   ``--seconds`` each.

The direct batch-1 baseline runs before, between and after the two server sweeps, so drift of
the shared machine shows. The load generator shares the cores with the server, so it is kept as
cheap as possible (pre-built requests, raw keep-alive connections) and its CPU per request is
reported next to the server's (from /proc). Writes ``benchmarks/results/serve_load.md``.

    python benchmarks/serve_load.py          # ~4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
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
    from index.opening import open_or_create
    from index.records import ItemRecord

    embedder = Embedder(model, intra_op_threads=2)
    data = crops(size, seed=1)
    xb = embedder.embed(data)
    records = [ItemRecord(pid=i // 4, camera=1 + i % 6, timestamp=float(i)) for i in range(size)]
    with open_or_create(folder, embedder) as g:  # as reid-serve --create would
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
    cpu_ms: float = float("nan")  # CPU per request of the server process (direct: of this process)
    client_cpu_ms: float = float("nan")  # CPU per request of the load generator (server rows only)
    cores_busy: float = float("nan")  # (server + client) CPU seconds per wall second


def percentiles(latencies_s: list[float]) -> tuple[float, float, float]:
    ms = np.asarray(latencies_s) * 1000.0
    return tuple(float(np.percentile(ms, q)) for q in (50, 95, 99))  # type: ignore[return-value]


def direct(model: Path, gallery: Path, queries: list[bytes], batch: int, seconds: float) -> Row:
    """The same work as one /search, in-process: decode, embed, item and identity search."""
    from export.runtime import Embedder
    from index import faiss_index
    from index.opening import open_or_create

    faiss_index.set_num_threads(1)
    embedder = Embedder(model, intra_op_threads=2)
    latencies: list[float] = []
    done = 0
    with open_or_create(gallery, embedder, create=False) as g:
        start, cpu0 = time.perf_counter(), time.process_time()
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
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    p50, p95, p99 = percentiles(latencies)
    return Row(f"direct, batch {batch}", 1, done, done / elapsed, p50, p95, p99, float(batch),
               cpu_ms=1000.0 * cpu / done, cores_busy=cpu / elapsed)


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


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BOUNDARY = "reid-bench-boundary"


def search_request(port: int, jpeg: bytes) -> bytes:
    """A complete ``POST /search`` (multipart field ``image``), built once and sent many times."""
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + jpeg + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /search?k=10&k_identities=5 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection sending pre-built requests.

    The load generator shares the 2 cores with the server, so every millisecond of client CPU is
    taken from the server: httpx builds the multipart body and parses the answer in Python
    (1.4 ms of CPU per request here), this writes bytes and reads ``Content-Length`` bytes.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(port: int, requests: list[bytes], concurrency: int, seconds: float, max_requests: int,
               server_pid: int) -> Row:
    latencies: list[float] = []
    batches: list[int] = []
    counter = iter(range(max_requests))

    async def worker(conn: Connection, stop_at: float) -> None:
        for i in counter:
            if time.perf_counter() > stop_at:
                return
            t0 = time.perf_counter()
            status, body = await conn.send(requests[i % len(requests)])
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"/search answered {status}: {body[:200]!r}")
            batches.append(json.loads(body)["timings"]["batch_size"])

    conns = [await Connection.open(port) for _ in range(concurrency)]
    try:
        for conn in conns:  # warm-up: every connection once
            status, body = await conn.send(requests[0])
            if status != 200:
                raise RuntimeError(f"/search answered {status}: {body[:200]!r}")
        start, cpu0, server0 = time.perf_counter(), time.process_time(), process_cpu_s(server_pid)
        await asyncio.gather(*(worker(c, start + seconds) for c in conns))
        elapsed = time.perf_counter() - start
        cpu, server = time.process_time() - cpu0, process_cpu_s(server_pid) - server0
    finally:
        for conn in conns:
            conn.close()
    n = len(latencies)
    p50, p95, p99 = percentiles(latencies)
    return Row("", concurrency, n, n / elapsed, p50, p95, p99, float(np.mean(batches)),
               cpu_ms=1000.0 * server / n, client_cpu_ms=1000.0 * cpu / n,
               cores_busy=(cpu + server) / elapsed)


def _fmt(x: float, digits: int = 1) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def report(rows: list[Row], model_note: str, args: argparse.Namespace) -> str:
    lines = [
        "# reid-serve under load",
        "",
        f"Model: {model_note}. Gallery: {args.gallery_size} items, exact (flat) index, "
        f"{os.cpu_count()} CPUs (shared machine). Each request: upload a 128x64 JPEG, k=10 items "
        "and 5 identities x 3 items. Server: one uvicorn process, default thread plan; "
        f"micro-batching max batch {args.max_batch}, max wait 2 ms. Load: in this process, one "
        "asyncio thread, one keep-alive HTTP/1.1 connection per client sending pre-built "
        f"multipart requests, {args.seconds:g} s per level; the direct baseline is measured "
        "before, between and after the two server sweeps so drift shows. "
        "`python benchmarks/serve_load.py`.",
        "",
        "CPU columns: milliseconds of CPU per request of the server process (for direct rows: of "
        "the in-process loop) and of the load generator; cores busy = both together per wall "
        f"second, out of {os.cpu_count()}.",
        "",
        "| mode | clients | requests | req/s | p50 ms | p95 ms | p99 ms | mean batch | CPU ms/req | "
        "client CPU ms/req | cores busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r.mode} | {r.concurrency} | {r.requests} | {r.rps:.1f} | {r.p50:.1f} | "
                     f"{r.p95:.1f} | {r.p99:.1f} | {r.batch:.2f} | {_fmt(r.cpu_ms, 2)} | "
                     f"{_fmt(r.client_cpu_ms, 2)} | {_fmt(r.cores_busy, 2)} |")
    by_mode: dict[str, list[Row]] = {}
    for r in rows:
        by_mode.setdefault(r.mode, []).append(r)
    d1_runs = by_mode["direct, batch 1"]
    d1 = float(np.mean([r.rps for r in d1_runs]))
    d1_p50 = float(np.mean([r.p50 for r in d1_runs]))
    dB = by_mode[f"direct, batch {args.max_batch}"][0]
    best = {m: max(rs, key=lambda r: r.rps) for m, rs in by_mode.items() if m.startswith("server")}
    sb, su = best["server, micro-batching"], best["server, no batching"]
    spread = ", ".join(f"{r.rps:.1f}" for r in d1_runs)
    lines += [
        "",
        f"Direct batch 1, measured {len(d1_runs)} times ({spread} q/s): mean {d1:.1f} q/s, "
        f"p50 {d1_p50:.1f} ms.",
        "",
        "Overhead of HTTP, multipart parsing and queueing at the best concurrency "
        "(1 - server req/s / direct req/s), the load generator's CPU included:",
        "",
        f"- micro-batching: best {sb.rps:.1f} req/s at {sb.concurrency} clients vs direct batch-1 "
        f"{d1:.1f} q/s -> {100 * (1 - sb.rps / d1):.1f} %; vs direct batch-{args.max_batch} "
        f"{dB.rps:.1f} q/s -> {100 * (1 - sb.rps / dB.rps):.1f} %",
        f"- no batching: best {su.rps:.1f} req/s at {su.concurrency} clients vs direct batch-1 "
        f"{d1:.1f} q/s -> {100 * (1 - su.rps / d1):.1f} %",
        f"- load generator: {sb.client_cpu_ms:.2f} / {su.client_cpu_ms:.2f} ms CPU per request at "
        "those levels (micro-batching / no batching)",
        f"- one client: server p50 {by_mode['server, no batching'][0].p50:.1f} ms (no batching), "
        f"{by_mode['server, micro-batching'][0].p50:.1f} ms (micro-batching) vs direct p50 {d1_p50:.1f} ms",
    ]
    return "\n".join(lines) + "\n"


def sweep(model: Path, gallery: Path, queries: list[bytes], batching: bool,
          args: argparse.Namespace) -> list[Row]:
    port = free_port()
    proc = start_server(model, gallery, port, batching, args.max_batch)
    requests = [search_request(port, q) for q in queries]
    rows = []
    try:
        for c in CONCURRENCY:
            row = asyncio.run(load(port, requests, c, args.seconds, args.max_requests, proc.pid))
            row.mode = "server, micro-batching" if batching else "server, no batching"
            rows.append(row)
            print(row, flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    return rows


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

        def baseline(batch: int) -> None:
            rows.append(direct(model, work / "gallery", queries, batch, args.seconds))
            print(rows[-1], flush=True)

        # Direct, server, direct, server, direct: drift of the shared machine shows as spread.
        baseline(1)
        baseline(args.max_batch)
        rows += sweep(model, work / "gallery", queries, True, args)
        baseline(1)
        rows += sweep(model, work / "gallery", queries, False, args)
        baseline(1)
        text = report(rows, model_note, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
