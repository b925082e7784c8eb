"""The same vectors in the FAISS folder gallery and in a Milvus Lite file: add rate, queries/s
at batch 1, recall@10 against exact search, filtered search and identity ranking.

Vectors are clustered like ReID embeddings: ``N / 50`` identity centres drawn from N(0, 1), each
vector a centre plus N(0, 0.5^2) noise, float32; 8 cameras, timestamps = row number. Queries are
fresh draws around random centres. Both galleries use an exact index (FAISS flat, Milvus FLAT),
so recall@10 measures agreement with numpy brute force (ties aside), and the speeds compare the
backends' overheads rather than index types (see benchmarks/results/index_search.md for those).

    python benchmarks/gallery_backends.py                 # writes results/gallery_backends.md
    python benchmarks/gallery_backends.py --n 20000 --no-write
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from index.address import MilvusAddress
from index.gallery import Gallery
from index.milvus_gallery import MilvusGallery
from index.protocol import GalleryBackend
from index.records import ItemRecord

RESULTS = Path(__file__).resolve().parent / "results" / "gallery_backends.md"
CAMERAS = 8


def make_data(n: int, dim: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xb (n, dim), pids (n,), xq (n_queries, dim)), float32 vectors around n/50 centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), dim)).astype(np.float32)
    pids = rng.integers(0, len(centres), n)
    xb = centres[pids] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    xq = centres[rng.integers(0, len(centres), n_queries)] + 0.5 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    return xb.astype(np.float32), pids, xq.astype(np.float32)


def exact_top(xq: np.ndarray, xb: np.ndarray, k: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Row numbers of the exact k nearest (float64), restricted to ``keep`` rows if given."""
    rows = np.arange(len(xb)) if keep is None else np.flatnonzero(keep)
    sub = xb[rows].astype(np.float64)
    d = (xq.astype(np.float64) ** 2).sum(1)[:, None] - 2 * xq.astype(np.float64) @ sub.T + (sub ** 2).sum(1)[None]
    return rows[np.argsort(d, axis=1, kind="stable")[:, :k]]


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Calls per second of ``fn`` over ``repeats`` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return repeats / (time.perf_counter() - start)


def measure(name: str, gallery: GalleryBackend, xb: np.ndarray, pids: np.ndarray, xq: np.ndarray,
            batch: int) -> dict[str, object]:
    records = [ItemRecord(pid=int(p), camera=1 + i % CAMERAS, timestamp=float(i)) for i, p in enumerate(pids)]
    start = time.perf_counter()
    row_of: dict[int, int] = {}
    for lo in range(0, len(xb), batch):
        ids = gallery.add(xb[lo:lo + batch], records[lo:lo + batch])
        row_of.update(zip(ids.tolist(), range(lo, lo + len(ids)), strict=True))
    add_rate = len(xb) / (time.perf_counter() - start)
    k = 10

    def recall(got_ids: np.ndarray, want_rows: np.ndarray) -> float:
        got_rows = [{row_of.get(int(i), -1) for i in row if i >= 0} for row in got_ids]
        return float(np.mean([len(g & set(w.tolist())) / k for g, w in zip(got_rows, want_rows, strict=True)]))

    it = iter(range(10**9))
    qps = timed(lambda: gallery.search(xq[next(it) % len(xq)][None], k), len(xq))
    got = np.concatenate([gallery.nearest(xq[i:i + 1], k).I for i in range(len(xq))])
    r10 = recall(got, exact_top(xq, xb, k))

    cams = [1, 2]
    keep = np.isin(1 + np.arange(len(xb)) % CAMERAS, cams) & (np.arange(len(xb)) >= len(xb) // 4)
    it = iter(range(10**9))
    filt = dict(cameras=cams, time_range=(float(len(xb) // 4), None))
    fqps = timed(lambda: gallery.search(xq[next(it) % len(xq)][None], k, **filt), len(xq))
    fgot = np.concatenate([gallery.nearest(xq[i:i + 1], k, **filt).I for i in range(len(xq))])
    fr10 = recall(fgot, exact_top(xq, xb, k, keep))

    it = iter(range(10**9))
    iqps = timed(lambda: gallery.search_identities(xq[next(it) % len(xq)][None], 5, items_per_identity=3), len(xq))
    people = [[m.pid for m in gallery.search_identities(xq[i:i + 1], 5, items_per_identity=3)[0]] for i in range(len(xq))]
    return {"name": name, "add": add_rate, "qps": qps, "recall": r10, "fqps": fqps, "frecall": fr10,
            "iqps": iqps, "people": people}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000, help="vectors per add")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    xb, pids, xq = make_data(args.n, args.dim, args.queries)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gallery-backends-") as tmp:
        with Gallery.create(Path(tmp) / "folder", args.dim, "bench", checkpoint_every=None) as g:
            rows.append(measure("FAISS folder (flat)", g, xb, pids, xq, args.batch))
        address = MilvusAddress(uri=str(Path(tmp) / "gallery.db"), collection="gallery", lite=True)
        with MilvusGallery.create(address, args.dim, "bench") as g:
            rows.append(measure("Milvus Lite file (FLAT)", g, xb, pids, xq, args.batch))
    same = np.mean([a == b for a, b in zip(rows[0]["people"], rows[1]["people"], strict=True)])
    import pymilvus

    lines = [
        "# Gallery backends: FAISS folder and Milvus Lite",
        "",
        f"`python benchmarks/gallery_backends.py --n {args.n} --dim {args.dim} --queries {args.queries} "
        f"--batch {args.batch}`: {args.n} clustered {args.dim}-d vectors (N/50 identities, 8 cameras), "
        f"{args.queries} queries, k = 10, exact index in both. Machine: {platform.machine()}, "
        f"Python {platform.python_version()}, pymilvus {pymilvus.__version__}; **the machine was shared with "
        "other jobs (2 cores)**, so speeds are indicative and vary between runs.",
        "",
        "| backend | add (vectors/s) | search q/s, batch 1 | recall@10 | filtered q/s | filtered recall@10 "
        "| identities q/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['add']:,.0f} | {r['qps']:.1f} | {r['recall']:.4f} | {r['fqps']:.1f} | "
                     f"{r['frecall']:.4f} | {r['iqps']:.1f} |")
    lines += [
        "",
        "Filtered: cameras 1 and 2 (a quarter of the items) and timestamps in the last three quarters. "
        "Identities: the 5 best identities with 3 items each (`search_identities`); the two backends "
        f"rank the same 5 identities in the same order for {100 * same:.1f}% of the queries.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)
        print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
