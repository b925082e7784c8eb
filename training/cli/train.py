"""``reid-train``: train the dual-branch model on a labelled source and an unlabelled target domain."""

from __future__ import annotations

import argparse
import os
import logging

from training.core.cliargs import ArgumentParser, add_device_argument
from training.core.errors import ReIDError, run_cli
from training.model import BACKBONES, EMBEDDING_KINDS
from training.trainer import MODES, TrainConfig, resume_config, train

PROG = "reid-train"

# argparse dest -> TrainConfig field, for options whose names differ
_RENAMED = {"no_local": "use_local", "no_camstyle": "use_camstyle"}


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(source="", out="", eval_every=0, mode="source-only")  # the defaults
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Train the ResNet + BiLSTM ReID model with the paper's Eq. 4: cross-entropy on the labelled "
            "source plus theta x the batch-hard triplet L_D over source, target and camera-style images "
            "(--mode uda; the source alone in source-only mode). Writes OUT/last.pt every epoch, "
            "OUT/best.pt only with --val-ids (chosen on held-out source identities, never on target "
            "labels) and OUT/log.jsonl. "
            "Under torchrun --nproc_per_node N it trains with DistributedDataParallel."
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument("--source", help="labelled source data set root (Market-1501 / DukeMTMC-reID layout)")
    data.add_argument("--target", help="target data set root: bounding_box_train unlabelled, query/gallery for evaluation")
    data.add_argument("--camstyle", help="camera-style images of the target training set: DIR/<stem>_fake_<j>.jpg")
    data.add_argument("--out", help="output folder for last.pt, best.pt (with --val-ids) and log.jsonl")
    data.add_argument("--resume", action="store_true",
                      help="continue the run in OUT from OUT/last.pt (its recipe, epoch count, optimiser, RNG)")

    method = parser.add_argument_group("method")
    method.add_argument("--mode", choices=MODES, default="uda",
                        help="uda: L_D over source, target and camera-style images; source-only: L_D over the source alone")
    method.add_argument("--no-local", action="store_true", help="no BiLSTM local branch")
    method.add_argument("--no-camstyle", action="store_true", help="target images only, each its own class")

    model = parser.add_argument_group("model")
    model.add_argument("--backbone", choices=BACKBONES, default=d.backbone, help="default: %(default)s")
    model.add_argument("--height", type=int, default=d.height, help="input height (default: %(default)s)")
    model.add_argument("--width", type=int, default=d.width, help="input width (default: %(default)s)")
    model.add_argument("--last-stride", type=int, choices=(1, 2), default=d.last_stride, help="default: %(default)s")
    model.add_argument("--dropout", type=float, default=d.dropout, help="before the classifiers (default: %(default)s)")
    model.add_argument("--pretrained", default=d.pretrained,
                       help="backbone weights: imagenet (torchvision cache), a file path, or none (default: %(default)s)")

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--epochs", type=int, default=d.epochs, help="default: %(default)s")
    recipe.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default: %(default)s)")
    recipe.add_argument("--weight-decay", type=float, default=d.weight_decay, help="default: %(default)s")
    recipe.add_argument("--margin", type=float, default=d.margin, help="triplet margin (default: %(default)s)")
    recipe.add_argument("--theta", type=float, default=d.theta, help="weight of L_D (default: %(default)s)")
    recipe.add_argument("--source-triplet-weight", type=float, default=d.source_triplet_weight,
                        help="weight of a separate source-only triplet on top of Eq. 4; 0 is Eq. 4, 1 the "
                             "other reading of the paper's Section 2.4 (default: %(default)s)")
    recipe.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="default: %(default)s")
    # not --p/--k: torchrun's own parser would read "--p" as an abbreviation of its options
    recipe.add_argument("--ids-per-batch", dest="p", metavar="P", type=int, default=d.p,
                        help="P: source identities per batch (default: %(default)s)")
    recipe.add_argument("--images-per-id", dest="k", metavar="K", type=int, default=d.k,
                        help="K: images per source identity (default: %(default)s)")
    recipe.add_argument("--target-batch", type=int, default=d.target_batch,
                        help="target images per batch, each with all its camera-style images (default: %(default)s)")
    recipe.add_argument("--max-steps-per-epoch", type=int, default=None,
                        help="cap the steps of an epoch (default: about one pass over the source images)")
    recipe.add_argument("--seed", type=int, default=d.seed, help="default: %(default)s")

    run = parser.add_argument_group("evaluation and execution")
    run.add_argument("--eval-every", type=int, default=5,
                     help="evaluate every N epochs and after the last: the held-out source identities (--val-ids) "
                          "and, for the report only, the target query/gallery; 0 = never (default: %(default)s)")
    run.add_argument("--val-ids", type=int, default=d.val_ids,
                     help="hold out N source identities as a query/gallery split and keep OUT/best.pt by their "
                          "mAP; 0 = no best.pt, use last.pt (default: %(default)s)")
    run.add_argument("--eval-embedding", choices=EMBEDDING_KINDS, default=d.eval_embedding, help="default: %(default)s")
    run.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size, help="default: %(default)s")
    add_device_argument(run, d.device, "training (mixed precision on cuda)")
    run.add_argument("--workers", type=int, default=d.workers, help="image decoding processes (default: %(default)s)")
    run.add_argument("--log-every", type=int, default=d.log_every, help="steps between log.jsonl step records (default: %(default)s)")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A fresh run's recipe from the command line, or the stored one with --resume."""
    if not args.out:
        raise ReIDError("--out DIR is required (where last.pt and log.jsonl go)")
    if args.resume:
        return resume_config(args.out, device=args.device, workers=args.workers)
    if not args.source:
        raise ReIDError("--source DIR is required (the labelled source data set root)")
    values = {k: v for k, v in vars(args).items() if k != "resume"}
    for flag, field in _RENAMED.items():
        values[field] = not values.pop(flag)
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
        logging.basicConfig(level=logging.INFO if main_process else logging.WARNING, format=f"{PROG}: %(message)s")
        config = config_from_args(args)
        result = train(config, resume=args.resume)
        if not main_process:
            return 0
        print(f"wrote {result.last} after {result.epochs} epochs")
        if result.best is not None:
            print(f"best held-out source mAP {100 * result.best_val_mAP:.1f}%: {result.best}")
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":  # for torchrun: python -m torch.distributed.run ... -m training.cli.train
    raise SystemExit(main())
