"""k-reciprocal re-ranking and alpha query expansion: quality, time and memory.

1. Quality, several seeds: per seed, ``reid-synth`` generates two domains, ``reid-train``
   trains a small model (resnet18, 128x64, no ImageNet weights, a few epochs, the demo's
   recipe), and the target query/gallery features are scored five ways: plain Euclidean,
   dense k-reciprocal, kNN k-reciprocal, alpha query expansion, and AQE then k-reciprocal. All
   parameters are fixed up front (the paper's k1 = 20, k2 = 6, lambda = 0.3; AQE K = 3,
   alpha = 3); nothing is tuned on the target's labels. Each scoring is timed and its peak
   memory measured (tracemalloc: numpy arrays; FAISS's own C++ buffers are not seen by it, so
   the process's peak-RSS growth is reported beside it).
2. Size, random features: the kNN variant on growing problems (Q = N / 8 queries, 128-d), its
   time and peak memory; the dense variant where it fits, and for every size the memory the
   dense one needs, computed from its (Q + G)^2 float64 matrix and its inputs, not by
   exhausting the machine.

    python benchmarks/rerank.py                      # full run, writes benchmarks/results/rerank.md
    python benchmarks/rerank.py --seeds 0 --sizes 2000 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import re
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from eval_memory import _mib, _peak_rss, _reset_peak_rss  # noqa: E402  (benchmarks/ is on sys.path)
from training.core.errors import run_cli
from training.core.evaluation import EvalResult, euclidean_distmat, evaluate, evaluate_features
from training.core.fileio import atomic_write_bytes
from training.core.rerank import (
    ExpansionParams,
    RerankParams,
    alpha_query_expansion,
    k_reciprocal,
    k_reciprocal_knn,
)

from plotting import pyplot  # noqa: E402  (benchmarks/ is on sys.path)

RESULTS = Path(__file__).resolve().parent / "results" / "rerank.md"
PLOT = RESULTS.with_name("rerank_memory.png")
GIB = 2**30
MACHINE_BYTES = 24 * GIB
AQE = ExpansionParams(k=3, alpha=3.0)
RERANK = RerankParams()
VARIANTS = ("none", "dense k-reciprocal (paper's k1, k2, lambda)", "kNN k-reciprocal (paper's)",
            "kNN k-reciprocal (chosen on source)", f"AQE K={AQE.k} alpha={AQE.alpha:g}", "AQE (K chosen on source)")
# the grids searched on the labelled source domain's query/gallery (never on the target's)
K1_GRID, K2_GRID, LAMBDA_GRID = (5, 10, 20), (2, 3, 6), (0.3, 0.6)
AQE_K_GRID = (1, 2, 3, 5, 10)


class Split(NamedTuple):
    """Query/gallery features and their (q_pids, g_pids, q_camids, g_camids)."""

    qf: np.ndarray
    gf: np.ndarray
    labels: tuple[np.ndarray, ...]


class Run(NamedTuple):
    """One scoring: metrics as fractions, time in seconds, memory in bytes."""

    result: EvalResult
    seconds: float
    traced_peak: int
    rss_growth: int | None


def measured(score: Callable[[], EvalResult]) -> Run:
    """Run ``score`` under tracemalloc and a reset peak-RSS mark."""
    rss_before = _peak_rss() if _reset_peak_rss() else None
    tracemalloc.start()
    started = time.perf_counter()
    result = score()
    seconds = time.perf_counter() - started
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = _peak_rss() if rss_before is not None else None
    growth = None if rss_after is None or rss_before is None else rss_after - rss_before
    return Run(result, seconds, traced, growth)


def choose_on_source(source: Split) -> tuple[RerankParams, ExpansionParams]:
    """The k-reciprocal parameters and AQE K with the best mAP on the source domain's
    query/gallery (labelled training domain, same model), to apply unchanged to the target."""
    qf, gf = source.qf.astype(np.float64), source.gf.astype(np.float64)
    distances = (euclidean_distmat(qf, gf), euclidean_distmat(qf, qf), euclidean_distmat(gf, gf))
    grid = [RerankParams(k1, k2, lam) for k1 in K1_GRID for k2 in K2_GRID for lam in LAMBDA_GRID]
    rerank = max(grid, key=lambda p: evaluate(k_reciprocal(*distances, *p), *source.labels).mAP)
    aqe = max((ExpansionParams(k, AQE.alpha) for k in AQE_K_GRID),
              key=lambda p: evaluate_features(*alpha_query_expansion(qf, gf, *p), *source.labels).mAP)
    return rerank, aqe


def score_variants(target: Split, chosen: tuple[RerankParams, ExpansionParams]) -> dict[str, Run]:
    """The ways of scoring, each from the same float64 target features."""
    qf, gf, labels = target.qf.astype(np.float64), target.gf.astype(np.float64), target.labels
    rerank_chosen, aqe_chosen = chosen

    def dense() -> EvalResult:
        return evaluate(k_reciprocal(euclidean_distmat(qf, gf), euclidean_distmat(qf, qf),
                                     euclidean_distmat(gf, gf), *RERANK), *labels)

    def aqe() -> EvalResult:
        return evaluate_features(*alpha_query_expansion(qf, gf, *AQE), *labels)

    scorers = [lambda: evaluate_features(qf, gf, *labels), dense,
               lambda: evaluate(k_reciprocal_knn(qf, gf, *RERANK), *labels),
               lambda: evaluate(k_reciprocal_knn(qf, gf, *rerank_chosen), *labels), aqe,
               lambda: evaluate_features(*alpha_query_expansion(qf, gf, *aqe_chosen), *labels)]
    return {name: measured(score) for name, score in zip(VARIANTS, scorers, strict=True)}


def train_and_extract(seed: int, work: Path, args: argparse.Namespace) -> tuple[Split, Split]:
    """Generate data, train a small model with ``seed``; the target's and the source's
    query/gallery features."""
    from training.cli.synth import main as synth_main
    from training.cli.train import main as train_main

    data, run = work / f"data{seed}", work / f"run{seed}"
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        assert synth_main(["--out", str(data), "--seed", str(seed), "--ids", str(args.ids), "--images-per-id",
                           str(args.images_per_id), "--camstyle", "--workers", "2"]) == 0
        assert train_main([
            "--source", str(data / "duke"), "--target", str(data / "market"), "--camstyle",
            str(data / "market" / "camstyle"), "--out", str(run), "--backbone", "resnet18", "--height", "128",
            "--width", "64", "--last-stride", "1", "--epochs", str(args.epochs), "--max-steps-per-epoch",
            str(args.steps), "--ids-per-batch", "8", "--images-per-id", "4", "--target-batch", "4",
            "--pretrained", "none", "--eval-every", str(args.epochs), "--seed", str(seed), "--device", "cpu",
            "--workers", "0",
        ]) == 0
    return extract_splits(run / "last.pt", data)


def extract_splits(checkpoint: Path, data: Path) -> tuple[Split, Split]:
    """The global (POOL-5) features of the target (``market``) and source (``duke``)
    query/gallery under ``data``, from ``checkpoint``."""
    from training.checkpoint import load_checkpoint
    from training.core.datasets import load_dataset
    from training.features import extract_features

    model = load_checkpoint(checkpoint).build_model()

    def split(root: Path) -> Split:
        dataset = load_dataset(root)
        return Split(extract_features(model, [s.path for s in dataset.query]),
                     extract_features(model, [s.path for s in dataset.gallery]),
                     (np.array([s.pid for s in dataset.query]), np.array([s.pid for s in dataset.gallery]),
                      np.array([s.camid for s in dataset.query]), np.array([s.camid for s in dataset.gallery])))

    return split(data / "market"), split(data / "duke")


def dense_bytes(num_queries: int, num_gallery: int) -> int:
    """What the dense variant holds: its float64 inputs (Q x G, Q x Q, G x G) and the
    (Q + G)^2 float64 matrix it assembles (the sparse weights are small beside them)."""
    n = num_queries + num_gallery
    return 8 * (num_queries * num_gallery + num_queries**2 + num_gallery**2) + 8 * n * n


def random_problem(num_items: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Clustered float32 features (10 images per identity, 6 cameras), Q = N / 8."""
    rng = np.random.default_rng(seed)
    num_q = num_items // 8
    pids = rng.integers(1, num_items // 10 + 1, num_items)
    centres = rng.standard_normal((num_items // 10 + 1, dim), dtype=np.float32)
    feats = centres[pids] + 1.2 * rng.standard_normal((num_items, dim), dtype=np.float32)
    cams = rng.integers(0, 6, num_items)
    return feats[:num_q], feats[num_q:], (pids[:num_q], pids[num_q:], cams[:num_q], cams[num_q:])


def mean_ci(values: list[float]) -> str:
    """``mean ± half-width`` of a 95% t-interval, in percent."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return f"{100 * mean:.1f}"
    t95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}.get(n, 2.0)
    half = t95 * float(np.std(values, ddof=1)) / math.sqrt(n)
    return f"{100 * mean:.1f} ± {100 * half:.1f}"


def quality_section(per_seed: dict[int, dict[str, Run]], sizes: dict[int, tuple[int, int]],
                    chosen: dict[int, tuple[RerankParams, ExpansionParams]]) -> list[str]:
    seeds = sorted(per_seed)
    lines = ["| variant | mAP | rank-1 | mINP | Δ mAP vs none | time (s) | peak numpy | peak RSS growth |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in VARIANTS:
        runs = [per_seed[s][name] for s in seeds]
        delta = [per_seed[s][name].result.mAP - per_seed[s]["none"].result.mAP for s in seeds]
        rss = [r.rss_growth for r in runs if r.rss_growth is not None]
        lines.append(
            f"| {name} | {mean_ci([r.result.mAP for r in runs])} | {mean_ci([float(r.result.cmc[0]) for r in runs])} "
            f"| {mean_ci([r.result.mINP for r in runs])} | {'—' if name == 'none' else mean_ci(delta)} "
            f"| {np.mean([r.seconds for r in runs]):.2f} | {_mib(max(r.traced_peak for r in runs))} "
            f"| {_mib(max(rss)) if rss else 'n/a'} |")
    lines += ["", "Per seed (mAP / rank-1 / mINP, %):", "",
              "| seed | Q x G | chosen on source | " + " | ".join(VARIANTS) + " |",
              "|---|---|---|" + "---|" * len(VARIANTS)]
    for s in seeds:
        cells = [f"{100 * r.result.mAP:.1f} / {100 * r.result.cmc[0]:.1f} / {100 * r.result.mINP:.1f}"
                 for r in (per_seed[s][name] for name in VARIANTS)]
        rerank, aqe = chosen[s]
        picked = f"k1={rerank.k1} k2={rerank.k2} lambda={rerank.lambda_value:g}; AQE K={aqe.k}"
        lines.append(f"| {s} | {sizes[s][0]} x {sizes[s][1]} | {picked} | " + " | ".join(cells) + " |")
    return lines


class SizePoint(NamedTuple):
    """One row of the size test: N items, kNN seconds and peak bytes, dense bytes needed."""

    num_items: int
    knn_seconds: float
    knn_peak: int
    dense_need: int


def size_section(sizes: list[int], dim: int, dense_limit: int) -> tuple[list[str], list[SizePoint]]:
    lines = ["| N = Q + G | Q | kNN time (s) | kNN peak numpy | kNN peak RSS growth | dense needs | dense time (s) "
             "| dense peak numpy | same metrics |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    points = []
    for n in sizes:
        qf, gf, labels = random_problem(n, dim, seed=n)
        qf, gf = qf.astype(np.float64), gf.astype(np.float64)  # as evaluate_reranked scores them
        knn = measured(lambda: evaluate(k_reciprocal_knn(qf, gf, *RERANK), *labels))
        need = dense_bytes(len(qf), len(gf))
        fits = "fails in 24 GiB" if need > MACHINE_BYTES else "fits"
        dense_time = dense_peak = same = "not run"
        if n <= dense_limit:
            dense = measured(lambda: evaluate(k_reciprocal(euclidean_distmat(qf, gf), euclidean_distmat(qf, qf),
                                                           euclidean_distmat(gf, gf), *RERANK), *labels))
            dense_time, dense_peak = f"{dense.seconds:.1f}", _mib(dense.traced_peak)
            same = "yes" if abs(dense.result.mAP - knn.result.mAP) < 1e-6 else \
                f"no ({dense.result.mAP:.6f} vs {knn.result.mAP:.6f})"
        lines.append(f"| {n:,} | {len(qf):,} | {knn.seconds:.1f} | {_mib(knn.traced_peak)} "
                     f"| {_mib(knn.rss_growth) if knn.rss_growth is not None else 'n/a'} "
                     f"| {need / GIB:,.2f} GiB ({fits}) | {dense_time} | {dense_peak} | {same} |")
        print(lines[-1], flush=True)
        points.append(SizePoint(n, knn.seconds, max(knn.traced_peak, knn.rss_growth or 0), need))
    return lines, points


def read_size_points(results: Path) -> list[SizePoint]:
    """The size-test rows of a results file written by this script (to re-draw its plot)."""
    units = {"KiB": 2**10, "MiB": 2**20, "GiB": GIB}

    def size(cell: str) -> int:
        value, unit = cell.split()[:2]
        return int(float(value.replace(",", "")) * units[unit])

    points = []
    for line in results.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[0].replace(",", "").isdigit():
            peaks = [size(cells[3])] + ([size(cells[4])] if cells[4] != "n/a" else [])
            points.append(SizePoint(int(cells[0].replace(",", "")), float(cells[2]), max(peaks), size(cells[5])))
    return points


def plot_sizes(points: list[SizePoint], path: Path) -> bool:
    """Memory against N: the kNN variant's measured peak, the dense one's computed need and
    this machine's 24 GiB. False (nothing drawn) without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    from matplotlib.ticker import NullFormatter
    n = np.array([p.num_items for p in points], dtype=float)
    grid = np.geomspace(n.min(), n.max(), 50)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(n, [p.knn_peak / GIB for p in points], "o-", label="kNN k-reciprocal (measured peak)")
    ax.loglog(grid, [dense_bytes(int(g) // 8, int(g) - int(g) // 8) / GIB for g in grid], "--",
              label="dense k-reciprocal (computed)")
    ax.axhline(MACHINE_BYTES / GIB, color="grey", linewidth=1, label="24 GiB (this machine)")
    ax.xaxis.set_minor_formatter(NullFormatter())  # label decades only
    ax.set_xlabel("N = queries + gallery (Q = N / 8)")
    ax.set_ylabel("memory (GiB)")
    ax.set_title("Re-ranking memory against problem size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The generated data and training options :func:`train_and_extract` reads."""
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="one trained model each")
    parser.add_argument("--ids", type=int, default=60, help="identities per generated domain")
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the results file")


def marked_section(name: str) -> str:
    """Regex (re.S | re.M) of a results-file section between ``<!-- name: ... -->`` and
    ``<!-- /name -->``; ``name`` is itself a regex (``\\w+``: any section)."""
    return rf"^<!-- ({name}): .*? -->\n.*?^<!-- /\1 -->"


def with_other_sections(report: str) -> str:
    """``report`` followed by the sections other benchmarks keep in the results file (each
    between its ``<!-- name: ... -->`` and ``<!-- /name -->`` lines), so a re-run keeps them."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    kept = [m.group(0).rstrip() for m in re.finditer(marked_section(r"\w+"), old, flags=re.S | re.M)]
    return report.rstrip("\n") + "".join(f"\n\n{section}" for section in kept) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_arguments(parser)
    parser.add_argument("--sizes", type=int, nargs="*", default=[2000, 6000, 12000, 50000],
                        help="N = Q + G of the random size test")
    parser.add_argument("--dim", type=int, default=128, help="feature dimension of the size test")
    parser.add_argument("--dense-limit", type=int, default=12000, help="largest N the dense variant is run at")
    parser.add_argument("--models", type=Path, nargs="+", metavar="CHECKPOINT",
                        help="score these trained checkpoints (one per seed, e.g. the `full` runs that "
                             "benchmarks/train_study.py --keep-weights full keeps) on --data instead of "
                             "training small ones; writes only the section 'Quality with the study's models'")
    parser.add_argument("--data", type=Path, help="the generated pair the --models were trained on (market, duke)")
    parser.add_argument("--plot-only", action="store_true",
                        help="only re-draw the memory plot from the size table of the results file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.plot_only:
            drawn = plot_sizes(read_size_points(RESULTS), PLOT)
            print(f"wrote {PLOT}" if drawn else "matplotlib is not installed: no plot")
            return 0
        with contextlib.suppress(ImportError):
            import faiss  # noqa: F401  (imported up front so no timing below includes the import)
        started = time.perf_counter()
        if args.models:
            return score_models(args, started)
        per_seed, shapes, chosen = {}, {}, {}
        with tempfile.TemporaryDirectory(prefix="rerank-bench-") as work:
            for seed in args.seeds:
                target, source = train_and_extract(seed, Path(work), args)
                chosen[seed] = choose_on_source(source)
                shapes[seed] = (len(target.qf), len(target.gf))
                per_seed[seed] = score_variants(target, chosen[seed])
                print(f"seed {seed}: " + "; ".join(f"{k} {100 * v.result.mAP:.1f}"
                                                   for k, v in per_seed[seed].items()), flush=True)
        quality = quality_section(per_seed, shapes, chosen) if per_seed else []
        size, points = size_section(args.sizes, args.dim, args.dense_limit)
        report = render(args, quality, size, time.perf_counter() - started)
        print(report)
        if not args.no_write:
            atomic_write_bytes(RESULTS, with_other_sections(report).encode())
            print(f"wrote {RESULTS}")
            if plot_sizes(points, PLOT):
                print(f"wrote {PLOT}")
        return 0

    return run_cli("rerank-benchmark", body)


MODELS_SECTION = "study_models"


def score_models(args: argparse.Namespace, started: float) -> int:
    """``--models``: the quality table for already trained checkpoints, written as its own
    marked section of the results file (the rest of the file is kept)."""
    if args.data is None:
        raise SystemExit("--models needs --data: the generated pair they were trained on")
    per_seed, shapes, chosen = {}, {}, {}
    for i, checkpoint in enumerate(args.models):
        target, source = extract_splits(checkpoint, args.data)
        chosen[i] = choose_on_source(source)
        shapes[i] = (len(target.qf), len(target.gf))
        per_seed[i] = score_variants(target, chosen[i])
        print(f"{checkpoint}: " + "; ".join(f"{k} {100 * v.result.mAP:.1f}" for k, v in per_seed[i].items()),
              flush=True)
    section = "\n".join([
        f"<!-- {MODELS_SECTION}: written by benchmarks/rerank.py --models -->",
        "## Quality with the study's models",
        "",
        f"`python benchmarks/rerank.py --models {' '.join(str(m) for m in args.models)} --data {args.data}` "
        f"({time.perf_counter() - started:.0f} s; 1-minute load average {os.getloadavg()[0]:.1f} at the end). "
        "The models are the training study's full method (Eq. 4, both branches, resnet18 64x32, "
        "`last.pt`; `benchmarks/results/train_study.md`), one per study seed (listed in order as "
        "seeds 0, 1, ...), scored on that study's generated target query/gallery with their global "
        "(POOL-5) feature. Parameters and the choice on the source domain's labelled query/gallery "
        "exactly as above; nothing chosen on the target's labels.",
        "",
        *quality_section(per_seed, shapes, chosen),
        "",
        f"<!-- /{MODELS_SECTION} -->",
    ])
    print(section)
    if not args.no_write:
        old = RESULTS.read_text() if RESULTS.exists() else ""
        kept = re.sub(marked_section(MODELS_SECTION) + r"\n?", "", old, flags=re.S | re.M).rstrip("\n")
        atomic_write_bytes(RESULTS, (kept + "\n\n" + section + "\n").encode())
        print(f"wrote {RESULTS}")
    return 0


def render(args: argparse.Namespace, quality: list[str], size: list[str], seconds: float) -> str:
    return "\n".join([
        "# Re-ranking and query expansion",
        "",
        f"`python benchmarks/rerank.py` (seeds {' '.join(map(str, args.seeds))}; whole run {seconds / 60:.1f} min; "
        f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}, numpy {np.__version__}).",
        "**The machine was shared**: 2 cores with several other jobs running (load average around 10 "
        "during the run), so times are slow and noisy; compare them within a table, not with other files.",
        "",
        "## Quality on generated data with a trained model",
        "",
        f"Per seed: `reid-synth --seed S --ids {args.ids} --images-per-id {args.images_per_id} --camstyle`, then "
        f"`reid-train` resnet18 128x64, last stride 1, `--pretrained none`, {args.epochs} epochs x {args.steps} "
        "steps, P x K = 8 x 4, T = 4 (the demo recipe, shorter), and the target (`market`) query/gallery "
        "scored with the global (POOL-5) feature of `last.pt`. Parameters: the paper's k1 = 20, "
        f"k2 = 6, lambda = 0.3 and AQE K = {AQE.k}, alpha = {AQE.alpha:g} (cosine on L2-normalised features), "
        "fixed before the run; and \"chosen on source\": the best mAP on the *source* domain's (`duke`) "
        f"query/gallery with the same model, over k1 in {K1_GRID}, k2 in {K2_GRID}, lambda in {LAMBDA_GRID} "
        f"and AQE K in {AQE_K_GRID} (alpha {AQE.alpha:g}), then applied unchanged to the target. Nothing was "
        "chosen on the target's labels. Mean ± 95% t-interval over the seeds (percent); Δ mAP is the "
        "paired difference to plain Euclidean on the same model. Time: the whole scoring (distances, "
        "re-ranking, metrics). Peak numpy: tracemalloc's peak during the scoring; peak RSS growth: the "
        "process's peak resident set above its level before (includes FAISS's own buffers, but pages "
        "numpy reuses from earlier variants do not show up again).",
        "",
        *quality,
        "",
        "## The largest problem",
        "",
        f"Random clustered {args.dim}-d features (10 images per identity, Q = N / 8, like MSMT17's 11,659 "
        "queries to 82,161 gallery images). The kNN variant is run at every size; the dense one only up "
        f"to N = {args.dense_limit:,}. \"dense needs\" is **computed, not measured**: "
        "8 bytes x (Q·G + Q² + G²) for its float64 input matrices plus 8 bytes x (Q + G)² for the "
        "matrix it assembles; above 24 GiB (this machine's memory) it cannot run here, and it was not "
        "run to find out. \"same metrics\": dense and kNN mAP agree to 1e-6 where both ran. "
        "The plot (`rerank_memory.png`) draws the kNN variant's measured peak (the larger of its two "
        "peak columns) and the dense one's computed need against N.",
        "",
        *size,
        "",
        "![memory against problem size](rerank_memory.png)",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
