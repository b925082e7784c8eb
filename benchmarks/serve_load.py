"""Load test of reid-serve: requests/s and latency percentiles over a concurrency sweep, with and
without micro-batching, against calling the embedder and the gallery directly in-process, for
three models:

- ``small``: an untrained ReIDModel, resnet18 trunk + BiLSTM branch, 128x64, exported with
  ``export.exporter.export_model`` (fp32);
- ``r50``: the paper's configuration (ResNet-50, 256x128, BiLSTM local branch), randomly
  initialised (then two SGD steps on generated crops), saved as a checkpoint
  and exported with ``reid-export`` (fp32; speed does not depend on the weights);
- ``r50-int8``: the same checkpoint through ``reid-export --quantize int8`` (the project's
  quantiser, calibrated on generated 256x128 crops).

For each model a gallery of ``--gallery-size`` generated crops embedded by that model, then

1. direct: decode + embed + item and identity search, in this process, one query at a time,
   in batches of ``--max-batch``, in batches of ``--max-batch`` on two threads sharing one
   two-thread session, and on two threads each calling a one-thread session (what the
   server's two embedding lanes do under load); the best batched figure is the ceiling the
   server is held to;
2. server: ``reid-serve`` in a subprocess on 127.0.0.1, with and without micro-batching; a
   minimal asyncio HTTP/1.1 load generator keeps 1, 2, 4, 8, 16, 32, 48, 64 uploads in flight for
   ``--seconds`` each.

The direct batch-1 baseline runs before, between and after the two server sweeps, so drift of
the shared machine shows. The load generator shares the cores with the server, so it is kept as
cheap as possible (pre-built requests, raw keep-alive connections) and its CPU per request is
reported next to the server's (from /proc). Writes ``benchmarks/results/serve_load.md`` and a
plot of throughput against concurrency beside it.

    python benchmarks/serve_load.py                      # ~10 minutes on 2 cores
    python benchmarks/serve_load.py --models small --work /tmp/sl   # keep models between runs
"""

from __future__ import annotations

import argparse
import contextlib
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

RESULTS = Path(__file__).parent / "results" / "serve_load.md"
# The ceiling's loop (two threads, each a batch of --max-batch) holds 32 queries at once, and a
# closed-loop client count splits between the server's two lanes, so 16 clients give batches of
# at most about 8. A server's client also spends part of each cycle on the wire and in the
# answer, while a lane is already forming its next batch: with 32 clients the lanes' batches
# average 13 of 16, so the sweep goes on to 48 and 64.
CONCURRENCY = (1, 2, 4, 8, 16, 32, 48, 64)
MODELS = ("small", "r50", "r50-int8")
API_KEY = "bench-key"
MICRO, UNBATCHED = "server, micro-batching", "server, no batching"


@dataclass(frozen=True)
class Served:
    """One model under test: its ONNX file, a gallery for it, and its input size."""

    name: str
    note: str
    model: Path
    gallery: Path
    height: int
    width: int


def _run_python(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", code, *args], check=True, stdout=subprocess.DEVNULL)


def export_small(out: Path) -> Path:
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


def export_r50(work: Path) -> tuple[Path, Path]:
    """The paper's configuration from a randomly initialised checkpoint: ``reid-export`` to fp32
    and, with the project's quantiser, to int8 (calibrated on generated 256x128 crops)."""
    import torch

    from training.checkpoint import Checkpoint, save_checkpoint
    from training.model import ModelConfig, ReIDModel
    from training.transforms import eval_transform, read_rgb

    torch.manual_seed(0)
    config = ModelConfig(num_classes=751)  # defaults: resnet50, 256x128, BiLSTM local branch
    calibration = work / "calibration"
    calibration.mkdir(exist_ok=True)
    for i, data in enumerate(crops(192, seed=3, height=config.height, width=config.width)):
        (calibration / f"{i:04d}.jpg").write_bytes(data)
    # Straight from initialisation, activations run into the hundreds and reid-export's
    # PyTorch-vs-ONNX check (absolute tolerance) refuses the file; two SGD steps on generated
    # crops (as benchmarks/embed_throughput.py does) give the weights and BatchNorm statistics
    # ordinary magnitudes.
    model = ReIDModel(config)
    transform = eval_transform(config.height, config.width)
    images = torch.stack([transform(read_rgb(f)) for f in sorted(calibration.iterdir())[:32]])
    labels = torch.arange(len(images)) % config.num_classes
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(images).global_logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint = work / "r50-random.pt"
    save_checkpoint(checkpoint, Checkpoint(config, model.eval().state_dict()))
    fp32, int8 = work / "r50.onnx", work / "r50.int8.onnx"
    # Random weights: the int8 model's agreement with fp32 is not what is measured here, so the
    # quantiser's cosine floor is lowered; its report still prints the agreement reached.
    _run_python("from export.cli import main; raise SystemExit(main())",
                "--checkpoint", str(checkpoint), "--out", str(int8), "--float-out", str(fp32),
                "--quantize", "int8", "--calibration", str(calibration), "--min-cosine", "0.5",
                "--seed", "0", "--batch-check", "4", "--threads", "2")
    return fp32, int8


def prepare(names: list[str], work: Path, gallery_size: int) -> list[Served]:
    """Export the models asked for into ``work`` (kept if already there) and fill a gallery
    for each."""
    served = []
    if "small" in names:
        small = work / "small.onnx"
        if not small.exists():
            print("exporting resnet18 128x64 ...", flush=True)
            export_small(small)
        served.append(Served("small", "untrained ReIDModel, resnet18 trunk + BiLSTM branch, 128x64, "
                             "global embedding, export.exporter, fp32", small, work / "small-gallery", 128, 64))
    if {"r50", "r50-int8"} & set(names):
        fp32, int8 = work / "r50.onnx", work / "r50.int8.onnx"
        if not (fp32.exists() and int8.exists()):
            print("exporting resnet50 256x128 (fp32 and int8) with reid-export ...", flush=True)
            export_r50(work)
        note = ("randomly initialised ReIDModel (two SGD steps on generated crops), ResNet-50 + BiLSTM branch, "
                "256x128, global embedding, reid-export")
        if "r50" in names:
            served.append(Served("r50", note + ", fp32", fp32, work / "r50-gallery", 256, 128))
        if "r50-int8" in names:
            served.append(Served("r50-int8", note + " --quantize int8 (QDQ, static, per-channel)", int8,
                                 work / "r50-int8-gallery", 256, 128))
    for m in served:
        if not (m.gallery / "manifest.json").exists():
            print(f"gallery of {gallery_size} for {m.name} ...", flush=True)
            build_gallery(m.model, m.gallery, gallery_size, m.height, m.width)
    return served


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


def build_gallery(model: Path, folder: Path, size: int, height: int, width: int) -> None:
    from export.runtime import Embedder
    from index.opening import open_or_create
    from index.records import ItemRecord

    embedder = Embedder(model, intra_op_threads=2)
    xb = embedder.embed(crops(size, seed=1, height=height, width=width))
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


def direct(model: Path, gallery: Path, queries: list[bytes], batch: int, seconds: float, lanes: int = 1,
           onnx_threads: int = 2) -> Row:
    """The same work as /search, in-process: decode, embed, item and identity search, in groups
    of ``batch``; ``lanes`` threads run such loops at once on one session of ``onnx_threads``."""
    from export.runtime import Embedder
    from index import faiss_index
    from index.opening import open_or_create

    faiss_index.set_num_threads(1)
    embedder = Embedder(model, intra_op_threads=onnx_threads, spin=lanes == 1)
    with open_or_create(gallery, embedder, create=False) as g:
        def loop(lane: int, stop_at: float) -> list[float]:
            latencies: list[float] = []
            i = lane * 7
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                group = [queries[(i + j) % len(queries)] for j in range(batch)]
                xq = embedder.embed_arrays(np.stack([embedder.preprocess(q) for q in group]))
                g.search(xq, 10)
                g.search_identities(xq, 5, items_per_identity=3)
                latencies += [time.perf_counter() - t0] * batch
                i += batch
            return latencies

        loop(0, time.perf_counter() + 0.5)  # warm-up
        start, cpu0 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(lanes) as pool:
            runs = list(pool.map(loop, range(lanes), [start + seconds] * lanes))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    latencies = [x for run in runs for x in run]
    done = len(latencies)
    p50, p95, p99 = percentiles(latencies)
    mode = (f"direct, batch {batch}" + (f" x {lanes} threads" if lanes > 1 else "")
            + (f", {onnx_threads} ONNX thread{'s' if onnx_threads > 1 else ''}" if onnx_threads != 2 else ""))
    return Row(mode, 1, done, done / elapsed, p50, p95, p99, float(batch),
               cpu_ms=1000.0 * cpu / done, cores_busy=cpu / elapsed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, gallery: Path, port: int, batching: bool, max_batch: int,
                 extra: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())",
           "--model", str(model), "--gallery", str(gallery), "--port", str(port),
           "--max-batch", str(max_batch), "--log-level", "warning"]
    cmd += extra if batching else ["--no-micro-batching"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env={**os.environ, "REID_API_KEY": API_KEY})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"reid-serve exited with {proc.returncode}")
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            if ready.status_code == 200:
                return proc, ready.json()["threads"]
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("reid-serve did not become ready in 60 s")


def process_cpu_s(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds of another process, all its threads, or of one ``thread`` of
    it (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BOUNDARY = "reid-bench-boundary"


def search_request(port: int, jpeg: bytes, raw: bool = False) -> bytes:
    """A complete ``POST /search`` (multipart field ``image``, or with ``raw`` the JPEG itself as
    the body), built once and sent many times."""
    if raw:
        return (f"POST /search?k=10&k_identities=5 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n").encode() + jpeg
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


@dataclass
class Result:
    """Every row measured for one model, and the server's thread plans."""

    served: Served
    rows: list[Row]
    plans: dict[str, str]

    def by_mode(self) -> dict[str, list[Row]]:
        out: dict[str, list[Row]] = {}
        for r in self.rows:
            out.setdefault(r.mode, []).append(r)
        return out

    def ceiling(self) -> Row:
        return max((r for r in self.rows if r.mode.startswith("direct") and r.batch > 1), key=lambda r: r.rps)

    def direct_one(self) -> tuple[float, float]:
        ones = self.by_mode()["direct, batch 1"]
        return float(np.mean([r.rps for r in ones])), float(np.mean([r.p50 for r in ones]))

    def best(self, mode: str) -> Row:
        return max(self.by_mode()[mode], key=lambda r: r.rps)

    def at(self, mode: str, clients: int) -> Row:
        return next(r for r in self.by_mode()[mode] if r.concurrency == clients)


def model_section(res: Result) -> list[str]:
    m = res.served
    lines = [f"## {m.name}", "", f"{m.note}. Server thread plans: micro-batching {res.plans[MICRO]!r}; "
             f"no batching {res.plans[UNBATCHED]!r}.", "",
             "| mode | clients | requests | req/s | p50 ms | p95 ms | p99 ms | mean batch | CPU ms/req | "
             "client CPU ms/req | cores busy |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in res.rows:
        lines.append(f"| {r.mode} | {r.concurrency} | {r.requests} | {r.rps:.1f} | {r.p50:.1f} | "
                     f"{r.p95:.1f} | {r.p99:.1f} | {r.batch:.2f} | {_fmt(r.cpu_ms, 2)} | "
                     f"{_fmt(r.client_cpu_ms, 2)} | {_fmt(r.cores_busy, 2)} |")
    d1, d1_p50 = res.direct_one()
    spread = ", ".join(f"{r.rps:.1f}" for r in res.by_mode()["direct, batch 1"])
    ceiling, sb, su = res.ceiling(), res.best(MICRO), res.best(UNBATCHED)
    one_b, one_u = res.at(MICRO, 1), res.at(UNBATCHED, 1)
    lines += [
        "",
        f"- direct batch 1, measured 3 times ({spread} q/s): mean {d1:.1f} q/s, p50 {d1_p50:.1f} ms",
        f"- ceiling (best direct batched): {ceiling.rps:.1f} q/s ({ceiling.mode})",
        f"- micro-batching: best {sb.rps:.1f} req/s at {sb.concurrency} clients = "
        f"{100 * sb.rps / ceiling.rps:.1f} % of the ceiling (goal >= 90 %), mean batch {sb.batch:.1f}, "
        f"cores busy {sb.cores_busy:.2f} (goal >= 1.8), p50/p95/p99 {sb.p50:.1f}/{sb.p95:.1f}/{sb.p99:.1f} ms",
        f"- no batching: best {su.rps:.1f} req/s at {su.concurrency} clients",
    ]
    for c in (8, 16):
        b, u = res.at(MICRO, c), res.at(UNBATCHED, c)
        lines.append(f"- {c} clients: micro-batching {b.rps:.1f} vs no batching {u.rps:.1f} req/s "
                     f"({100 * (b.rps / u.rps - 1):+.1f} %); p99 {b.p99:.1f} vs {u.p99:.1f} ms")
    lines.append(f"- one client: server p50 {one_b.p50:.1f} ms (micro-batching), {one_u.p50:.1f} ms (no batching) "
                 f"vs direct p50 {d1_p50:.1f} ms: {one_b.p50 - d1_p50:+.1f} ms (goal <= +2 ms)")
    return lines


def summary(results: list[Result]) -> list[str]:
    lines = ["| model | ceiling q/s | best server req/s | at clients | % of ceiling | p50 / p95 / p99 ms | "
             "mean batch | cores busy | vs no batching at 8 / 16 clients | p99 at 16 ms | one client p50 server - direct |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: |"]
    for res in results:
        ceiling, sb = res.ceiling(), res.best(MICRO)
        vs = " / ".join(f"{100 * (res.at(MICRO, c).rps / res.at(UNBATCHED, c).rps - 1):+.1f} %" for c in (8, 16))
        _, d1_p50 = res.direct_one()
        lines.append(f"| {res.served.name} | {ceiling.rps:.1f} | {sb.rps:.1f} | {sb.concurrency} | "
                     f"{100 * sb.rps / ceiling.rps:.1f} | {sb.p50:.1f} / {sb.p95:.1f} / {sb.p99:.1f} | "
                     f"{sb.batch:.1f} | {sb.cores_busy:.2f} | {vs} | {res.at(MICRO, 16).p99:.1f} | "
                     f"{res.at(MICRO, 1).p50 - d1_p50:+.1f} ms |")
    return lines


def report(results: list[Result], args: argparse.Namespace, plot: str | None) -> str:
    lines = [
        "# reid-serve under load",
        "",
        f"Gallery: {args.gallery_size} items per model, exact (flat) index, {os.cpu_count()} CPUs "
        "(shared machine). Each request: upload a JPEG of the model's input size, k=10 items and 5 "
        "identities x 3 items. Server: one uvicorn process, default thread plan; micro-batching max "
        f"batch {args.max_batch}, max wait 2 ms. Load: in this process, one asyncio thread, one "
        "keep-alive HTTP/1.1 connection per client sending pre-built "
        f"{'raw image' if args.raw else 'multipart'} requests, {args.seconds:g} s per level; the direct "
        "baseline is measured before, between and after the two server sweeps so drift shows. "
        f"`python benchmarks/serve_load.py {' '.join(args.argv)}`.",
        "",
        f"Machine load (1-minute load average, {os.cpu_count()} CPUs) at the start and the end of the "
        f"run: {args.load_before:.1f} and {os.getloadavg()[0]:.1f}; well above {os.cpu_count()} means "
        "other jobs took most of the cores and the figures below say little about the goals.",
        "",
        "CPU columns: milliseconds of CPU per request of the server process (for direct rows: of "
        "the in-process loop) and of the load generator; cores busy = both together per wall "
        f"second, out of {os.cpu_count()}.",
        "",
        *summary(results),
        "",
    ]
    if plot:
        lines += [f"![throughput against concurrency]({plot})", ""]
    for res in results:
        lines += [*model_section(res), ""]
    return "\n".join(lines)


def plot_throughput(results: list[Result], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        for mode, style in ((MICRO, "o-"), (UNBATCHED, "s--")):
            rows = res.by_mode()[mode]
            ax.plot([r.concurrency for r in rows], [r.rps for r in rows], style, label=mode.split(", ")[1])
        ax.axhline(res.ceiling().rps, color="k", lw=1, label="direct, batched (ceiling)")
        ax.axhline(0.9 * res.ceiling().rps, color="k", lw=0.8, ls=":", label="90 % of the ceiling")
        ax.axhline(res.direct_one()[0], color="grey", lw=1, ls="-.", label="direct, batch 1")
        ax.set_xscale("log", base=2)
        ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        ax.set_ylim(bottom=0)
        ax.set_title(res.served.name)
        ax.set_xlabel("clients")
        ax.set_ylabel("requests / s")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def sweep(m: Served, queries: list[bytes], batching: bool, args: argparse.Namespace) -> tuple[list[Row], str]:
    port = free_port()
    proc, plan = start_server(m.model, m.gallery, port, batching, args.max_batch, args.server_arg)
    requests = [search_request(port, q, raw=args.raw) for q in queries]
    rows = []
    try:
        for c in args.concurrency:
            row = asyncio.run(load(port, requests, c, args.seconds, args.max_requests, proc.pid))
            row.mode = MICRO if batching else UNBATCHED
            rows.append(row)
            print(m.name, row, flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    return rows, plan


def measure(m: Served, args: argparse.Namespace) -> Result:
    queries = crops(64, seed=2, height=m.height, width=m.width)
    rows: list[Row] = []

    def baseline(batch: int, lanes: int = 1, onnx_threads: int = 2) -> None:
        rows.append(direct(m.model, m.gallery, queries, batch, args.seconds, lanes, onnx_threads))
        print(m.name, rows[-1], flush=True)

    # Direct, server, direct, server, direct: drift of the shared machine shows as spread.
    baseline(1)
    baseline(args.max_batch)
    baseline(args.max_batch, lanes=2)
    baseline(args.max_batch, lanes=2, onnx_threads=1)
    batched, micro_plan = sweep(m, queries, True, args)
    rows += batched
    baseline(1)
    alone, alone_plan = sweep(m, queries, False, args)
    rows += alone
    baseline(1)
    return Result(m, rows, {MICRO: micro_plan, UNBATCHED: alone_plan})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--gallery-size", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=6.0, help="per concurrency level")
    p.add_argument("--max-requests", type=int, default=3000, help="per concurrency level")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra reid-serve flag for the micro-batching server (repeat: --server-arg=--embed-lanes --server-arg=1)")
    p.add_argument("--only-server", action="store_true",
                   help="quick comparison: only the micro-batching sweep, printed, no report written")
    p.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)), help="clients per level")
    p.add_argument("--raw", action="store_true", help="send the JPEG as the body instead of multipart")
    p.add_argument("--work", type=Path, help="keep models and galleries here between runs (default: a temp folder)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    args.load_before = os.getloadavg()[0]
    args.concurrency = tuple(int(c) for c in args.concurrency.split(","))
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = set(names) - set(MODELS)
    if unknown:
        p.error(f"unknown model(s) {sorted(unknown)}; choose from {', '.join(MODELS)}")

    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve_load_")))
        work.mkdir(parents=True, exist_ok=True)
        served = prepare(names, work, args.gallery_size)
        if args.only_server:
            for m in served:
                sweep(m, crops(64, seed=2, height=m.height, width=m.width), True, args)
            return 0
        if set(args.concurrency) != set(CONCURRENCY):
            p.error(f"the report needs every level of {CONCURRENCY}; other levels only with --only-server")
        results = [measure(m, args) for m in served]
    plot = args.out.with_suffix(".png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_throughput(results, plot)
    text = report(results, args, plot.name)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out} and {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
