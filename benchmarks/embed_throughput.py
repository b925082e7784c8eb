"""Embedding throughput: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8.

The paper's configuration (ResNet-50, 256x128, stride 2, BiLSTM local branch) is exported with
``export.exporter.export_model`` and quantised with ``export.quantize.quantize_model``,
calibrated on generated crops (``reid-synth`` at 256x128). All three engines run on the same
crops with the same thread count, at batch 1 and batch 32; images/s is counted over a fixed
time budget after a warm-up. The achieved GFLOP/s (FLOPs counted with
``torch.utils.flop_counter.FlopCounterMode``) is set against a large float32 matrix product
measured in the same run, which is about the best this CPU does in float32.

    python benchmarks/embed_throughput.py                 # ~5 minutes, writes the results
    python benchmarks/embed_throughput.py --checkpoint runs/x/last.pt --no-write

Without ``--checkpoint`` the weights are random (a few SGD steps on generated crops give the
BatchNorm layers non-trivial statistics); speed does not depend on the weights, the int8
cosine does, and the results say which was used.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort
import torch
from torch.utils.flop_counter import FlopCounterMode

from export.exporter import ExportGraph, export_model
from export.parity import compare
from export.quantize import QuantizeOptions, find_images, quantize_model
from export.runtime import CPU, Embedder
from training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from training.core.errors import run_cli
from training.core.fileio import atomic_write_bytes
from training.model import ModelConfig, ReIDModel
from training.core.imageio import decode_image
from training.transforms import eval_transform
from training.synth.writer import SynthConfig, write_domains

RESULTS = Path(__file__).resolve().parent / "results" / "embed_throughput.md"
BATCHES = (1, 32)


class Speed(NamedTuple):
    engine: str
    batch: int
    images_per_s: float
    runs: int


def measure(engine: str, run: Callable[[np.ndarray], object], crops: np.ndarray, seconds: float) -> Speed:
    """images/s of ``run(crops)``: one warm-up call, then calls until ``seconds`` have passed."""
    run(crops)
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or runs < 2:
        run(crops)
        runs += 1
    return Speed(engine, len(crops), runs * len(crops) / elapsed, runs)


def matmul_gflops(threads: int, n: int = 4096, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an n x n x n torch matrix product (2 n^3 FLOPs each)."""
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def model_flops(graph: ExportGraph, height: int, width: int) -> int:
    """FLOPs of one image through the exported function (convs, matmuls, LSTM gates as counted
    by FlopCounterMode; pointwise ops are not counted)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        graph(torch.rand(1, 3, height, width))
    return int(counter.get_total_flops())


def cpu_facts() -> tuple[str, list[str]]:
    """CPU model name and the int8/bf16 dot-product flags it has (VNNI, AMX)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")
    return model, [f for f in wanted if f in flags]


def prepare_checkpoint(work: Path, crops_dir: Path, checkpoint: str | None) -> tuple[Path, str]:
    if checkpoint:
        return Path(checkpoint), f"trained checkpoint `{checkpoint}`"
    torch.manual_seed(0)
    config = ModelConfig(num_classes=751)
    model = ReIDModel(config)
    transform = eval_transform(config.height, config.width)
    images = torch.stack([transform(decode_image(f)) for f in find_images(crops_dir / "bounding_box_train")[:32]])
    labels = torch.arange(len(images)) % config.num_classes
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(2):
        out = model(images)
        loss = torch.nn.functional.cross_entropy(out.global_logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = work / "random.pt"
    save_checkpoint(path, Checkpoint(config, model.state_dict()))
    return path, "random initialisation (2 SGD steps on generated crops set the BatchNorm statistics)"


def run(args: argparse.Namespace) -> int:
    threads = args.threads
    torch.set_num_threads(threads)
    cpu, flags = cpu_facts()
    lines_out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="reid-bench-") as tmp:
        work = Path(tmp)
        crops_dir = work / "synth"
        write_domains(crops_dir, [SynthConfig(domain="market", ids=40, images_per_id=6, size=(256, 128),
                                              distractors=20, junk=0)], workers=threads, progress=False)
        ckpt_path, weights = prepare_checkpoint(work, crops_dir, args.checkpoint)
        ckpt = load_checkpoint(ckpt_path)
        started = time.perf_counter()
        export = export_model(ckpt, work / "model.onnx", batch_check=4, seed=0, threads=threads)
        export_s = time.perf_counter() - started
        print(export.text(), flush=True)
        quant = quantize_model(work / "model.onnx", work / "model.int8.onnx", crops_dir,
                               # The benchmark reports the cosine instead of refusing below 0.99, so a random
                               # model's int8 numbers are still measured (and labelled as such).
                               QuantizeOptions(calibration_images=128, validation_images=64, min_cosine=0.5),
                               threads=threads)
        print(quant.text(), flush=True)

        graph = ExportGraph(ckpt.build_model(), "global").eval()
        fp32 = Embedder(work / "model.onnx", providers=[CPU], intra_op_threads=threads, batch_size=max(BATCHES))
        int8 = Embedder(work / "model.int8.onnx", providers=[CPU], intra_op_threads=threads, batch_size=max(BATCHES))
        files = find_images(crops_dir / "query") + find_images(crops_dir / "bounding_box_test")
        crops = np.stack([fp32.preprocess(f) for f in files[: max(BATCHES)]])

        def eager(batch: np.ndarray) -> object:
            with torch.inference_mode():
                return graph(torch.from_numpy(batch))

        speeds: list[Speed] = []
        for batch in BATCHES:
            seconds = args.seconds
            for name, fn in (("PyTorch eager fp32", eager), ("ONNX Runtime fp32", fp32.embed_arrays),
                             ("ONNX Runtime int8", int8.embed_arrays)):
                speeds.append(measure(name, fn, crops[:batch], seconds))
                print(speeds[-1], flush=True)
        flops = model_flops(graph, ckpt.model_config.height, ckpt.model_config.width)
        peak = matmul_gflops(threads)
        all_crops = np.stack([fp32.preprocess(f) for f in files[:256]])
        agreement = compare(fp32.embed_arrays(all_crops), int8.embed_arrays(all_crops))

        lines_out = report(args, cpu, flags, describe(ckpt.model_config), weights, export_s, export.size_bytes, quant, speeds, flops, peak,
                           agreement, len(all_crops))
    text = "\n".join(lines_out) + "\n"
    print(text)
    if not args.no_write:
        atomic_write_bytes(RESULTS, text.encode())
        print(f"wrote {RESULTS}")
    return 0


def describe(config: ModelConfig) -> str:
    return (f"{config.backbone}, {config.height}x{config.width}, last stride {config.last_stride}, "
            f"BiLSTM local branch ({config.num_stripes} stripes, {config.lstm_hidden} hidden per direction)")


def report(args, cpu, flags, model, weights, export_s, export_bytes, quant, speeds, flops, peak, agreement, n_cos) -> list[str]:
    by = {(s.engine, s.batch): s for s in speeds}
    lines = [
        "# Embedding throughput: PyTorch vs ONNX Runtime fp32 vs int8",
        "",
        f"`python benchmarks/embed_throughput.py --threads {args.threads} --seconds {args.seconds:g}`, one run on "
        f"{cpu} ({os.cpu_count()} cores, shared with other jobs; flags: {', '.join(flags) or 'none of note'}), "
        f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {ort.__version__}.",
        "",
        f"Model: {model}, `global` embedding; weights: "
        f"{weights}. {args.threads} threads for every engine (torch.set_num_threads, ORT intra-op threads). "
        f"Each cell: one warm-up call, then calls for >= {args.seconds:g} s on real generated crops.",
        "",
        "| engine | batch 1 images/s | batch 32 images/s | GFLOP/s at batch 32 | vs PyTorch at batch 32 |",
        "| --- | --- | --- | --- | --- |",
    ]
    eager32 = by[("PyTorch eager fp32", 32)].images_per_s
    for engine in ("PyTorch eager fp32", "ONNX Runtime fp32", "ONNX Runtime int8"):
        b1, b32 = by[(engine, 1)].images_per_s, by[(engine, 32)].images_per_s
        lines.append(f"| {engine} | {b1:.1f} | {b32:.1f} | {b32 * flops / 1e9:.0f} | {b32 / eager32:.2f}x |")
    ort1, ort32 = by[("ONNX Runtime fp32", 1)].images_per_s, by[("ONNX Runtime fp32", 32)].images_per_s
    int1, int32 = by[("ONNX Runtime int8", 1)].images_per_s, by[("ONNX Runtime int8", 32)].images_per_s
    eager1 = by[("PyTorch eager fp32", 1)].images_per_s
    lines += [
        "",
        f"- FLOPs per image (FlopCounterMode, convs + matmuls + LSTM): {flops / 1e9:.2f} GFLOP",
        f"- float32 matrix product 4096x4096x4096 (torch.mm, {args.threads} threads, best of 5): {peak:.0f} GFLOP/s; "
        f"ONNX Runtime fp32 at batch 32 reaches {ort32 * flops / 1e9 / peak:.0%} of it, PyTorch eager "
        f"{eager32 * flops / 1e9 / peak:.0%}",
        f"- goal fp32 ONNX Runtime >= 1.3x PyTorch eager: {ort1 / eager1:.2f}x at batch 1, {ort32 / eager32:.2f}x at batch 32",
        f"- goal int8 >= 2x fp32 ONNX Runtime: {int1 / ort1:.2f}x at batch 1, {int32 / ort32:.2f}x at batch 32",
        f"- goal int8 cosine to fp32 >= 0.99 on {n_cos} query/gallery crops: {agreement.describe()}; "
        f"quantiser's held-out check: min {quant.agreement.min_cosine:.4f}",
        f"- int8 recipe: QDQ, per-channel int8 weights, uint8 activations, {quant.options.method} calibration on "
        f"{quant.calibration_crops} generated crops; LSTM left in float",
        f"- files: fp32 {export_bytes / 1e6:.0f} MB (exported and checked in {export_s:.0f} s), "
        f"int8 {quant.path.stat().st_size / 1e6:.0f} MB",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))),
                        help="threads for every engine (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=6.0, help="time budget per cell (default: %(default)s)")
    parser.add_argument("--checkpoint", default=None, help="a reid-train checkpoint (ResNet-50 256x128) to use")
    parser.add_argument("--no-write", action="store_true", help=f"print only, do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    return run_cli("embed_throughput", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
