"""The paper's ablation on generated data: does each part of the method help on the target?

Generates two domains with ``reid-synth`` (source ``duke``, target ``market``, with the exact
camera-style oracle standing in for StarGAN), then trains a small model five ways with the
same seed, steps and batches and evaluates each on the target's query/gallery:

1. untrained network (random weights, no training);
2. source only: CE + triplet on the source, global branch only;
3. + camera-style images: adds L_D over target and camera-style images (global branch);
4. + local BiLSTM branch: source only, both branches;
5. full method: both branches and L_D.

Also measures training throughput (images/s) for the default configuration (resnet50,
256x128) and the small one used here, a few steps each. Writes
``benchmarks/results/train_ablation.md``.

    python benchmarks/train_ablation.py          # about 15 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

from training.checkpoint import load_checkpoint
from training.core.datasets import load_dataset
from training.features import evaluate_model, metrics_record
from training.model import ReIDModel
from training.synth.writer import SynthConfig, write_domains
from training.trainer import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results" / "train_ablation.md"


class Variant(NamedTuple):
    name: str
    mode: str
    use_local: bool


VARIANTS = (
    Variant("source only (global)", "source-only", False),
    Variant("+ camera-style images (global + L_D)", "uda", False),
    Variant("+ local BiLSTM branch (source only)", "source-only", True),
    Variant("full method (global + local + L_D)", "uda", True),
)


def small_config(data: Path, out: Path, args: argparse.Namespace, variant: Variant) -> TrainConfig:
    return TrainConfig(
        source=str(data / "duke"), target=str(data / "market"), camstyle=str(data / "market" / "camstyle"),
        out=str(out), mode=variant.mode, use_local=variant.use_local, backbone=args.backbone,
        height=args.height, width=args.width, last_stride=1, pretrained="none", epochs=args.epochs,
        p=args.p, k=args.k, target_batch=args.target_batch, eval_every=args.epochs, seed=args.seed,
        device="cpu", workers=0, log_every=1000,
    )


def untrained_metrics(data: Path, args: argparse.Namespace) -> dict:
    config = small_config(data, Path("unused"), args, VARIANTS[-1])
    torch.manual_seed(args.seed)  # the same initial weights every trained variant starts from
    model = ReIDModel(config.model_config(load_dataset(data / "duke").num_train_pids))
    return metrics_record(evaluate_model(model, load_dataset(data / "market")))


def throughput(label: str, config: TrainConfig) -> dict:
    """images/s of a short run (its first step, which pays for warm-up, included)."""
    train(config)
    records = [json.loads(line) for line in (Path(config.out) / "log.jsonl").read_text().splitlines()]
    steps = config.max_steps_per_epoch
    rate = [r for r in records if r["kind"] == "epoch"][-1]["images_per_s"]
    per_step = config.p * config.k + config.target_batch * 6
    return {"config": label, "images_per_step": per_step, "steps": steps * config.epochs, "images_per_s": rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=60, help="identities per domain (train + test)")
    parser.add_argument("--images-per-id", type=int, default=8)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--target-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "synth"
        write_domains(data, [
            SynthConfig(domain=d, seed=args.seed, ids=args.ids, images_per_id=args.images_per_id,
                        size=(args.height * 2, args.width * 2), camstyle=(d == "market"))
            for d in ("market", "duke")
        ], workers=2)
        rows = [("untrained network", untrained_metrics(data, args), 0.0)]
        print(f"untrained: mAP {100 * rows[0][1]['mAP']:.1f}%", file=sys.stderr)
        for index, variant in enumerate(VARIANTS):
            t0 = time.perf_counter()
            result = train(small_config(data, work / f"run{index}", args, variant))
            best = load_checkpoint(result.last).metrics["eval"]
            rows.append((variant.name, best, time.perf_counter() - t0))
            print(f"{variant.name}: mAP {100 * best['mAP']:.1f}% ({rows[-1][2]:.0f} s)", file=sys.stderr)

        small = small_config(data, work / "speed-small", args, VARIANTS[-1])
        default = TrainConfig(
            source=small.source, target=small.target, camstyle=small.camstyle, out=str(work / "speed-default"),
            pretrained="none", epochs=1, p=4, k=4, target_batch=2, max_steps_per_epoch=3, eval_every=0,
            device="cpu", workers=0,
        )
        small = dataclasses.replace(small, epochs=1, max_steps_per_epoch=10, eval_every=0)
        speeds = [
            throughput(f"default: resnet50 256x128, last stride 2, P x K = 4 x 4, T = 2", default),
            throughput(f"small: {args.backbone} {args.height}x{args.width}, last stride 1, "
                                   f"P x K = {args.p} x {args.k}, T = {args.target_batch}", small),
        ]
        num_train = len(load_dataset(data / "duke").train)

    total = time.perf_counter() - started
    write_report(args, rows, speeds, num_train, total)
    print(f"wrote {args.out} ({total / 60:.1f} min)")
    return 0


def write_report(args: argparse.Namespace, rows: list, speeds: list, num_train: int, total: float) -> None:
    steps = args.epochs * max(1, num_train // (args.p * args.k))
    lines = [
        "# Training ablation on generated data",
        "",
        f"`python benchmarks/train_ablation.py` (seed {args.seed}, {args.threads} threads, whole run "
        f"{total / 60:.1f} min on the shared 2-core machine).",
        "",
        f"Data: `reid-synth` with {args.ids} identities per domain, {args.images_per_id} images each, "
        f"source `duke` ({num_train} training images), target `market` with the exact camera-style oracle "
        "(`--camstyle`) standing in for StarGAN. Crops drawn at twice the input size.",
        f"Model: {args.backbone}, input {args.height}x{args.width}, last stride 1, random initial weights "
        f"(no ImageNet weights on this machine). Recipe: Adam 3e-4, margin 0.5, theta 0.3, dropout 0.5, "
        f"{args.epochs} epochs of {steps // args.epochs} steps ({steps} steps), P x K = {args.p} x {args.k} "
        f"source images, T = {args.target_batch} target images x 6 cameras per step in UDA mode. "
        "Evaluation: target query/gallery, Market-1501 protocol, POOL-5 (global) feature, Euclidean.",
        "",
        "| variant | target mAP | rank-1 | rank-5 | mINP | train time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m, seconds in rows:
        lines.append(f"| {name} | {100 * m['mAP']:.1f} | {100 * m['rank1']:.1f} | {100 * m['rank5']:.1f} | "
                     f"{100 * m['mINP']:.1f} | {seconds:.0f} s |")
    lines += ["", "## Training throughput (CPU)", "", "| configuration | images/step | steps | images/s |",
              "|---|---:|---:|---:|"]
    for s in speeds:
        lines.append(f"| {s['config']} | {s['images_per_step']} | {s['steps']} | {s['images_per_s']:.1f} |")
    lines += ["", "images/s counts source and target images (originals and camera-style copies) through "
              "forward, backward and the Adam step, over the whole epoch including its first step. "
              "Other jobs share the machine, so times and rates vary with its load at the moment of "
              "measuring.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
