"""The served re-ranking (a shortlist of N) and multi-crop queries: quality and latency.

Per seed, the same generated data and small trained model as ``benchmarks/rerank.py``
(:func:`rerank.train_and_extract`); everything below runs on the target domain's query and
gallery features, with the paper's k1 = 20, k2 = 6, lambda = 0.3 (nothing tuned on the target).

1. Shortlist: each query is re-ranked on its N nearest gallery items by
   :func:`index.shortlist.rerank_candidates`, the function ``/search?rerank=true`` calls; the
   shortlist takes the re-ranked order, the rest of the gallery follows in Euclidean order.
   Scored under the Market-1501 protocol beside plain Euclidean and the full dense
   k-reciprocal re-ranking of the whole query/gallery problem, with the per-query time of the
   shortlist re-ranking (median over queries). The added latency of a served search is
   measured in-process on a flat gallery holding the target gallery: the search step of a
   plain search (items + identities) against :func:`index.shortlist.search_reranked` at N = 100.
2. Multi-crop: a query of C crops is the query image and C - 1 other images of the same person
   (same camera first, as a tracklet would be); every image used as a crop of a query is
   removed from that query's gallery for every C, so the gallery is the same for C = 1, 2, 4 and
   no crop is ever scored as its own match. Queries need 3 such images. Fusion rules: the mean
   embedding (what the service does), element-wise max-pooling, and the minimum distance over
   the crops.

    python benchmarks/rerank_served.py                 # writes its section of benchmarks/results/rerank.md
    python benchmarks/rerank_served.py --seeds 0 --no-write
"""

from __future__ import annotations

import argparse
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from rerank import (  # noqa: E402  (benchmarks/ is on sys.path)
    RERANK,
    RESULTS,
    Split,
    add_training_arguments,
    mean_ci,
    train_and_extract,
)
from index import faiss_index
from index.gallery import Gallery
from index.records import ItemRecord
from index.shortlist import ShortlistParams, fuse_crops, rerank_candidates, search_reranked
from training.core.errors import run_cli
from training.core.evaluation import EvalResult, euclidean_distmat, evaluate
from training.core.fileio import atomic_write_bytes
from training.core.rerank import k_reciprocal

SIZES = (50, 100, 200)
CROPS = (1, 2, 4)
FUSIONS = ("mean", "max-pool", "min distance")
BEGIN, END = "<!-- served: benchmarks/rerank_served.py -->", "<!-- /served -->"


def shortlist_distances(qf: np.ndarray, gf: np.ndarray, size: int) -> tuple[np.ndarray, list[float]]:
    """(Q, G) rank-valued distances: each query's ``size`` nearest re-ranked first, then the
    rest in Euclidean order; and the seconds each query's re-ranking took."""
    original = euclidean_distmat(qf, gf)
    out = np.empty_like(original)
    seconds = []
    for row in range(len(qf)):
        order = np.argsort(original[row], kind="stable")
        head = order[:size]
        started = time.perf_counter()
        reranked = rerank_candidates(qf[row], gf[head], RERANK)
        seconds.append(time.perf_counter() - started)
        order[:size] = head[np.argsort(reranked, kind="stable")]
        out[row, order] = np.arange(len(order))
    return out, seconds


def served_latency(gf: np.ndarray, qf: np.ndarray, work: Path) -> tuple[float, float]:
    """p50 seconds of the search step of a plain search (items + identities) and of a
    re-ranked one at N = 100, on a flat gallery of ``gf``, with one FAISS thread as the
    server's thread plan gives each request thread on 2 cores."""
    faiss_index.set_num_threads(1)
    gallery = Gallery.create(work / "served", gf.shape[1], "bench", checkpoint_every=None)
    try:
        gallery.add(gf.astype(np.float32), [ItemRecord(pid=i % 50) for i in range(len(gf))])
        plain, reranked = [], []
        for q in qf.astype(np.float32):
            started = time.perf_counter()
            gallery.search(q[None], 10)
            gallery.search_identities(q[None], 5, items_per_identity=3)
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            search_reranked(gallery, q, ShortlistParams(100), k=10, k_identities=5, items_per_identity=3)
            reranked.append(time.perf_counter() - started)
    finally:
        gallery.close()
    return float(np.median(plain)), float(np.median(reranked))


def quality(target: Split) -> dict[str, tuple[EvalResult, float]]:
    """Metrics and per-query milliseconds (0: not timed) of plain, full dense and shortlists."""
    qf, gf, labels = target.qf.astype(np.float64), target.gf.astype(np.float64), target.labels
    rows = {"none (Euclidean)": (evaluate(euclidean_distmat(qf, gf), *labels), 0.0)}
    full = k_reciprocal(euclidean_distmat(qf, gf), euclidean_distmat(qf, qf), euclidean_distmat(gf, gf), *RERANK)
    rows["dense k-reciprocal, whole gallery"] = (evaluate(full, *labels), 0.0)
    for size in SIZES:
        distmat, seconds = shortlist_distances(qf, gf, size)
        rows[f"served shortlist N={size}"] = (evaluate(distmat, *labels), 1000 * float(np.median(seconds)))
    return rows


def multi_crop(target: Split) -> tuple[dict[str, list[float]], int]:
    """Per fusion rule and C: the (mAP, rank-1) of the queries that have 3 extra images."""
    q_pids, g_pids, q_cams, g_cams = target.labels
    qf, gf = target.qf.astype(np.float64), target.gf.astype(np.float64)
    pool = np.concatenate([qf, gf])  # every image a crop may come from: queries, then gallery
    pool_pids, pool_cams = np.concatenate([q_pids, g_pids]), np.concatenate([q_cams, g_cams])
    scores: dict[str, list[tuple[float, float]]] = {}
    used = 0
    for row in range(len(qf)):
        others = [j for j in range(len(pool)) if j != row and pool_pids[j] == q_pids[row]]
        others.sort(key=lambda j: pool_cams[j] != q_cams[row])  # same camera first, like a tracklet
        if len(others) < 3:
            continue
        extra = others[:3]
        removed = np.array([j - len(qf) for j in extra if j >= len(qf)], dtype=np.int64)
        keep = np.setdiff1d(np.arange(len(gf)), removed)
        # the gallery must still hold a match from another camera, or the query is not scored
        if not ((g_pids[keep] == q_pids[row]) & (g_cams[keep] != q_cams[row])).any():
            continue
        used += 1
        gallery = gf[keep]
        for crops in CROPS:
            vectors = np.concatenate([qf[row:row + 1], pool[extra[:crops - 1]]])
            rules = {"mean": euclidean_distmat(fuse_crops(vectors)[None].astype(np.float64), gallery),
                     "max-pool": euclidean_distmat(vectors.max(axis=0, keepdims=True), gallery),
                     "min distance": euclidean_distmat(vectors, gallery).min(axis=0, keepdims=True)}
            if crops == CROPS[-1]:
                head = np.argsort(rules["mean"][0], kind="stable")
                fused = fuse_crops(vectors).astype(np.float64)
                reranked = rerank_candidates(fused, gallery[head[:100]], RERANK)
                head[:100] = head[:100][np.argsort(reranked, kind="stable")]
                rows = np.empty((1, len(keep)))
                rows[0, head] = np.arange(len(keep))
                rules["mean, re-ranked N=100"] = rows
            for rule, distmat in rules.items():
                result = evaluate(distmat, q_pids[row:row + 1], g_pids[keep], q_cams[row:row + 1], g_cams[keep])
                scores.setdefault(f"{rule}|{crops}", []).append((result.mAP, float(result.cmc[0])))
    return {key: [float(np.mean([s[0] for s in v])), float(np.mean([s[1] for s in v]))]
            for key, v in scores.items()}, used


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        started = time.perf_counter()
        per_seed: dict[int, dict] = {}
        with tempfile.TemporaryDirectory(prefix="rerank-served-") as work:
            for seed in args.seeds:
                target, _ = train_and_extract(seed, Path(work), args)
                per_seed[seed] = {"shape": (len(target.qf), len(target.gf)), "quality": quality(target),
                                  "crops": multi_crop(target), "latency": served_latency(target.gf, target.qf,
                                                                                         Path(work) / f"g{seed}")}
                print(f"seed {seed}: " + "; ".join(f"{k} {100 * v[0].mAP:.1f}"
                                                   for k, v in per_seed[seed]["quality"].items()), flush=True)
        report = render(args, per_seed, time.perf_counter() - started)
        print(report)
        if not args.no_write:
            old = RESULTS.read_text() if RESULTS.exists() else ""
            section = f"{BEGIN}\n{report}\n{END}\n"
            pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
            new = pattern.sub(lambda _: section, old) if BEGIN in old else old.rstrip("\n") + ("\n\n" if old else "") + section
            atomic_write_bytes(RESULTS, new.encode())
            print(f"wrote {RESULTS}")
        return 0

    return run_cli("rerank-served-benchmark", body)


def render(args: argparse.Namespace, per_seed: dict[int, dict], seconds: float) -> str:
    seeds = sorted(per_seed)
    names = list(per_seed[seeds[0]]["quality"])
    lines = [
        "## Served re-ranking (shortlist of N) and multi-crop queries",
        "",
        f"`python benchmarks/rerank_served.py` ({seconds / 60:.1f} min; seeds {seeds}; {args.ids} identities, "
        f"{args.images_per_id} images each, {args.epochs} x {args.steps} training steps; {platform.processor() or platform.machine()}, "
        "2 CPU cores shared with other work, so times are indicative). Mean ± 95% t-interval over seeds, in %; "
        f"k1={RERANK.k1}, k2={RERANK.k2}, lambda={RERANK.lambda_value:g} throughout. "
        "Q x G per seed: " + ", ".join(f"{per_seed[s]['shape'][0]} x {per_seed[s]['shape'][1]}" for s in seeds) + ".",
        "",
        "### Shortlist re-ranking (what `/search?rerank=true` does) against the whole-gallery re-ranking",
        "",
        "| variant | mAP | rank-1 | mINP | Δ mAP vs none | re-ranking per query, p50 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        runs = [per_seed[s]["quality"][name] for s in seeds]
        delta = [per_seed[s]["quality"][name][0].mAP - per_seed[s]["quality"][names[0]][0].mAP for s in seeds]
        ms = np.mean([r[1] for r in runs])
        lines.append(f"| {name} | {mean_ci([r[0].mAP for r in runs])} | {mean_ci([float(r[0].cmc[0]) for r in runs])} "
                     f"| {mean_ci([r[0].mINP for r in runs])} | {'—' if name == names[0] else mean_ci(delta)} "
                     f"| {'—' if ms == 0 else f'{ms:.1f}'} |")
    plain = [1000 * per_seed[s]["latency"][0] for s in seeds]
    rr = [1000 * per_seed[s]["latency"][1] for s in seeds]
    lines += ["", "Search step of one served query on a flat gallery of the target gallery (in-process, no HTTP, "
              "one FAISS thread; p50 over the queries, mean over seeds): plain items + identities "
              f"{np.mean(plain):.2f} ms, re-ranked at N = 100 {np.mean(rr):.2f} ms, "
              f"added {np.mean(rr) - np.mean(plain):.2f} ms.", "",
              "### Multi-crop queries: C crops of one person as one query", "",
              "Queries with 3 more images of their identity: " + ", ".join(
                  f"{per_seed[s]['crops'][1]}" for s in seeds) + " per seed. mAP / rank-1 (%):", "",
              "| fusion | " + " | ".join(f"C = {c}" for c in CROPS) + " |", "|---|" + "---:|" * len(CROPS)]
    rules = list(FUSIONS) + ["mean, re-ranked N=100"]
    for rule in rules:
        cells = []
        for c in CROPS:
            key = f"{rule}|{c}"
            if key not in per_seed[seeds[0]]["crops"][0]:
                cells.append("—")
                continue
            vals = [per_seed[s]["crops"][0][key] for s in seeds]
            cells.append(f"{mean_ci([v[0] for v in vals])} / {mean_ci([v[1] for v in vals])}")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
