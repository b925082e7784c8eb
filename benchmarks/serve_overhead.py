"""What reid-serve spends per request around the model and the gallery, in CPU time.

Five measurements, each printed as a table:

1. ``app``: the ASGI app driven in-process (no socket, no uvicorn) with the service's search
   replaced by one precomputed answer, so what is timed is everything around the search:
   middleware, routing, parameter validation, multipart parsing, the answer's JSON and the
   audit line. Multipart and raw-body requests, ``--requests`` each, CPU time of this process.
2. ``loop``: ``reid-serve`` in a subprocess under ``--clients`` keep-alive clients (the load
   generator of ``serve_load.py``), reading from /proc the CPU of its event-loop thread (the
   main thread) and of the whole process per request, ``--repeats`` windows of ``--seconds``.
   The loop thread does the HTTP protocol, the app and the hand-overs to the decode, embed and
   search threads; the whole process adds the model, the decoding and the gallery search.
3. ``lone``: one client, one query at a time (``--requests`` of them, the first 20 dropped): the
   median round trip against the stages the server reports in the answer's ``timings``; the
   difference is the HTTP round trip outside the service (both ends' protocol work and the
   app), which a direct in-process call does not pay.
4. ``lanes``: the model's CPU per image on a one-thread session (what an embedding lane runs
   under load) at batch sizes 1 to 32: how much deeper batches save.
5. ``protocol``: uvicorn's own cost, serving :func:`floor_app` (reads the upload, answers a
   fixed search-sized JSON) under ``--clients`` clients, with each HTTP implementation
   installed (h11, pure Python; httptools, C): process CPU per request, ``--repeats`` windows.

    python benchmarks/serve_overhead.py --work /tmp/sl      # reuses serve_load's small model

CPU time per request is less sensitive than throughput to other jobs on a shared machine, but
not immune (a slower core spends more of it): compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from serve_load import (  # noqa: E402  (benchmarks/ is on sys.path)
    API_KEY,
    Connection,
    crops,
    free_port,
    load,
    prepare,
    process_cpu_s,
    search_request,
    start_server,
)


def _scope(request: bytes) -> tuple[dict, bytes]:
    """An ASGI HTTP scope and body from a complete HTTP/1.1 request as serve_load sends it."""
    head, _, body = request.partition(b"\r\n\r\n")
    first, *header_lines = head.split(b"\r\n")
    path, _, query = first.split(b" ")[1].partition(b"?")
    headers = [(name.strip().lower(), value.strip()) for name, value in (h.split(b":", 1) for h in header_lines)]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path.decode(), "raw_path": path, "query_string": query,
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8000)}
    return scope, body


def measure_app(model: Path, gallery: Path, height: int, width: int, requests: int) -> list[tuple[str, float]]:
    """CPU ms per request of the ASGI app around a stubbed search, multipart and raw body."""
    from server.app import create_app
    from server.metrics import Metrics
    from server.service import SearchQuery, SearchService, Upload
    from server.settings import Settings

    settings = Settings(model=model, gallery=gallery, api_key=API_KEY)
    service = SearchService.open(settings, Metrics())
    app = create_app(settings, service)
    jpeg = crops(1, seed=2, height=height, width=width)[0]
    out = []

    async def run() -> None:
        async with app.router.lifespan_context(app):
            answer = await service.search(Upload(jpeg, "query"), SearchQuery(k=10, k_identities=5, items_per_identity=3))

            async def stubbed(upload: object, query: object) -> object:
                return answer

            service.search = stubbed  # type: ignore[method-assign]
            for kind, raw in (("multipart", False), ("raw body", True)):
                scope, body = _scope(search_request(8000, jpeg, raw=raw))

                async def one() -> None:
                    sent: list[dict] = []
                    delivered = False

                    async def receive() -> dict:
                        nonlocal delivered
                        if delivered:  # the app only asks again to watch for a disconnect
                            await asyncio.sleep(3600)
                        delivered = True
                        return {"type": "http.request", "body": body, "more_body": False}

                    async def send(message: dict) -> None:
                        sent.append(message)

                    await app({**scope, "state": {}}, receive, send)
                    if sent[0]["status"] != 200:
                        raise RuntimeError(f"/search answered {sent[0]['status']}: {sent[1:]!r}")

                for _ in range(min(200, requests)):  # warm-up
                    await one()
                cpu0 = time.process_time()
                for _ in range(requests):
                    await one()
                out.append((kind, 1000.0 * (time.process_time() - cpu0) / requests))

    asyncio.run(run())
    return out


def measure_loop(model: Path, gallery: Path, height: int, width: int, clients: int, seconds: float,
                 repeats: int, extra: list[str]) -> list[tuple[float, float, float, float]]:
    """(loop-thread CPU ms, process CPU ms, req/s, mean batch) per window under ``clients``."""
    port = free_port()
    proc, _ = start_server(model, gallery, port, True, 16, extra)
    requests = [search_request(port, q) for q in crops(64, seed=2, height=height, width=width)]
    rows = []
    try:
        asyncio.run(load(port, requests, clients, 2.0, 10**6, proc.pid))  # warm-up
        for _ in range(repeats):
            loop0, proc0 = process_cpu_s(proc.pid, thread=proc.pid), process_cpu_s(proc.pid)
            row = asyncio.run(load(port, requests, clients, seconds, 10**6, proc.pid))
            loop1, proc1 = process_cpu_s(proc.pid, thread=proc.pid), process_cpu_s(proc.pid)
            rows.append((1000.0 * (loop1 - loop0) / row.requests, 1000.0 * (proc1 - proc0) / row.requests,
                         row.rps, row.batch))
    finally:
        proc.terminate()
        proc.wait(30)
    return rows


def measure_lone(model: Path, gallery: Path, height: int, width: int, requests: int,
                 extra: list[str]) -> dict[str, float]:
    """Median ms of a lone query: the client's round trip, the service's stages, and the rest."""
    port = free_port()
    proc, _ = start_server(model, gallery, port, True, 16, extra)
    queries = [search_request(port, q) for q in crops(64, seed=2, height=height, width=width)]
    rows: list[dict[str, float]] = []

    async def run() -> None:
        conn = await Connection.open(port)
        try:
            for i in range(requests + 20):
                start = time.perf_counter()
                status, body = await conn.send(queries[i % len(queries)])
                wall = 1000.0 * (time.perf_counter() - start)
                if status != 200:
                    raise RuntimeError(f"/search answered {status}: {body[:200]!r}")
                if i >= 20:
                    t = json.loads(body)["timings"]
                    rows.append({"round trip": wall, "decode": t["decode_ms"], "embed": t["embed_ms"],
                                 "search": t["search_ms"], "service total": t["total_ms"],
                                 "outside the service": wall - t["total_ms"]})
        finally:
            conn.close()

    try:
        asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(30)
    return {name: statistics.median(r[name] for r in rows) for name in rows[0]}


def measure_lanes(model: Path, height: int, width: int) -> list[tuple[int, float]]:
    """(batch, CPU ms per image) of ``model`` on a one-thread session, as a lane runs it."""
    import numpy as np

    from export.runtime import Embedder

    embedder = Embedder(model, intra_op_threads=1, spin=False, report=False)
    rng = np.random.default_rng(0)
    out = []
    for batch in (1, 2, 3, 4, 6, 8, 16, 32):
        x = rng.random((batch, 3, height, width), dtype=np.float32)
        embedder.embed_arrays(x)
        runs = max(3, 128 // batch)
        cpu0 = time.process_time()
        for _ in range(runs):
            embedder.embed_arrays(x)
        out.append((batch, 1000.0 * (time.process_time() - cpu0) / (runs * batch)))
    return out


#: What floor_app answers: the size and shape of a search's answer (25 items, batch size 1).
_FLOOR_ANSWER = json.dumps({
    "timings": {"batch_size": 1},
    "matches": [{"id": i, "pid": i, "camera": 1, "distance": 0.5, "path": f"c1/{i}.jpg"} for i in range(25)],
}).encode()


async def floor_app(scope: dict, receive: Callable, send: Callable) -> None:
    """The least an ASGI app can do for a search: read the body, send a fixed answer."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(_FLOOR_ANSWER)).encode())]})
    await send({"type": "http.response.body", "body": _FLOOR_ANSWER})


def measure_protocol(height: int, width: int, clients: int, seconds: float, repeats: int) -> list[tuple[str, float, float]]:
    """(HTTP implementation, process CPU ms per request, req/s) of uvicorn serving floor_app."""
    import importlib.util

    jpeg = crops(1, seed=2, height=height, width=width)[0]
    rows = []
    for http in ("h11", "httptools"):
        if importlib.util.find_spec(http) is None:
            print(f"({http} is not installed: skipped)")
            continue
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serve_overhead:floor_app", "--app-dir", str(Path(__file__).parent),
             "--http", http, "--port", str(port), "--log-level", "warning", "--no-access-log"])
        try:
            _wait_for(port, proc)
            requests = [search_request(port, jpeg)]
            asyncio.run(load(port, requests, clients, 1.0, 10**6, proc.pid))  # warm-up
            for _ in range(repeats):
                cpu0 = process_cpu_s(proc.pid)
                row = asyncio.run(load(port, requests, clients, seconds, 10**6, proc.pid))
                rows.append((http, 1000.0 * (process_cpu_s(proc.pid) - cpu0) / row.requests, row.rps))
        finally:
            proc.terminate()
            proc.wait(30)
    return rows


def _wait_for(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("uvicorn did not listen in 30 s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, help="models and galleries (serve_load.py's --work; default: a temp folder)")
    p.add_argument("--model", default="small", choices=("small", "r50", "r50-int8"))
    p.add_argument("--requests", type=int, default=2000, help="app: requests per body kind; lone: queries")
    p.add_argument("--clients", type=int, default=8, help="loop: keep-alive clients")
    p.add_argument("--seconds", type=float, default=5.0, help="loop: seconds per window")
    p.add_argument("--repeats", type=int, default=3, help="loop: windows")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG", help="extra reid-serve flag (loop)")
    p.add_argument("--only", choices=("app", "loop", "lone", "lanes", "protocol"),
                   help="run one of the five measurements")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serve_overhead_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        m = prepare([args.model], work, 2000)[0]
        print(f"{m.name}: {m.note}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        if args.only in (None, "app"):
            print(f"\n| request ({args.requests} each, search stubbed) | CPU ms per request |\n| --- | ---: |")
            for kind, ms in measure_app(m.model, m.gallery, m.height, m.width, args.requests):
                print(f"| {kind} | {ms:.3f} |")
        if args.only in (None, "loop"):
            rows = measure_loop(m.model, m.gallery, m.height, m.width, args.clients, args.seconds,
                                args.repeats, args.server_arg)
            print(f"\n| window ({args.clients} clients, {args.seconds:g} s) | loop thread CPU ms/req | "
                  "process CPU ms/req | req/s | mean batch |\n| --- | ---: | ---: | ---: | ---: |")
            for i, (loop_ms, proc_ms, rps, batch) in enumerate(rows, 1):
                print(f"| {i} | {loop_ms:.2f} | {proc_ms:.2f} | {rps:.1f} | {batch:.1f} |")
            print(f"| median | {statistics.median(r[0] for r in rows):.2f} | "
                  f"{statistics.median(r[1] for r in rows):.2f} | {statistics.median(r[2] for r in rows):.1f} | - |")
        if args.only in (None, "lone"):
            lone = measure_lone(m.model, m.gallery, m.height, m.width, min(args.requests, 500), args.server_arg)
            print("\n| lone query (median) | ms |\n| --- | ---: |")
            for name, ms in lone.items():
                print(f"| {name} | {ms:.2f} |")
        if args.only in (None, "lanes"):
            print("\n| batch (one-thread session) | CPU ms per image |\n| ---: | ---: |")
            for batch, ms in measure_lanes(m.model, m.height, m.width):
                print(f"| {batch} | {ms:.2f} |")
        if args.only in (None, "protocol"):
            print(f"\n| uvicorn HTTP ({args.clients} clients, {args.seconds:g} s windows) | process CPU ms/req | "
                  "req/s |\n| --- | ---: | ---: |")
            for http, ms, rps in measure_protocol(m.height, m.width, args.clients, args.seconds, args.repeats):
                print(f"| {http} | {ms:.3f} | {rps:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
