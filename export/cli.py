"""``reid-export``: a reid-train checkpoint -> a checked ONNX file (fp32, or int8 with --quantize)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tqdm import tqdm

from export.contract import EMBEDDING_KINDS
from export.exporter import DEFAULT_OPSET, export_model
from export.quantize import METHODS, QuantizeOptions, find_images, quantize_model
from training.checkpoint import load_checkpoint
from training.core.cliargs import ArgumentParser, positive_int
from training.core.errors import ReIDError, run_cli
from training.core.fileio import prepare_target

PROG = "reid-export"


def build_parser() -> argparse.ArgumentParser:
    q = QuantizeOptions()
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Export a reid-train checkpoint to ONNX: the whole dual-branch network (BiLSTM included), "
            "dynamic batch, float32 RGB [0, 1] NCHW input with normalisation inside the graph, outputs "
            "global_feat, local_feat and embedding, and the model contract as metadata. The file is "
            "checked (onnx.checker, ONNX Runtime vs PyTorch, batch 1 vs batch N, LSTM present) before it "
            "replaces --out; a failed check writes nothing. See docs/export.md."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt written by reid-train")
    parser.add_argument("--out", required=True, help="ONNX file to write (the int8 model with --quantize int8)")
    parser.add_argument(
        "--embedding", choices=EMBEDDING_KINDS, default="global",
        help="search embedding: global (POOL-5, as in the paper) or global+local (default: %(default)s)",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s)")
    parser.add_argument(
        "--batch-check", type=int, default=8, metavar="N",
        help="random crops for the PyTorch parity and batch 1 vs batch N checks, >= 2 (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the check crops (default: fresh, printed)")
    parser.add_argument("--threads", type=positive_int, default=None, help="ONNX Runtime / torch threads (default: all usable cores)")
    quant = parser.add_argument_group("int8 quantisation")
    quant.add_argument("--quantize", choices=["int8"], default=None, help="write a statically quantised int8 (QDQ) model")
    quant.add_argument("--calibration", metavar="DIR", help="folder of real crops (searched recursively) to calibrate on")
    quant.add_argument(
        "--calibration-images", type=int, default=q.calibration_images,
        help="crops used for calibration (default: %(default)s)",
    )
    quant.add_argument(
        "--validation-images", type=int, default=q.validation_images,
        help="crops held out to compare int8 with fp32 (default: %(default)s)",
    )
    quant.add_argument(
        "--calibration-method", choices=sorted(METHODS), default=q.method,
        help="how activation ranges are found (default: %(default)s)",
    )
    quant.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor instead of per channel")
    quant.add_argument(
        "--min-cosine", type=float, default=q.min_cosine,
        help="refuse the int8 model if any held-out crop's cosine to fp32 is below this (default: %(default)s)",
    )
    quant.add_argument("--float-out", metavar="PATH", help="also keep the checked fp32 model here")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, lambda: _run(build_parser().parse_args(argv)))


def _run(args: argparse.Namespace) -> int:
    if args.quantize is None and (args.calibration or args.float_out):
        raise ReIDError("--calibration and --float-out only apply with --quantize int8")
    if args.quantize and not args.calibration:
        raise ReIDError("--quantize int8 needs --calibration DIR (a folder of real crops)")
    if args.threads is not None:
        import torch  # only the CLI decides torch's thread count, never at import time

        torch.set_num_threads(args.threads)
    options = None
    if args.quantize:
        # Validate quantisation options before the (slow) export.
        options = QuantizeOptions(
            per_channel=not args.per_tensor,
            method=args.calibration_method,
            calibration_images=args.calibration_images,
            validation_images=args.validation_images,
            min_cosine=args.min_cosine,
        )
    # Read the inputs before the progress bar starts, so bad paths give one clean line.
    checkpoint = load_checkpoint(args.checkpoint)
    for target in (args.out, args.float_out):
        if target:
            prepare_target(target)
    if args.quantize:
        find_images(args.calibration)
    steps = ["export + checks"] + (["int8 quantisation + checks"] if options else [])
    with tempfile.TemporaryDirectory(prefix="reid-export-") as work, tqdm(steps, desc=PROG, unit="step", delay=1.0) as bar:
        # refresh=False: a refresh draws the bar before its delay, and tqdm then ends that line
        # without a newline, so an error would be printed on the bar's line
        bar.set_postfix_str(steps[0], refresh=False)
        float_path = Path(args.float_out or Path(work) / "float.onnx") if options else Path(args.out)
        report = export_model(
            checkpoint, float_path, embedding=args.embedding, opset=args.opset,
            batch_check=args.batch_check, seed=args.seed, threads=args.threads,
        )
        bar.update(1)
        quant_report = None
        if options:
            bar.set_postfix_str(steps[1], refresh=False)
            quant_report = quantize_model(float_path, args.out, args.calibration, options, threads=args.threads)
            bar.update(1)
    print(report.text() if args.float_out or not options else _float_summary(report))
    if quant_report is not None:
        print(quant_report.text())
    return 0


def _float_summary(report) -> str:
    """The fp32 report when the fp32 file was only a temporary step."""
    return report.text().replace(f"wrote {report.path}", "exported the fp32 model (not kept; --float-out keeps it)", 1)
