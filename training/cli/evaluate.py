"""``reid-eval``: retrieval metrics of a checkpoint on a data set's query/gallery split."""

from __future__ import annotations

import argparse
import json

from training.checkpoint import describe_selection, load_checkpoint
from training.core.datasets import load_dataset
from training.distributed import resolve_device
from training.core.cliargs import ArgumentParser, add_device_argument, positive_int
from training.core.errors import ReIDError, run_cli
from training.features import evaluate_model, metrics_record
from training.core.rerank import add_rerank_arguments, describe_rerank, rerank_options, rerank_record
from training.model import EMBEDDING_KINDS

PROG = "reid-eval"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Evaluate a reid-train checkpoint under the Market-1501 protocol (single query, same "
            "identity and camera removed, junk ignored): mAP, CMC rank-1/5/10 and mINP."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="a .pt file written by reid-train (last.pt, or best.pt from a --val-ids run)")
    parser.add_argument("--data", required=True, help="data set root with query/ and bounding_box_test/")
    parser.add_argument("--embedding", choices=EMBEDDING_KINDS, default="global",
                        help="search feature: global = POOL-5 (the paper's), global+local adds the BiLSTM (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward (default: %(default)s)")
    add_device_argument(parser, "auto", "the model")
    parser.add_argument("--workers", type=int, default=0, help="image decoding processes (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_rerank_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        if args.workers < 0:
            raise ReIDError(f"--workers must be >= 0, got {args.workers}")
        rerank, aqe = rerank_options(args)
        checkpoint = load_checkpoint(args.checkpoint)
        dataset = load_dataset(args.data)
        device = resolve_device(args.device)
        model = checkpoint.build_model().to(device)
        result = evaluate_model(
            model, dataset, embedding=args.embedding, batch_size=args.batch_size, device=device,
            workers=args.workers, progress=not args.json, rerank=rerank, aqe=aqe,
        )
        metrics = {
            **metrics_record(result),
            "embedding": args.embedding, "checkpoint": str(args.checkpoint), "epoch": checkpoint.epoch,
            "chosen_by": describe_selection(checkpoint), "data": str(args.data), **rerank_record(rerank, aqe),
        }
        if args.json:
            print(json.dumps(metrics))
        else:
            print(f"{args.checkpoint} (epoch {checkpoint.epoch}) on {args.data}, {args.embedding} embedding"
                  f"{describe_rerank(rerank, aqe)}")
            print(f"checkpoint chosen by: {describe_selection(checkpoint)}")
            print(result.summary())
        return 0

    return run_cli(PROG, body)
