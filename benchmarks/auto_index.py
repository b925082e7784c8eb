"""An ``auto`` gallery grown to 200k items the way ``reid-index build --index-type auto`` grows
it: recall@10 and speed against exact search, unfiltered and filtered, at checkpoints.

The gallery is a real :class:`index.gallery.Gallery` created through
:func:`index.opening.open_or_create_for` with the spec, batch size and checkpoint interval the
``build`` command's parser gives ``--index-type auto``; vectors go in through ``Gallery.add``,
one durable transaction per batch, with the metadata ``build`` stores (path, pid, camera,
timestamp, content hash). So the gallery starts exact, trains IVF-SQ8 on the add that crosses
``AUTO_EXACT_BELOW`` and retrains whenever ``auto``'s table asks for more lists, exactly as a
build would. The vectors are fed directly instead of embedding crops with the ONNX model:
generating and embedding 200k crops takes hours on a 2-core machine, and the model's output is
just the (b, d) float32 batch that ``build`` hands to the same ``Gallery.add``.

Data: identity-structured 512-d vectors, ~12 consecutive members per identity (as a build
walks crops sorted by name), cameras 1-6 at random, timestamp = row number (one crop a
second). With ``--embeddings FILE.npz`` (arrays ``x``, ``pids``; made by
``benchmarks/index_search.py --embed``) the real embeddings are expanded by per-identity
jitter (:func:`index_search.expand_identities`); without it a seeded synthetic seed set of
300 identities is expanded the same way.

At each checkpoint, on held-out queries (fresh members of identities already in the gallery,
never added): recall@10 of ``gallery.search`` against FAISS ``IndexFlatL2`` over the vectors
read back from the gallery; q/s at batch 1 and 64 of both; the live layout
(``gallery.stats()``); and, for a camera filter and a time-range filter, recall@10 against
exact search over the passing items only, batch-64 q/s, and the number of rows holding fewer
than k results although k items pass (must be 0). Exits 1, saying why, if recall@10 at the
last checkpoint is below ``--min-recall`` or any filtered row came back short.

    python benchmarks/auto_index.py --embeddings emb.npz    # writes results/auto_index.md + .png
    python benchmarks/auto_index.py --size 60000 --no-write
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from index import faiss_index
from index.cli import build_parser
from index.gallery import content_hash
from index.manifest import IndexSpec
from index.opening import ModelIdentity, open_or_create_for
from index.protocol import GalleryBackend
from index.records import ItemRecord
from index_search import (  # noqa: E402  (benchmarks/ is on sys.path)
    K,
    N_QUERIES,
    Identities,
    expand_identities,
    fmt,
    identity_set,
    load_average,
    recall_at_k,
    time_search,
)
from plotting import pyplot  # noqa: E402  (benchmarks/ is on sys.path)

RESULTS = Path(__file__).resolve().parent / "results" / "auto_index.md"
DIM = 512
SEED_IDENTITIES = 300
SEED_MEMBERS = 12
CAMERAS = 6
CAMERA_FILTER = 2  # one camera of six: ~1/6 of the items pass
TIME_WINDOW = (0.45, 0.55)  # the middle tenth of the gallery's timestamps


@dataclass
class Checkpoint:
    """What one checkpoint measured. Speeds in queries/s; ``add_s`` is the time spent in
    ``Gallery.add`` since the previous checkpoint (training and rebuilds included)."""

    size: int
    layout: str
    nlist: int | None
    nprobe: int | None  # the live index's (auto follows the size; a filter widens it per search)
    add_s: float
    slowest_add_s: float
    qps1: float
    qps64: float
    exact_qps1: float
    exact_qps64: float
    recall: float
    camera_recall: float
    camera_short: int
    camera_pass: int
    camera_qps64: float
    time_recall: float
    time_short: int
    time_pass: int
    time_qps64: float
    load1: float

    @property
    def x1(self) -> float:
        return self.qps1 / self.exact_qps1

    @property
    def x64(self) -> float:
        return self.qps64 / self.exact_qps64


# -- data ------------------------------------------------------------------------------------


def synthetic_seed(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for real embeddings: (x (3600, 512) float32, pids (3600,)), 300 identities of
    12. Like the crop embeddings it imitates, every vector shares a large common mean, identity
    means differ along a few dominant directions (decaying spectrum), and members spread both
    along directions shared by all identities and along a few of their own."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    decay = np.arange(1, DIM + 1, dtype=np.float64)
    between = decay ** -0.8
    between *= 0.3 * np.sqrt(DIM) / np.linalg.norm(between)  # ~0.3 per dimension
    shared = decay ** -0.5
    shared *= 0.35 * np.sqrt(DIM) / np.linalg.norm(shared)
    common = 32.0 * basis[:, -1]
    means = common + (rng.standard_normal((SEED_IDENTITIES, DIM)) * between) @ basis.T
    pids = np.repeat(np.arange(1, SEED_IDENTITIES + 1), SEED_MEMBERS)
    own = rng.standard_normal((SEED_IDENTITIES, 4, DIM))  # each identity's own spread directions
    own /= np.linalg.norm(own, axis=2, keepdims=True)
    x = (means[pids - 1]
         + (rng.standard_normal((len(pids), DIM)) * shared) @ basis.T
         + np.einsum("nj,njd->nd", 3.0 * rng.standard_normal((len(pids), 4)), own[pids - 1])
         + 0.1 * rng.standard_normal((len(pids), DIM)))
    return x.astype(np.float32), pids


def batches(chunks: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The rows of ``chunks`` regrouped into batches of ``size`` (the last may be smaller)."""
    held = np.empty((0, DIM), dtype=np.float32)
    for chunk in chunks:
        held = np.concatenate([held, chunk])
        while len(held) >= size:
            yield held[:size]
            held = held[size:]
    if len(held):
        yield held


@dataclass
class Stored:
    """The metadata of what was added, aligned with the ids ``Gallery.add`` returned."""

    ids: list[np.ndarray]
    cameras: list[np.ndarray]
    timestamps: list[np.ndarray]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.concatenate(self.ids), np.concatenate(self.cameras), np.concatenate(self.timestamps)


def records_for(rows: np.ndarray, xb: np.ndarray, pids: np.ndarray, cameras: np.ndarray) -> list[ItemRecord]:
    """What ``reid-index build`` stores for these crops: a Market-style path, pid, camera, the
    frame number as timestamp, and a content hash (here of the vector's bytes)."""
    return [
        ItemRecord(path=f"{pid:06d}_c{cam}s1_{row:07d}_00.jpg", pid=int(pid), camera=int(cam),
                   timestamp=float(row), content_hash=content_hash(x.tobytes()))
        for row, x, pid, cam in zip(rows, xb, pids, cameras, strict=True)
    ]


# -- measuring -------------------------------------------------------------------------------


def exact_search(xb: np.ndarray, ids: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Gallery ids of the exact K nearest stored vectors of each query, (M, K)."""
    flat = faiss.IndexFlatL2(xb.shape[1])
    flat.add(xb)
    return ids[flat.search(xq, K)[1]]


def short_rows(found: np.ndarray, n_pass: int) -> int:
    """Rows holding fewer than min(K, n_pass) results."""
    return int(((found >= 0).sum(axis=1) < min(K, n_pass)).sum())


def filtered(gallery: GalleryBackend, xq: np.ndarray, xb: np.ndarray, ids: np.ndarray, mask: np.ndarray,
             **filters: object) -> tuple[float, int, float]:
    """(recall@10 against exact search over the passing items, short rows, q/s at batch 64) of
    ``gallery.search`` with ``filters`` (which select the rows where ``mask`` is True)."""
    start = time.perf_counter()
    found = np.concatenate([gallery.search(xq[i:i + 64], K, **filters).I for i in range(0, len(xq), 64)])
    qps = len(xq) / (time.perf_counter() - start)
    return recall_at_k(found, exact_search(xb[mask], ids[mask], xq)), short_rows(found, int(mask.sum())), qps


def measure(gallery: GalleryBackend, spec: IndexSpec, identities: Identities, stored: Stored, add_s: float,
            slowest: float) -> Checkpoint:
    """Search ``gallery`` (created with ``spec``) as it is now, on fresh members of identities
    it already holds."""
    ids, cameras, timestamps = stored.arrays()
    back = gallery.vectors()  # what the gallery stored, ascending by id
    if not np.array_equal(back.ids, ids):
        raise RuntimeError("the gallery's ids differ from those its adds returned")
    xb, n = back.xb, len(ids)
    present = max(1, min(identities.n_ids, n // identities.per_id))  # identities with every member in
    rng = np.random.default_rng([1, n])  # a stream no database chunk uses
    xq = identities.draw(rng, rng.integers(0, present, N_QUERIES))
    stats = gallery.stats()
    target = faiss_index.plan(spec, stats.count)
    qps1, qps64, found = time_search(lambda q: gallery.search(q, K).I, xq)
    flat = faiss.IndexFlatL2(DIM)
    flat.add(xb)
    exact1, exact64, exact = time_search(lambda q: ids[flat.search(q, K)[1]], xq)
    del flat
    lo, hi = (n * f for f in TIME_WINDOW)
    cam_mask = cameras == CAMERA_FILTER
    time_mask = (timestamps >= lo) & (timestamps <= hi)
    cam = filtered(gallery, xq, xb, ids, cam_mask, cameras=[CAMERA_FILTER])
    tim = filtered(gallery, xq, xb, ids, time_mask, time_range=(lo, hi))
    return Checkpoint(
        size=n, layout=stats.active_index, nlist=None if target is None else target.nlist,
        nprobe=int(gallery._index.nprobe) if isinstance(gallery._index, faiss.IndexIVF) else None,
        add_s=add_s, slowest_add_s=slowest, qps1=qps1, qps64=qps64, exact_qps1=exact1, exact_qps64=exact64,
        recall=recall_at_k(found, exact),
        camera_recall=cam[0], camera_short=cam[1], camera_pass=int(cam_mask.sum()), camera_qps64=cam[2],
        time_recall=tim[0], time_short=tim[1], time_pass=int(time_mask.sum()), time_qps64=tim[2],
        load1=load_average(),
    )


def build_settings() -> argparse.Namespace:
    """The options ``reid-index build --index-type auto`` runs with when given no others."""
    return build_parser().parse_args(["build", "--model", "model.onnx", "--out", "gallery",
                                      "--index-type", "auto", "crops"])


def grow(folder: Path, identities: Identities, size: int, checkpoints: list[int],
         on_checkpoint: Callable[[list[Checkpoint]], object]) -> list[Checkpoint]:
    """Grow an ``auto`` gallery at ``folder`` to ``size`` items in ``build``'s batches, measuring
    at the first batch boundary at or past each of ``checkpoints``; ``on_checkpoint(results)``
    is called after each."""
    settings = build_settings()
    spec = IndexSpec(index_type=settings.index_type, nlist=settings.nlist, nprobe=settings.nprobe, m=settings.m)
    model = ModelIdentity(DIM, "benchmark-vectors", {})
    data = identity_set("auto", size, identities, "")
    stored = Stored([], [], [])
    results: list[Checkpoint] = []
    pending = sorted(c for c in checkpoints if 0 < c <= size)
    camera_rng = np.random.default_rng(2)
    add_s = slowest = 0.0
    row = 0
    with open_or_create_for(folder, model, spec, checkpoint_every=settings.checkpoint_every) as gallery:
        for xb in batches(data.chunks(), settings.batch_size):
            rows = np.arange(row, row + len(xb))
            row += len(xb)
            cameras = camera_rng.integers(1, CAMERAS + 1, len(xb))
            pids = identities.of_rows(rows) + 1
            records = records_for(rows, xb, pids, cameras)
            start = time.perf_counter()
            ids = gallery.add(xb, records)
            took = time.perf_counter() - start
            add_s += took
            slowest = max(slowest, took)
            stored.ids.append(ids)
            stored.cameras.append(cameras)
            stored.timestamps.append(rows.astype(np.float64))
            if pending and row >= pending[0]:
                while pending and row >= pending[0]:
                    pending.pop(0)
                results.append(measure(gallery, spec, identities, stored, add_s, slowest))
                print(results[-1], flush=True)
                on_checkpoint(results)
                add_s = slowest = 0.0
    return results


def failures(results: list[Checkpoint], min_recall: float) -> list[str]:
    """Why the run fails its checks (empty when it passes): recall@10 at the last checkpoint
    below ``min_recall``, or a filtered row short of k although k items passed."""
    reasons = []
    if results and results[-1].recall < min_recall:
        reasons.append(f"recall@10 at {results[-1].size:,} items is {results[-1].recall:.3f}, below {min_recall}")
    for r in results:
        if r.camera_short or r.time_short:
            reasons.append(f"at {r.size:,} items {r.camera_short} camera-filtered and {r.time_short} "
                           f"time-filtered rows held fewer than {K} results although at least {K} items passed")
    return reasons


# -- report ----------------------------------------------------------------------------------


def render(results: list[Checkpoint], description: str, command: str, threads: int, load_start: float,
           seconds: float, verdict: list[str], min_recall: float) -> str:
    settings = build_settings()
    lines = [
        "# `auto` index grown to full size: recall and speed against exact, filtered searches",
        "",
        f"Run: `OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} {command}` on "
        f"{platform.machine()}, {os.cpu_count()} cores, {threads} FAISS threads, faiss {faiss.__version__}. "
        f"1-minute load average {load_start:.1f} at the start, {load_average():.1f} at the end and per "
        f"checkpoint in the table (above the core count, other jobs took CPU and absolute q/s are low and "
        f"noisy); the x-exact columns compare searches of the same moment. {seconds:.0f} s in all.",
        "",
        f"- **data**: {description}",
        f"- **gallery**: `Gallery` with `index_type=\"auto\"` made by `open_or_create_for`, as `reid-index "
        f"build --index-type auto` makes it; vectors added {settings.batch_size} at a time (build's "
        f"`--batch-size`), each batch one `Gallery.add` with path, pid, camera 1-{CAMERAS}, timestamp (row "
        f"number) and content hash; snapshot every {settings.checkpoint_every:,} items (build's "
        "`--checkpoint-every`). The vectors are fed directly rather than embedded from crops by the ONNX "
        "model (generating and embedding 200k crops takes hours here); everything after the embedding is "
        "the build's path.",
        f"- **queries**: {N_QUERIES} fresh members of identities already in the gallery (never added), "
        f"k = {K}. Exact = FAISS `IndexFlatL2` over the vectors read back with `gallery.vectors()`, timed "
        "on the same queries right after the gallery. It skips the gallery's metadata lookup, so at the "
        "exact layout x exact should be 1 or a little below; how far it strays shows the run's noise. "
        "q/s batch 1 over up to 40 single queries, batch 64 over all of them.",
        f"- **filters**: camera {CAMERA_FILTER} (`cameras=[{CAMERA_FILTER}]`, about 1/{CAMERAS} of the "
        f"items) and `time_range` over the middle tenth of the timestamps (for 9 queries in 10 the query's "
        f"own identity lies outside the window). Filtered recall@10 is "
        f"against exact search over the passing items only; *short* counts rows with fewer than {K} "
        f"results although at least {K} items passed (must be 0). Filtered q/s at batch 64.",
        "",
        "| items | layout | nlist | nprobe | add s | slowest add s | q/s b1 | exact b1 | x exact b1 | q/s b64 | exact b64 "
        "| x exact b64 | recall@10 | camera: pass | recall@10 | short | q/s b64 | time: pass | recall@10 | short "
        "| q/s b64 | load |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.size:,} | {r.layout} | {'-' if r.nlist is None else r.nlist} | "
            f"{'-' if r.nprobe is None else r.nprobe} | {r.add_s:.1f} | "
            f"{r.slowest_add_s:.1f} | {r.qps1:.1f} | {r.exact_qps1:.1f} | {fmt(r.x1, '.1f')} | {r.qps64:.1f} | "
            f"{r.exact_qps64:.1f} | {fmt(r.x64, '.1f')} | {r.recall:.3f} | {r.camera_pass:,} | "
            f"{r.camera_recall:.3f} | {r.camera_short} | {r.camera_qps64:.1f} | {r.time_pass:,} | "
            f"{r.time_recall:.3f} | {r.time_short} | {r.time_qps64:.1f} | {r.load1:.1f} |")
    lines += [
        "",
        "*add s*: time in `Gallery.add` since the previous row (SQLite commits, FAISS adds, the "
        "training and rebuild when the layout changed, snapshots); *slowest add s*: the longest single "
        "add in that stretch (the one that trained, where there was one). *nlist*: what "
        "`faiss_index.plan` gives `auto` at this size, which the live index was (re)trained with; "
        "*nprobe*: the live index's, which `auto` sets to scan at least `AUTO_MIN_SCAN` vectors "
        "(`faiss_index.auto_nprobe`) and a filtered search multiplies by stored / passing items.",
        "",
        ("**Checks passed**: recall@10 at the last size >= "
         f"{min_recall} and no filtered row short of k." if not verdict else
         "**Checks failed**: " + "; ".join(verdict) + "."),
        "",
        "Caveats: one run on shared cores (speeds vary by tens of percent between runs); the queries "
        "are members of the gallery's identities drawn the way its items were, so recall here is "
        "agreement with exact search, not re-identification accuracy; the vectors are expanded "
        "from a seed set, so identities share their seed's spread. The plot beside this file shows "
        "recall@10 and the x-exact speed-ups against the gallery's size.",
        "",
    ]
    return "\n".join(lines)


def plot(results: list[Checkpoint], path: Path) -> bool:
    """Recall and speed-up against size, beside the table; False (nothing drawn) without
    matplotlib (the ``bench`` extra), so the table is still written."""
    plt = pyplot()
    if plt is None:
        return False

    sizes = [r.size for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot(sizes, [r.recall for r in results], "o-", label="unfiltered")
    left.plot(sizes, [r.camera_recall for r in results], "s--", label=f"camera {CAMERA_FILTER}")
    left.plot(sizes, [r.time_recall for r in results], "^--", label="time range")
    left.axhline(0.95, color="grey", lw=0.5)
    left.set_ylabel("recall@10 against exact")
    right.plot(sizes, [r.x1 for r in results], "o-", label="batch 1")
    right.plot(sizes, [r.x64 for r in results], "s-", label="batch 64")
    right.axhline(1.0, color="grey", lw=0.5)
    right.set_yscale("log")
    right.set_ylabel("q/s as a multiple of exact")
    for ax in (left, right):
        ax.axvline(faiss_index.AUTO_EXACT_BELOW, color="grey", ls=":", lw=0.8)
        ax.set_xlabel("gallery items (dotted: auto leaves the exact index)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("reid-index build --index-type auto, grown in build's batches")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000, help="items to grow the gallery to")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=None,
                        help="sizes to measure at (default: size/8, /4, /2 and size)")
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="npz with x (n, 512) and pids (n,) to expand (default: a synthetic seed set)")
    parser.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads (default: 2)")
    parser.add_argument("--min-recall", type=float, default=0.95, help="recall@10 the last size must reach")
    parser.add_argument("--workdir", type=Path, default=None, help="where the gallery folder goes (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results table (the plot goes beside it)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    checkpoints = args.checkpoints or [args.size // 8, args.size // 4, args.size // 2, args.size]
    if args.embeddings is not None:
        data = np.load(args.embeddings)
        x, pids = data["x"].astype(np.float32), data["pids"]
        source = f"{x.shape[1]}-d embeddings of {len(x)} generated crops ({args.embeddings.name})"
    else:
        x, pids = synthetic_seed()
        source = "a seeded synthetic 512-d seed set (`synthetic_seed`)"
    if x.shape[1] != DIM:
        print(f"auto_index: the embeddings are {x.shape[1]}-d, this benchmark is {DIM}-d", file=sys.stderr)
        return 2
    identities = expand_identities(x, pids, args.size)
    description = (f"{source} of {len(np.unique(pids))} identities, expanded by per-identity jitter "
                   f"(`index_search.expand_identities`) to {identities.n_ids:,} identities of "
                   f"{identities.per_id} consecutive members")
    faiss_index.set_num_threads(args.threads)
    command = "python benchmarks/auto_index.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load_start, started = load_average(), time.perf_counter()

    def report(results: list[Checkpoint]) -> str:
        text = render(results, description, command.strip(), args.threads, load_start,
                      time.perf_counter() - started, failures(results, args.min_recall), args.min_recall)
        if not args.no_write:  # after each checkpoint, so a run cut short keeps what it measured
            args.out.write_text(text)
            if not plot(results, args.out.with_suffix(".png")):
                print("matplotlib is not installed (pip install '.[bench]'): table only, no plot", file=sys.stderr)
        return text

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = grow(Path(tmp) / "gallery", identities, args.size, checkpoints, report)
    print(report(results))
    reasons = failures(results, args.min_recall)
    for reason in reasons:
        print(f"auto_index: {reason}", file=sys.stderr)
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main())
