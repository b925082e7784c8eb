"""Search speed and recall of the gallery's FAISS index types at 100k and 1M 2048-d vectors.

Vectors are clustered like ReID embeddings (identities): ``N / 50`` centres drawn from
N(0, 1) and each vector a centre plus N(0, 0.5^2) noise, float32; queries are fresh draws
around random centres. They are generated in seeded chunks and fed to FAISS directly (the
same index classes and parameters :mod:`index.faiss_index` builds), so memory holds one
index plus one chunk: the chunks are generated again for each index type.

For each size and type: training time, add time, queries/s at batch 1 and batch 64, and
recall@10 against the exact (flat) results of the same queries. Anything that does not fit
the memory available (``MemAvailable``) or the time budget is reported as skipped.

    python benchmarks/index_search.py                    # writes results/index_search.md
    python benchmarks/index_search.py --sizes 20000 --no-write
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from index.faiss_index import train_ivf
from index.manifest import IndexSpec

RESULTS = Path(__file__).resolve().parent / "results" / "index_search.md"
DIM = 2048
PER_CLUSTER = 50
NOISE = 0.5
CHUNK = 50_000
K = 10
N_QUERIES = 64 * 3  # batch-64 timing and recall use all of them
N_SINGLE = 20  # batch-1 timing
NLIST, NPROBE, PQ_M = 1024, 32, 64
TRAIN_SIZE = 39 * NLIST  # the gallery's own minimum: 39 points per centroid


@dataclass
class Row:
    size: int
    kind: str
    train_s: float | None = None
    add_s: float | None = None
    qps1: float | None = None
    qps64: float | None = None
    recall: float | None = None
    memory_gb: float | None = None
    note: str = ""


def centres(n: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    return rng.standard_normal((max(1, n // PER_CLUSTER), DIM), dtype=np.float32)


def chunks(n: int, c: np.ndarray) -> Iterator[np.ndarray]:
    """The n database vectors, CHUNK rows at a time, identical on every call."""
    for start in range(0, n, CHUNK):
        rng = np.random.default_rng(start)
        rows = min(CHUNK, n - start)
        x = rng.standard_normal((rows, DIM), dtype=np.float32)
        x *= NOISE
        x += c[rng.integers(0, len(c), rows)]
        yield x


def queries(c: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(999)
    return (c[rng.integers(0, len(c), N_QUERIES)]
            + NOISE * rng.standard_normal((N_QUERIES, DIM), dtype=np.float32)).astype(np.float32)


def sample(n: int, c: np.ndarray, size: int) -> np.ndarray:
    """A training sample: the first vectors of the stream (they are in random cluster order)."""
    out, have = [], 0
    for x in chunks(n, c):
        out.append(x[: size - have])
        have += out[-1].shape[0]
        if have >= size:
            break
    return np.concatenate(out)


def mem_available_gb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def time_search(index: faiss.Index, xq: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(queries/s at batch 1, queries/s at batch 64, ids of all queries at batch 64)."""
    index.search(xq[:1], K)  # warm-up
    start = time.perf_counter()
    done = 0
    while done < N_SINGLE and (done < 3 or time.perf_counter() - start < 10):  # slow flat: fewer
        index.search(xq[done:done + 1], K)
        done += 1
    qps1 = done / (time.perf_counter() - start)
    ids = []
    start = time.perf_counter()
    for i in range(0, len(xq), 64):
        ids.append(index.search(xq[i:i + 64], K)[1])
    qps64 = len(xq) / (time.perf_counter() - start)
    return qps1, qps64, np.concatenate(ids)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)]))


def run_size(n: int, deadline: float) -> list[Row]:
    c = centres(n)
    xq = queries(c)
    rows = [Row(n, kind) for kind in ("flat", "ivf_flat", "ivf_pq")]
    flat, ivf_flat, ivf_pq = rows
    if not fits(flat, n * DIM * 4, deadline):
        return rows
    index = faiss.IndexFlatL2(DIM)
    flat.train_s = 0.0
    add_timed(flat, index, chunks(n, c), None)
    exact = search_row(flat, index, xq, n * DIM * 4, None)
    del index

    if not fits(ivf_flat, n * DIM * 4, deadline):
        return rows
    start = time.perf_counter()
    index = train_ivf(IndexSpec(index_type="ivf_flat", nlist=NLIST, nprobe=NPROBE), DIM, sample(n, c, TRAIN_SIZE))
    ivf_flat.train_s = time.perf_counter() - start
    # The coarse assignment (the costly part of an IVF add) is computed once and shared with
    # IVF-PQ, which reuses this trained quantizer; its time is counted in both add columns.
    quantizer = faiss.clone_index(index.quantizer)
    start = time.perf_counter()
    assign = [quantizer.assign(x, 1).ravel() for x in chunks(n, c)]
    assign_s = time.perf_counter() - start - generation_seconds(n, c)
    add_timed(ivf_flat, index, chunks(n, c), assign)
    ivf_flat.add_s += assign_s
    search_row(ivf_flat, index, xq, n * DIM * 4, exact)
    del index

    if not fits(ivf_pq, n * PQ_M, deadline):
        return rows
    start = time.perf_counter()
    index = faiss.IndexIVFPQ(quantizer, DIM, NLIST, PQ_M, 8)
    index.own_fields = True
    quantizer.this.disown()
    index.train(sample(n, c, TRAIN_SIZE))  # the quantizer is trained: only the PQ codebooks
    index.nprobe = NPROBE
    ivf_pq.train_s = time.perf_counter() - start + ivf_flat.train_s
    add_timed(ivf_pq, index, chunks(n, c), assign)
    ivf_pq.add_s += assign_s
    search_row(ivf_pq, index, xq, n * PQ_M, exact)
    return rows


_GENERATION: dict[int, float] = {}


def generation_seconds(n: int, c: np.ndarray) -> float:
    """Time to generate the n vectors once (subtracted from the assignment time)."""
    if n not in _GENERATION:
        start = time.perf_counter()
        for _ in chunks(n, c):
            pass
        _GENERATION[n] = time.perf_counter() - start
    return _GENERATION[n]


def fits(row: Row, index_bytes: int, deadline: float) -> bool:
    need = index_bytes / 2**30 + 1.0
    if need > mem_available_gb() - 2:
        row.note = f"skipped: needs ~{need:.1f} GB, {mem_available_gb():.1f} GB available"
        return False
    if time.monotonic() > deadline:
        row.note = "skipped: time budget spent"
        return False
    return True


def add_timed(row: Row, index: faiss.Index, data: Iterator[np.ndarray], assign: list[np.ndarray] | None) -> None:
    """Add every chunk, timing only FAISS (not the generation of the vectors)."""
    row.add_s = 0.0
    for i, x in enumerate(data):
        start = time.perf_counter()
        if assign is None:
            index.add(x)
        else:
            idx = np.ascontiguousarray(assign[i], dtype=np.int64)
            index.add_core(x.shape[0], faiss.swig_ptr(x), None, faiss.swig_ptr(idx))
        row.add_s += time.perf_counter() - start


def search_row(row: Row, index: faiss.Index, xq: np.ndarray, index_bytes: int,
               exact: np.ndarray | None) -> np.ndarray:
    row.memory_gb = index_bytes / 2**30
    row.qps1, row.qps64, found = time_search(index, xq)
    row.recall = 1.0 if exact is None else recall_at_k(found, exact)
    print(row, flush=True)
    return found


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(rows: list[Row], threads: int, seconds: float) -> str:
    lines = [
        "# Gallery index types: search speed and recall",
        "",
        f"Run: `python benchmarks/index_search.py` on {platform.machine()}, {threads} FAISS threads, "
        f"faiss {faiss.__version__}, shared machine; {seconds:.0f} s in all.",
        f"Data: {DIM}-d float32, N/{PER_CLUSTER} cluster centres ~ N(0, 1), vectors = centre + N(0, {NOISE}²); "
        f"{N_QUERIES} queries drawn the same way; k = {K}. IVF: nlist {NLIST}, nprobe {NPROBE}, trained on "
        f"{TRAIN_SIZE} vectors (39 per list); IVF-PQ m {PQ_M}, 8 bits. FAISS fed directly "
        "(IndexFlatL2 / the gallery's train_ivf), no ids or metadata. IVF-PQ reuses the IVF-Flat coarse "
        "quantizer and its assignment of the vectors (computed once, counted in both add times; "
        "IVF-PQ's train time includes the coarse training).",
        "",
        "| N | index | train s | add s | q/s batch 1 | q/s batch 64 | recall@10 | vectors in RAM | note |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(f"| {r.size:,} | {r.kind} | {fmt(r.train_s, '.1f')} | {fmt(r.add_s, '.1f')} | "
                     f"{fmt(r.qps1, '.1f')} | {fmt(r.qps64, '.1f')} | {fmt(r.recall, '.3f')} | "
                     f"{fmt(r.memory_gb, '.2f')} GB | {r.note} |")
    lines += [
        "",
        "recall@10 = share of the exact top 10 found in the index's top 10 (flat is the reference). "
        "Train and add times exclude generating the vectors.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads (default: 2)")
    parser.add_argument("--budget", type=float, default=540, help="seconds before remaining types are skipped")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    deadline = time.monotonic() + args.budget
    started = time.perf_counter()
    rows: list[Row] = []
    for n in args.sizes:
        rows += run_size(n, deadline)
        text = render(rows, args.threads, time.perf_counter() - started)
        if not args.no_write:  # after each size, so a run cut short keeps what it measured
            RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
