"""A multi-seed study of the method's parts on generated data, with paired confidence intervals.

Generates one pair of domains with ``reid-synth`` (source ``duke``; target ``market`` with the
exact camera-style oracle standing in for StarGAN), then trains a small model (resnet18, no
ImageNet weights) for every variant and seed, and evaluates each run's ``last.pt`` on the
target's query/gallery. Nothing is chosen on target labels: the recipe is fixed up front, the
checkpoint is the last epoch, and the held-out source identities (``--val-ids``) only show
whether training has stopped improving (the curve in the report).

Variants (``VARIANTS``): untrained network; source only (global branch, CE + the source
triplet); + camera-style L_D (global branch, target images join the triplet); + local BiLSTM
branch (source only); the full method (Eq. 4); the full method with a separate source triplet
(``--source-triplet-weight 1``, the other reading of the paper's Section 2.4). Test features
for runs with the local branch: POOL-5 as trained (Euclidean), L2-normalised POOL-5, and global
+ local concatenated.

Resumable by cell: each (variant, seed) writes ``WORK/cells/<variant>__s<seed>.json`` when it
finishes, and a rerun skips the cells already written, then rewrites the report from all cells
found. Cells run seed by seed, so a run stopped early leaves the variants with (nearly) the
same seeds. Several processes may share one ``--work`` (each claims a cell before running it),
which on a machine shared with other jobs gets more done than one process with more threads.

    python benchmarks/train_study.py --work /tmp/study            # the whole study
    python benchmarks/train_study.py --work /tmp/study &           # ... in two processes
    python benchmarks/train_study.py --work /tmp/study --report   # only rewrite the report

Needs the ``bench`` extra (``pip install '.[bench]'``: scipy for the t quantile, matplotlib
for the plot). Writes ``benchmarks/results/train_study.md`` and ``train_study.png``. The text under "## What
the numbers show" in an existing report is kept when the tables are rewritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from training.checkpoint import load_checkpoint
from training.core.datasets import load_dataset
from training.core.evaluation import evaluate_features
from training.core.fileio import atomic_write_bytes
from training.features import extract_features, metrics_record
from training.model import ReIDModel
from training.runlog import read_log
from training.synth.writer import SynthConfig, write_domains
from training.trainer import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results" / "train_study.md"
FINDINGS = "## What the numbers show"


class Variant(NamedTuple):
    key: str  # file-name safe
    name: str
    mode: str | None  # None: the untrained network
    use_local: bool = True
    overrides: dict[str, Any] = {}  # TrainConfig fields changed from the study's recipe


VARIANTS = (
    Variant("untrained", "untrained network", None),
    Variant("source", "source only (global)", "source-only", False),
    Variant("camstyle", "+ camera-style L_D (global)", "uda", False),
    Variant("local", "+ local BiLSTM branch (source only)", "source-only", True),
    Variant("full", "full method, Eq. 4", "uda", True),
    Variant("full_stw1", "full method + source triplet (w = 1)", "uda", True, {"source_triplet_weight": 1.0}),
)
#: Follow-up variants, run only when named with --variants.
EXTRA_VARIANTS = (
    Variant("full_theta1", "full method, theta = 1", "uda", True, {"theta": 1.0}),
    Variant("full_t8", "full method, 8 target images per step", "uda", True, {"target_batch": 8}),
    Variant("camstyle_theta1", "+ camera-style L_D (global), theta = 1", "uda", False, {"theta": 1.0}),
)
REFERENCE = "source"
#: Further paired comparisons (variant, against): what the local branch adds with and without
#: camera-style L_D, and the two readings of Section 2.4.
COMPARISONS = (("full", "camstyle"), ("local", "source"), ("full", "full_stw1"))
FEATURES = ("pool5", "pool5_l2", "global+local")


def make_data(root: Path, args: argparse.Namespace) -> None:
    """Source duke (no camera-style images needed) and target market with the oracle."""
    done = root / "done.json"
    if done.is_file():
        return
    write_domains(root, [
        SynthConfig(domain=domain, seed=args.data_seed, ids=args.ids, images_per_id=args.images_per_id,
                    size=(args.height, args.width), camstyle=(domain == "market"),
                    distractors=args.distractors, junk=args.junk)
        for domain in ("market", "duke")
    ], workers=args.threads)
    done.write_text(json.dumps({"ids": args.ids, "images_per_id": args.images_per_id}))


def recipe(data: Path, out: Path, args: argparse.Namespace, variant: Variant, seed: int) -> TrainConfig:
    base = TrainConfig(
        source=str(data / "duke"), target=str(data / "market"), camstyle=str(data / "market" / "camstyle"),
        out=str(out), mode=variant.mode or "uda", use_local=variant.use_local, backbone="resnet18",
        height=args.height, width=args.width, last_stride=1, pretrained="none", epochs=args.epochs,
        max_steps_per_epoch=args.steps_per_epoch, p=args.p, k=args.k, target_batch=args.target_batch,
        eval_every=args.eval_every, val_ids=args.val_ids, seed=seed, device="cpu", workers=0, log_every=1000,
    )
    return dataclasses.replace(base, **variant.overrides)


def target_metrics(model: ReIDModel, data: Path) -> dict[str, dict[str, float]]:
    """Target query/gallery metrics for every test feature the model has."""
    target = load_dataset(data / "market")
    paths = [s.path for s in target.query + target.gallery]
    nq = len(target.query)
    labels = [np.array([s.pid for s in target.query]), np.array([s.pid for s in target.gallery]),
              np.array([s.camid for s in target.query]), np.array([s.camid for s in target.gallery])]
    pool5 = extract_features(model, paths, embedding="global")
    features = {"pool5": pool5, "pool5_l2": pool5 / np.linalg.norm(pool5, axis=1, keepdims=True).clip(1e-12)}
    if model.config.use_local:
        features["global+local"] = extract_features(model, paths, embedding="global+local")
    return {
        name: metrics_record(evaluate_features(f[:nq], f[nq:], *labels)) for name, f in features.items()
    }


def run_cell(variant: Variant, seed: int, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    out = work / "runs" / f"{variant.key}__s{seed}"
    config = recipe(data, out, args, variant, seed)
    cell: dict[str, Any] = {"variant": variant.key, "seed": seed, "config": config.to_dict()}
    if variant.mode is None:
        torch.manual_seed(seed)  # the initial weights of every trained variant with this seed
        model = ReIDModel(config.model_config(load_dataset(data / "duke").num_train_pids - args.val_ids))
        cell["target"] = target_metrics(model.eval(), data)
    else:
        if (out / "last.pt").exists():  # a cell killed mid-training continues where it stopped
            config = TrainConfig.from_dict({**load_checkpoint(out / "last.pt").train_config})
            train(config, resume=True)
        else:
            train(config)
        cell["target"] = target_metrics(load_checkpoint(out / "last.pt").build_model(), data)
        records = read_log(out / "log.jsonl")
        cell["source_val_curve"] = [(r["epoch"], r["mAP"]) for r in records if r["kind"] == "source_val"]
        cell["target_curve"] = [(r["epoch"], r["mAP"]) for r in records if r["kind"] == "target_report"]
        cell["steps"] = sum(r["steps"] for r in records if r["kind"] == "epoch")
        best = load_checkpoint(out / "best.pt") if (out / "best.pt").exists() else None
        if best is not None:
            cell["best_val_epoch"] = best.epoch
            cell["best_val_target_mAP"] = target_metrics(best.build_model(), data)["pool5"]["mAP"]
        (out / "best.pt").unlink(missing_ok=True)  # its numbers are kept; the weights are not needed
        if variant.key not in args.keep_weights:
            (out / "last.pt").unlink(missing_ok=True)
    cell["seconds"] = time.perf_counter() - started
    cell["load1"] = os.getloadavg()[0]  # how busy the machine was when the cell ended
    return cell


# ---------------------------------------------------------------------------------------------
# Statistics and the report


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and the two ends of its 95 % t-interval (nan ends for fewer than 2 values)."""
    from scipy import stats

    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def load_cells(work: Path) -> dict[str, dict[int, dict[str, Any]]]:
    cells: dict[str, dict[int, dict[str, Any]]] = {}
    for file in sorted((work / "cells").glob("*.json")):
        cell = json.loads(file.read_text())
        cells.setdefault(cell["variant"], {})[cell["seed"]] = cell
    return cells


def load_text(cells: dict[str, dict[int, dict[str, Any]]]) -> str:
    """The machine's 1-minute load average as the cells ended (older cells did not record it)."""
    loads = [c["load1"] for runs in cells.values() for c in runs.values() if "load1" in c]
    if not loads:
        return "the machine's load was not recorded"
    return (f"1-minute load average {min(loads):.1f} to {max(loads):.1f} (median {float(np.median(loads)):.1f}) "
            "as cells ended, so times per cell compare only at similar load")


def pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def write_report(work: Path, args: argparse.Namespace, variants: tuple[Variant, ...], planned: int,
                 wall: float | None) -> None:
    cells = load_cells(work)
    present = [v for v in variants if v.key in cells]
    done = sum(len(cells[v.key]) for v in present)
    seeds_of = {v.key: sorted(cells[v.key]) for v in present}
    any_cell = next((c for v in present for c in cells[v.key].values() if "steps" in c), None)
    lines = ["# Training study on generated data: several seeds, paired differences", ""]
    status = (f"complete: all {planned} cells" if done >= planned else
              f"**cut short: {done} of {planned} cells finished**; the script is resumable and a rerun "
              "with the same `--work` continues")
    lines += [
        f"`python benchmarks/train_study.py --work WORK` ({status}). Seeds per variant: "
        + ", ".join(f"{v.key} {len(seeds_of[v.key])}" for v in present) + ". "
        + (f"Wall time of the last invocation {wall / 60:.0f} min; " if wall else "")
        + f"{args.threads} torch thread(s) per process on {os.cpu_count()} cores; "
        + load_text(cells) + ".",
        "",
        f"Data (one generated pair, data seed {args.data_seed}, the same for every cell): `reid-synth` with "
        f"{args.ids} identities per domain (half train, half test), {args.images_per_id} images each, "
        f"{args.height}x{args.width} crops, {args.distractors} distractors and {args.junk} junk in each gallery. "
        f"Source `duke` (8 cameras), {args.val_ids} of its training identities held out as a source "
        "query/gallery split; target `market` (6 cameras) with the exact camera-style oracle "
        "(every training image under all 6 cameras, its own included) standing in for StarGAN.",
        f"Recipe (fixed before any run, not tuned on the target): resnet18, last stride 1, random initial "
        f"weights (no ImageNet weights on this machine), Adam 3e-4, weight decay 5e-4, margin 0.5, theta 0.3, "
        f"dropout 0.5, {args.epochs} epochs x {args.steps_per_epoch} steps"
        + (f" ({any_cell['steps']} steps)" if any_cell else "")
        + f", P x K = {args.p} x {args.k} source images and, in UDA variants, {args.target_batch} target "
        "images x (1 + 6) camera-style images per step. The seed sets the initial weights, batches, "
        "augmentation and dropout. Checkpoint: `last.pt`. Evaluation: target query/gallery, Market-1501 "
        "protocol, Euclidean distance.",
        "",
        "![target mAP per seed and the held-out source curve](train_study.png)",
        "",
        "## Target accuracy (POOL-5 feature, as in the paper)",
        "",
        "| variant | seeds | target mAP (mean ± sd) | rank-1 (mean ± sd) | mINP |",
        "|---|---:|---:|---:|---:|",
    ]
    for v in present:
        runs = [cells[v.key][s]["target"]["pool5"] for s in seeds_of[v.key]]
        m = np.array([[r["mAP"], r["rank1"], r["mINP"]] for r in runs])
        sd = m.std(axis=0, ddof=1) if len(m) > 1 else np.full(3, math.nan)
        lines.append(f"| {v.name} | {len(runs)} | {pct(m[:, 0].mean())} ± {pct(sd[0])} | "
                     f"{pct(m[:, 1].mean())} ± {pct(sd[1])} | {pct(m[:, 2].mean())} |")
    nq = next(iter(next(iter(cells.values())).values()))["target"]["pool5"]["num_valid_queries"] if cells else 0
    lines += ["", f"Points are percentages; {nq} target queries with a true match.", ""]

    lines += ["## Paired differences against source only", "",
              "Per seed: variant minus source only, the same seed (same initial backbone weights, "
              "source batches drawn by the same sampler seed). Mean and 95 % t-interval over seeds; an "
              "interval that excludes 0 is a difference these seeds resolve.", "",
              "| variant | pairs | Δ mAP [95 % CI] | Δ rank-1 [95 % CI] |", "|---|---:|---:|---:|"]
    diffs: dict[str, list[float]] = {}
    if REFERENCE in cells:
        for v in present:
            if v.key == REFERENCE:
                continue
            common = sorted(set(seeds_of[v.key]) & set(seeds_of[REFERENCE]))
            if not common:
                continue
            d_map = [cells[v.key][s]["target"]["pool5"]["mAP"] - cells[REFERENCE][s]["target"]["pool5"]["mAP"]
                     for s in common]
            d_r1 = [cells[v.key][s]["target"]["pool5"]["rank1"] - cells[REFERENCE][s]["target"]["pool5"]["rank1"]
                    for s in common]
            diffs[v.key] = d_map
            a, b = t_interval(d_map), t_interval(d_r1)
            lines.append(f"| {v.name} | {len(common)} | {100 * a[0]:+.1f} [{100 * a[1]:+.1f}, {100 * a[2]:+.1f}] | "
                         f"{100 * b[0]:+.1f} [{100 * b[1]:+.1f}, {100 * b[2]:+.1f}] |")

    lines += ["", "Other pairs, the same way (first minus second, same seeds):", "",
              "| comparison | pairs | Δ mAP [95 % CI] | Δ rank-1 [95 % CI] |", "|---|---:|---:|---:|"]
    names = {v.key: v.name for v in variants}
    for a_key, b_key in COMPARISONS:
        if a_key not in cells or b_key not in cells:
            continue
        common = sorted(set(cells[a_key]) & set(cells[b_key]))
        if not common:
            continue
        pair = [[cells[a_key][s]["target"]["pool5"][m] - cells[b_key][s]["target"]["pool5"][m] for s in common]
                for m in ("mAP", "rank1")]
        a, b = t_interval(pair[0]), t_interval(pair[1])
        lines.append(f"| {names.get(a_key, a_key)} − {names.get(b_key, b_key)} | {len(common)} | "
                     f"{100 * a[0]:+.1f} [{100 * a[1]:+.1f}, {100 * a[2]:+.1f}] | "
                     f"{100 * b[0]:+.1f} [{100 * b[1]:+.1f}, {100 * b[2]:+.1f}] |")

    lines += ["", "## Test features", "",
              "Target mAP of the same runs with three test features (mean ± sd), and the paired difference "
              "of each against POOL-5 as trained.", "",
              "| variant | POOL-5 | L2-normalised POOL-5 | global + local | Δ L2 − POOL-5 [95 % CI] | "
              "Δ global+local − POOL-5 [95 % CI] |", "|---|---:|---:|---:|---:|---:|"]
    for v in present:
        if not v.use_local or v.mode is None:
            continue
        runs = [cells[v.key][s]["target"] for s in seeds_of[v.key]]
        cols = []
        for f in FEATURES:
            vals = [r[f]["mAP"] for r in runs]
            cols.append(f"{pct(float(np.mean(vals)))} ± {pct(float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan)}")
        for f in FEATURES[1:]:
            a = t_interval([r[f]["mAP"] - r["pool5"]["mAP"] for r in runs])
            cols.append(f"{100 * a[0]:+.1f} [{100 * a[1]:+.1f}, {100 * a[2]:+.1f}]")
        lines.append(f"| {v.name} | " + " | ".join(cols) + " |")

    lines += ["", "## Has training stopped improving? Held-out source identities", "",
              f"mAP on the {args.val_ids} held-out source identities (their own query/gallery) at each "
              "evaluated epoch (`e<epoch> <mAP>`), mean over seeds. The epoch `best.pt` would have been "
              "under this rule, per seed, and the target mAP of that checkpoint against `last.pt` "
              "(target numbers reported only; they chose nothing).",
              "", "| variant | held-out source mAP by epoch | best epoch per seed | target mAP: best.pt / last.pt |",
              "|---|---|---|---:|"]
    for v in present:
        if v.mode is None:
            continue
        runs = [cells[v.key][s] for s in seeds_of[v.key]]
        epochs = [e for e, _ in runs[0]["source_val_curve"]]
        curve = np.mean([[m for _, m in c["source_val_curve"]] for c in runs], axis=0)
        best_epochs = [c.get("best_val_epoch") for c in runs]
        best_t = np.mean([c.get("best_val_target_mAP", math.nan) for c in runs])
        last_t = np.mean([c["target"]["pool5"]["mAP"] for c in runs])
        lines.append(f"| {v.name} | " + ", ".join(f"e{e} {pct(x)}" for e, x in zip(epochs, curve))
                     + f" | {', '.join(str(e) for e in best_epochs)} | "
                     f"{pct(best_t)} / {pct(last_t)} |")

    lines += ["", "## Per-seed target mAP (POOL-5)", "", "| variant | " + " | ".join(
        f"seed {s}" for s in sorted({s for v in present for s in seeds_of[v.key]})) + " | time per cell |",
        "|---|" + "---:|" * (len({s for v in present for s in seeds_of[v.key]}) + 1)]
    all_seeds = sorted({s for v in present for s in seeds_of[v.key]})
    for v in present:
        row = [pct(cells[v.key][s]["target"]["pool5"]["mAP"]) if s in cells[v.key] else "" for s in all_seeds]
        secs = np.mean([c["seconds"] for c in cells[v.key].values()])
        lines.append(f"| {v.name} | " + " | ".join(row) + f" | {secs:.0f} s |")

    findings = ""
    if args.out.is_file() and FINDINGS in args.out.read_text():
        findings = args.out.read_text().split(FINDINGS, 1)[1]
    lines += ["", FINDINGS + (findings.rstrip("\n") if findings else "\n\n(to be written from the tables above)"), ""]
    atomic_write_bytes(args.out, "\n".join(lines).encode())
    plot(cells, present, seeds_of, args.out.with_suffix(".png"))


def plot(cells: dict, present: list[Variant], seeds_of: dict[str, list[int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for i, v in enumerate(present):
        vals = [100 * cells[v.key][s]["target"]["pool5"]["mAP"] for s in seeds_of[v.key]]
        left.scatter([i] * len(vals), vals, color="0.6", s=14, zorder=2)
        mean, lo, hi = t_interval(vals)
        err = None if math.isnan(lo) else [[mean - lo], [hi - mean]]
        left.errorbar([i + 0.15], [mean], yerr=err, fmt="o", color="C0", capsize=4, zorder=3)
    left.set_xticks(range(len(present)), [v.name.replace(" (", "\n(") for v in present], fontsize=7, rotation=20)
    left.set_ylabel("target mAP (%), POOL-5")
    left.set_title("target mAP: seeds (grey), mean and 95 % t-interval (blue)", fontsize=9)
    left.grid(axis="y", alpha=0.3)
    for v, colour in ((v, f"C{i}") for i, v in enumerate(present) if v.mode is not None):
        for s in seeds_of[v.key]:
            curve = cells[v.key][s]["source_val_curve"]
            right.plot([e for e, _ in curve], [100 * m for _, m in curve], color=colour, alpha=0.35,
                       label=v.name if s == seeds_of[v.key][0] else None)
    right.set_xlabel("epoch")
    right.set_ylabel("held-out source mAP (%)")
    right.set_title("held-out source identities, every seed", fontsize=9)
    right.legend(fontsize=6)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def claim(path: Path) -> bool:
    """Take a cell for this process, so several processes can share one --work.

    A claim is a file holding the claimer's pid; one whose process is gone (a killed run) is
    taken over.
    """
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(path.read_text() or 0)
                os.kill(owner, 0)
                return owner == os.getpid()
            except (ProcessLookupError, ValueError):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except FileNotFoundError:
                continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="data, runs and finished cells (keep it to resume)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--variants", nargs="*", default=[v.key for v in VARIANTS],
                        help=f"variant keys, from {[v.key for v in VARIANTS + EXTRA_VARIANTS]}")
    parser.add_argument("--ids", type=int, default=120, help="identities per domain (train + test)")
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--distractors", type=int, default=40)
    parser.add_argument("--junk", type=int, default=10)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=16,
                        help="long enough that source only has stopped improving on its held-out identities")
    parser.add_argument("--steps-per-epoch", type=int, default=12)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--val-ids", type=int, default=12)
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--target-batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is fastest on a machine shared with other jobs")
    parser.add_argument("--keep-weights", nargs="*", default=[], metavar="VARIANT",
                        help="keep these variants' last.pt under WORK/runs (e.g. to measure re-ranking on them)")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the finished cells")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    by_key = {v.key: v for v in VARIANTS + EXTRA_VARIANTS}
    unknown = [k for k in args.variants if k not in by_key]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {sorted(by_key)}")
    variants = tuple(by_key[k] for k in args.variants)
    planned = len(variants) * args.seeds
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    (args.work / "cells").mkdir(parents=True, exist_ok=True)
    if not args.report:
        data = args.work / "data"
        make_data(data, args)
        for seed, variant in [(seed, variant) for seed in range(args.seeds) for variant in variants]:
            file = args.work / "cells" / f"{variant.key}__s{seed}.json"
            if file.is_file() or not claim(file.with_suffix(".claim")):
                continue
            cell = run_cell(variant, seed, data, args.work, args)
            atomic_write_bytes(file, json.dumps(cell).encode())
            print(f"{variant.key} seed {seed}: target mAP {100 * cell['target']['pool5']['mAP']:.1f}% "
                  f"({cell['seconds']:.0f} s)", file=sys.stderr, flush=True)
            try:  # a report that cannot be drawn must not stop the study; the cells are kept
                write_report(args.work, args, variants, planned, time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001
                print(f"report not written: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    write_report(args.work, args, variants, planned, None if args.report else time.perf_counter() - started)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
