"""Search speed, recall and memory of the gallery's FAISS layouts at 100k-1M vectors.

Two data sets, generated in seeded chunks so memory holds one index plus one chunk:

* ``clusters``: 2048-d, ``N / 50`` centres drawn from N(0, 1), each vector a centre plus
  N(0, 0.5^2) noise; queries are fresh draws around random centres.
* ``embeddings``: real embeddings of generated crops (``--embeddings FILE.npz`` with arrays
  ``x`` (n, d) float32 and ``pids`` (n,), made by ``--embed MODEL.onnx CROPS...``), expanded to
  N by per-identity jitter: a new identity is a real one moved along the difference of two
  other real identities' means, and its members are that centre plus the residuals of the
  real identity's own crops (its spread, in its own directions) plus 10 % isotropic noise.
  Queries are held-out members of the same identities.

Every layout is fed to FAISS directly (the classes and parameters :mod:`index.faiss_index`
builds, searched through :func:`index.faiss_index.search`, so with the gallery's scan budget)
and the approximate ones are re-ranked with :func:`index.search.exact_rerank` from the float
vectors in a memory-mapped file on disk, as the gallery re-ranks from SQLite. For each row:
queries/s at batch 1 and 64 (and as a multiple of the exact index's, same run), recall@10
against exact, and resident bytes per vector (codes + ids + coarse centroids, not the vectors
on disk). Anything that does not fit ``MemAvailable`` or the time budget is reported skipped.

    python benchmarks/index_search.py                       # writes results/index_search.md + .png
    python benchmarks/index_search.py --sizes 20000 --data clusters --no-write
    python benchmarks/index_search.py --embed model.onnx data/synth/market --embeddings emb.npz
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from index import faiss_index
from index.manifest import IndexSpec
from index.search import RERANK, exact_rerank
from index.store import VectorBatch
from plotting import pyplot  # noqa: E402  (benchmarks/ is on sys.path)

RESULTS = Path(__file__).resolve().parent / "results" / "index_search.md"
DIM = 2048
PER_CLUSTER = 50
NOISE = 0.5
CHUNK = 50_000
K = 10
N_QUERIES = 64 * 3  # batch-64 timing and recall use all of them
N_SINGLE = 40  # batch-1 timing
PQ_M = 64
NPROBES = (16, 32, 64)  # the IVF-Flat and re-ranked IVF-SQ8 rows; --nprobes changes them
ID_BYTES = 8  # every FAISS layout of the gallery stores an int64 id per vector


@dataclass
class Row:
    data: str
    size: int
    kind: str
    params: str = ""
    train_s: float | None = None
    add_s: float | None = None
    qps1: float | None = None
    qps64: float | None = None
    recall: float | None = None
    bytes_per_vector: float | None = None
    x1: float | None = None
    x64: float | None = None
    note: str = ""


# -- data ------------------------------------------------------------------------------------


@dataclass
class DataSet:
    """``chunks()`` yields the n database vectors CHUNK rows at a time, identically each call;
    ``queries`` (N_QUERIES, d) float32."""

    name: str
    n: int
    dim: int
    chunks: Callable[[], Iterator[np.ndarray]]
    queries: np.ndarray
    description: str = ""
    identities: Identities | None = None  # how the rows were drawn, for identity-structured sets


def clusters(n: int) -> DataSet:
    c = np.random.default_rng(12345).standard_normal((max(1, n // PER_CLUSTER), DIM), dtype=np.float32)

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, n, CHUNK):
            rng = np.random.default_rng(start)
            rows = min(CHUNK, n - start)
            x = rng.standard_normal((rows, DIM), dtype=np.float32)
            x *= NOISE
            x += c[rng.integers(0, len(c), rows)]
            yield x

    rng = np.random.default_rng(999)
    xq = (c[rng.integers(0, len(c), N_QUERIES)]
          + NOISE * rng.standard_normal((N_QUERIES, DIM), dtype=np.float32)).astype(np.float32)
    return DataSet("clusters", n, DIM, chunks, xq,
                   f"{DIM}-d, N/{PER_CLUSTER} centres ~ N(0, 1), vectors = centre + N(0, {NOISE}²)")


@dataclass(frozen=True)
class Identities:
    """Identity-structured vectors: ``n_ids`` identities of ``per_id`` members each.
    ``draw(rng, identity)`` returns one fresh member (dim,) float32 per entry of ``identity``
    (an int array of identity numbers), a new draw on every call."""

    n_ids: int
    per_id: int
    dim: int
    draw: Callable[[np.random.Generator, np.ndarray], np.ndarray]

    def of_rows(self, rows: np.ndarray) -> np.ndarray:
        """The identity of each database row: members of one identity are consecutive rows."""
        return (rows // self.per_id) % self.n_ids


def expand_identities(x: np.ndarray, pids: np.ndarray, n: int) -> Identities:
    """Expand a seed set (``x`` (m, d) float32 labelled by ``pids`` (m,)) to about ``n`` vectors.

    A new identity is a seed identity moved along the difference of two other seed identities'
    means; its members are that centre plus the residuals of the seed identity's own members
    (its spread, in its own directions) plus 10 % isotropic noise. Seeded: the same inputs
    give the same identities."""
    ids, inverse = np.unique(pids, return_inverse=True)
    means = np.stack([x[inverse == i].mean(0) for i in range(len(ids))]).astype(np.float32)
    residuals = x - means[inverse]
    members = [np.flatnonzero(inverse == i) for i in range(len(ids))]
    noise = 0.1 * float(residuals.std())
    per_id = max(2, round(len(x) / len(ids)))
    n_ids = max(len(ids), n // per_id)
    rng = np.random.default_rng(7)
    base = rng.integers(0, len(ids), n_ids)
    a, b = rng.integers(0, len(ids), (2, n_ids))
    shift = rng.uniform(0.3, 0.7, (n_ids, 1)).astype(np.float32)
    centres = means[base] + shift * (means[a] - means[b])
    centres[: len(ids)] = means  # the seed identities themselves come first

    def draw(rng: np.random.Generator, identity: np.ndarray) -> np.ndarray:
        src = np.array([members[base[i]][rng.integers(0, len(members[base[i]]))] for i in identity])
        out = centres[identity] + residuals[src]
        out += noise * rng.standard_normal(out.shape, dtype=np.float32)
        return out.astype(np.float32)

    return Identities(n_ids, per_id, x.shape[1], draw)


def identity_set(name: str, n: int, identities: Identities, description: str) -> DataSet:
    """A :class:`DataSet` of ``n`` rows of ``identities`` (consecutive members, seeded per
    chunk) whose queries are fresh members of random identities."""

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, n, CHUNK):
            rows = np.arange(start, min(start + CHUNK, n))
            yield identities.draw(np.random.default_rng(start), identities.of_rows(rows))

    xq = identities.draw(np.random.default_rng(999), np.random.default_rng(998).integers(0, identities.n_ids, N_QUERIES))
    return DataSet(name, n, identities.dim, chunks, xq, description, identities)


def embeddings(n: int, path: Path) -> DataSet:
    data = np.load(path)
    x, pids = data["x"].astype(np.float32), data["pids"]
    identities = expand_identities(x, pids, n)
    return identity_set("embeddings", n, identities,
                        f"{x.shape[1]}-d embeddings of {len(x)} generated crops of {len(np.unique(pids))} "
                        f"identities ({path.name}), expanded to {identities.n_ids} identities of "
                        f"{identities.per_id}")


def embed_crops(model: Path, folders: list[Path], out: Path, seconds: float) -> None:
    """Embed the crops under ``folders`` with ``model`` for at most ``seconds``; save ``x`` and
    ``pids`` (from the file names, made distinct per folder: data sets number people from 1
    each) to ``out``."""
    from export.runtime import Embedder
    from training.core.datasets import parse_reid_name
    from training.core.errors import ReIDError

    labelled: list[tuple[Path, int]] = []
    for number, folder in enumerate(folders):
        for path in sorted(folder.rglob("*.jpg")):
            try:
                pid = parse_reid_name(path.name)[0]
            except ReIDError:
                continue  # not a crop name (e.g. a camera-style image)
            if pid > 0:  # 0 and -1 are distractors and junk
                labelled.append((path, number * 1_000_000 + pid))
    order = np.random.default_rng(0).permutation(len(labelled))  # a time cut keeps a fair sample
    labelled = [labelled[i] for i in order]
    embedder = Embedder(model)
    xs, pids, start = [], [], time.monotonic()
    for i in range(0, len(labelled), 64):
        batch = labelled[i:i + 64]
        xs.append(embedder.embed([p for p, _ in batch]))
        pids += [pid for _, pid in batch]
        if time.monotonic() - start > seconds:
            break
    np.savez(out, x=np.concatenate(xs).astype(np.float32), pids=np.array(pids))
    print(f"embedded {len(pids)} crops of {len(set(pids))} identities in {time.monotonic() - start:.0f} s -> {out}")


# -- measuring -------------------------------------------------------------------------------


def mem_available_gb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


Search = Callable[[np.ndarray], np.ndarray]  # queries (m, d) -> ids (m, K)


def time_search(search: Search, xq: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(queries/s at batch 1, queries/s at batch 64, ids of all queries at batch 64)."""
    search(xq[:1])  # warm-up
    start = time.perf_counter()
    done = 0
    while done < N_SINGLE and (done < 3 or time.perf_counter() - start < 10):  # slow flat: fewer
        search(xq[done:done + 1])
        done += 1
    qps1 = done / (time.perf_counter() - start)
    ids = []
    start = time.perf_counter()
    for i in range(0, len(xq), 64):
        ids.append(search(xq[i:i + 64]))
    qps64 = len(xq) / (time.perf_counter() - start)
    return qps1, qps64, np.concatenate(ids)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)]))


def ivf_bytes(index: faiss.Index) -> float:
    """Resident bytes per vector of an IVF index: codes, ids and the coarse centroids."""
    return index.code_size + ID_BYTES + index.nlist * index.d * 4 / max(1, index.ntotal)


@dataclass
class Bench:
    deadline: float
    rows: list[Row] = field(default_factory=list)

    def fits(self, row: Row, index_bytes: float) -> bool:
        need = index_bytes / 2**30 + 1.0
        if need > mem_available_gb() - 2:
            row.note = f"skipped: needs ~{need:.1f} GB, {mem_available_gb():.1f} GB available"
        elif time.monotonic() > self.deadline:
            row.note = "skipped: time budget spent"
        else:
            return True
        self.rows.append(row)
        print(row, flush=True)
        return False

    def measure(self, row: Row, search: Search, xq: np.ndarray, exact: np.ndarray | None,
                bytes_per_vector: float, reference: Row | None) -> np.ndarray:
        row.bytes_per_vector = bytes_per_vector
        row.qps1, row.qps64, found = time_search(search, xq)
        row.recall = 1.0 if exact is None else recall_at_k(found, exact)
        if reference is not None and reference.qps1:
            row.x1, row.x64 = row.qps1 / reference.qps1, row.qps64 / reference.qps64
        self.rows.append(row)
        print(row, flush=True)
        return found


LAYOUTS = {"ivf_flat": lambda d: d * 4, "ivf_sq8": lambda d: d, "ivf_pq": lambda d: PQ_M}


def run_size(bench: Bench, data: DataSet, workdir: Path, layouts: list[str],
             nprobes: tuple[int, ...] = NPROBES) -> None:
    n, d, xq = data.n, data.dim, data.queries
    nlist = faiss_index.auto_nlist(n)
    train_n = min(n, faiss_index.auto_train_size(0, nlist))  # what auto samples at this size
    flat = Row(data.name, n, "flat")
    if not bench.fits(flat, n * d * 4):
        return
    # The float vectors, on disk, for re-ranking shortlists (the gallery reads them from SQLite).
    vectors = np.lib.format.open_memmap(workdir / f"{data.name}-{n}.npy", "w+", np.float32, (n, d))
    index = faiss.IndexFlatL2(d)
    flat.train_s, flat.add_s = 0.0, 0.0
    row0 = 0
    for x in data.chunks():
        vectors[row0:row0 + len(x)] = x
        row0 += len(x)
        start = time.perf_counter()
        index.add(x)
        flat.add_s += time.perf_counter() - start
    vectors.flush()
    exact = bench.measure(flat, lambda q: index.search(q, K)[1], xq, None, d * 4 + ID_BYTES, None)
    del index
    all_ids = np.arange(n, dtype=np.int64)

    def lookup(ids: np.ndarray) -> VectorBatch:
        ids = np.unique(ids)
        return VectorBatch(ids=ids, xb=np.asarray(vectors[ids]))

    def chunks_of(start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        for s in range(start, n, CHUNK):
            yield s, np.asarray(vectors[s:s + CHUNK])

    # One coarse quantizer (auto's nlist for n) and one assignment, shared by every IVF layout.
    start = time.perf_counter()
    sample = np.asarray(vectors[np.sort(np.random.default_rng(0).choice(n, train_n, replace=False))])
    trained = faiss_index.train_ivf(IndexSpec(index_type="ivf_flat", nlist=nlist, nprobe=16), d, sample)
    coarse_s = time.perf_counter() - start
    start = time.perf_counter()
    assign = np.concatenate([trained.quantizer.assign(x, 1).ravel() for _, x in chunks_of()])
    assign_s = time.perf_counter() - start
    sizes = np.bincount(assign, minlength=nlist)
    imbalance = float((sizes.astype(float) ** 2).sum() * nlist / float(n) ** 2)
    balance = f"nlist {nlist}, imbalance {imbalance:.1f}, largest list {sizes.max()} (mean {n / nlist:.0f})"

    def fill(index: faiss.Index, row: Row) -> None:
        start = time.perf_counter()
        for s, x in chunks_of():
            a = np.ascontiguousarray(assign[s:s + len(x)])
            index.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(all_ids[s:s + len(x)]), faiss.swig_ptr(a))
        row.add_s = time.perf_counter() - start + assign_s

    def layout(kind: str, extra_train: Callable[[faiss.Index], None] | None = None) -> faiss.Index:
        q = faiss.clone_index(trained.quantizer)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(q, d, nlist)
        elif kind == "ivf_sq8":
            index = faiss.IndexIVFScalarQuantizer(q, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2, False)
        else:
            index = faiss.IndexIVFPQ(q, d, nlist, PQ_M, 8)
        index.own_fields = True
        q.this.disown()
        index.train(sample)  # the coarse quantizer is trained: only codebooks / ranges
        return index

    def budgeted(index: faiss.Index, nprobe: int, rerank: int) -> Search:
        def search(q: np.ndarray) -> np.ndarray:
            hits = faiss_index.search(index, q, rerank * K, None, nprobe)
            return (exact_rerank(hits, q, lookup, K) if rerank > 1 else hits).I[:, :K]
        return search

    for kind in layouts:
        rows = [Row(data.name, n, kind)]
        if not bench.fits(rows[0], n * (LAYOUTS[kind](d) + ID_BYTES)):
            return
        start = time.perf_counter()
        index = layout(kind)
        train_s = coarse_s + time.perf_counter() - start
        fill(index, rows[0])
        plans: list[tuple[str, Search]] = []
        if kind == "ivf_flat":
            plain = faiss.SearchParametersIVF(nprobe=32)
            plans.append(("nprobe 32, no scan budget (before)", lambda q: index.search(q, K, params=plain)[1]))
            plans += [(f"nprobe {p}", budgeted(index, p, 1)) for p in nprobes]
        elif kind == "ivf_sq8":
            plans.append(("nprobe 32, codes only", budgeted(index, 32, 1)))
            plans += [(f"nprobe {p}, re-rank {RERANK}k", budgeted(index, p, RERANK)) for p in nprobes]
        else:
            plans.append((f"m {PQ_M}, nprobe 32, codes only", budgeted(index, 32, 1)))
            plans += [(f"m {PQ_M}, nprobe 32, re-rank {r}k", budgeted(index, 32, r)) for r in (RERANK, 10)]
        for i, (params, search) in enumerate(plans):
            row = rows[0] if i == 0 else Row(data.name, n, kind)
            row.params, row.train_s = params, train_s
            row.add_s = rows[0].add_s
            row.note = balance if (kind == "ivf_flat" and i == 0) else ""
            bench.measure(row, search, xq, exact, ivf_bytes(index), flat)
        del index
    del vectors
    (workdir / f"{data.name}-{n}.npy").unlink()


# -- report ----------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def load_average() -> float:
    """The machine's 1-minute load average (other jobs on the cores make q/s noisy)."""
    return os.getloadavg()[0]


RESULTS_TITLE = "# Gallery index layouts: search speed, recall and memory"


def render(rows: list[Row], sets: dict[str, str], threads: int, seconds: float, argv: list[str],
           load_at_start: float, title: str = RESULTS_TITLE) -> str:
    lines = [
        title,
        "",
        f"Run: `OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} python "
        f"benchmarks/index_search.py {shlex.join(argv)}` on {platform.machine()}, {os.cpu_count()} cores, "
        f"{threads} FAISS threads, faiss {faiss.__version__}; 1-minute load average {load_at_start:.1f} at "
        f"the start and {load_average():.1f} at the end (above the core count, other jobs took CPU and "
        f"absolute q/s are low and noisy); the x-exact columns compare rows of the same run. "
        f"{seconds:.0f} s in all.",
        "",
        *[f"- **{name}**: {text}" for name, text in sets.items()],
        "",
        f"{N_QUERIES} queries, k = {K}; batch-1 q/s over up to {N_SINGLE} single queries, batch-64 over "
        f"{N_QUERIES // 64} batches. IVF: nlist from `auto`'s table (`faiss_index.auto_nlist`), one coarse "
        f"quantizer trained on {faiss_index.AUTO_POINTS_PER_LIST}·nlist sampled vectors (as `auto` trains) and shared by the IVF rows (train s includes it; add s "
        "includes the shared assignment). Searches go through `faiss_index.search`, so IVF scans at most "
        "nprobe average lists (the scan budget), except the row marked *before*. Re-rank: the index "
        f"returns r·k candidates and `search.exact_rerank` orders them by exact distance to the float "
        "vectors read from a memory-mapped file (page cache after the first touch, as SQLite's pages are "
        "for the gallery). B/vector = resident codes + 8 B id + coarse centroids per vector (the float "
        "vectors stay on disk); flat counts 4·d + 8.",
        "",
        "| data | N | index | parameters | train s | add s | q/s batch 1 | q/s batch 64 | x exact b1 | x exact b64 "
        "| recall@10 | B/vector | RAM at N | RAM at 10M | note |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ram = "-" if r.bytes_per_vector is None else f"{r.bytes_per_vector * r.size / 2**30:.2f} GB"
        ram10 = "-" if r.bytes_per_vector is None else f"{r.bytes_per_vector * 1e7 / 2**30:.1f} GB"
        lines.append(
            f"| {r.data} | {r.size:,} | {r.kind} | {r.params} | {fmt(r.train_s, '.1f')} | {fmt(r.add_s, '.1f')} | "
            f"{fmt(r.qps1, '.1f')} | {fmt(r.qps64, '.1f')} | {fmt(r.x1, '.0f')} | {fmt(r.x64, '.1f')} | "
            f"{fmt(r.recall, '.3f')} | {fmt(r.bytes_per_vector, ',.0f')} | {ram} | {ram10} | {r.note} |")
    lines += [
        "",
        "recall@10 = share of the exact top 10 found in the layout's top 10 (flat is the reference). "
        "RAM at 10M scales B/vector (the centroids' share is that of N). Train and add times exclude "
        "generating the vectors.",
        "",
    ]
    return "\n".join(lines)


def put_section(path: Path, title: str, text: str) -> None:
    """Write ``text`` (starting with ``## title``) into the results file ``path``: in place of
    that section if the file has it, else at the end. Other sections are kept as they are."""
    old = path.read_text() if path.is_file() else ""
    heading = f"## {title}\n"
    if heading in old:
        before, rest = old.split(heading, 1)
        after = rest[rest.index("\n## "):] if "\n## " in rest else ""
        new = before + text.rstrip("\n") + "\n" + after
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def plot(rows: list[Row], path: Path) -> bool:
    """Recall against q/s at batch 1 and 64, beside the table; False (nothing drawn) without
    matplotlib (the ``bench`` extra), so the table is still written."""
    plt = pyplot()
    if plt is None:
        return False

    fig, axes = plt.subplots(1, 2, figsize=(16, 6), sharey=True)
    for ax, batch in zip(axes, ("qps1", "qps64"), strict=True):
        for r in rows:
            if r.recall is None:
                continue
            marker = {"flat": "s", "ivf_flat": "o", "ivf_sq8": "^", "ivf_pq": "v"}[r.kind]
            ax.scatter(getattr(r, batch), r.recall, marker=marker,
                       label=f"{r.data} {r.size:,} {r.kind} {r.params}", s=30)
        ax.set_xscale("log")
        ax.set_xlabel(f"queries/s at batch {1 if batch == 'qps1' else 64}")
        ax.axhline(0.95, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recall@10")
    axes[1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--data", nargs="+", choices=("clusters", "embeddings"), default=["clusters", "embeddings"])
    parser.add_argument("--embeddings", type=Path, default=None, help="npz with x (n, d) and pids (n,)")
    parser.add_argument("--embed", type=Path, nargs="+", default=None, metavar="MODEL CROPS",
                        help="make --embeddings: an ONNX model then crop folders, then exit")
    parser.add_argument("--embed-seconds", type=float, default=600)
    parser.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads (default: 2)")
    parser.add_argument("--budget", type=float, default=3000, help="seconds before remaining rows are skipped")
    parser.add_argument("--workdir", type=Path, default=None, help="where the on-disk vectors go (default: a temp dir)")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS),
                        help="IVF layouts to measure after flat, in this order")
    parser.add_argument("--nprobes", type=int, nargs="+", default=list(NPROBES),
                        help=f"nprobe of the IVF-Flat and re-ranked IVF-SQ8 rows (default: {NPROBES})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results table (the plot goes beside it)")
    parser.add_argument("--section", metavar="TITLE",
                        help="write this run as the section '## TITLE' of --out (replacing a section of that "
                             "title, keeping the rest) with its own plot, instead of rewriting the file")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.embed:
        embed_crops(args.embed[0], args.embed[1:], args.embeddings, args.embed_seconds)
        return 0
    faiss.omp_set_num_threads(args.threads)
    bench = Bench(deadline=time.monotonic() + args.budget)
    started, load_at_start = time.perf_counter(), load_average()
    plot_path = args.out.with_suffix(".png")
    if args.section:
        slug = "".join(ch if ch.isalnum() else "_" for ch in args.section.lower()).strip("_")
        plot_path = args.out.with_name(f"{args.out.stem}_{slug}.png")
    sets: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.sizes:
            for name in args.data:
                if name == "embeddings" and args.embeddings is None:
                    continue
                data = clusters(n) if name == "clusters" else embeddings(n, args.embeddings)
                sets[name] = data.description
                run_size(bench, data, Path(tmp), args.layouts, tuple(args.nprobes))
                text = render(bench.rows, sets, args.threads, time.perf_counter() - started,
                              argv if argv is not None else sys.argv[1:], load_at_start,
                              f"## {args.section}" if args.section else RESULTS_TITLE)
                text += f"\n![recall@10 against queries/s]({plot_path.name})\n"
                if not args.no_write:  # after each size, so a run cut short keeps what it measured
                    if args.section:
                        put_section(args.out, args.section, text)
                    else:
                        args.out.write_text(text)
                    if not plot(bench.rows, plot_path):
                        print("matplotlib is not installed (pip install '.[bench]'): table only, no plot",
                              file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
