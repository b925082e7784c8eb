"""fp32 ONNX -> statically quantised int8 ONNX (QDQ), calibrated on real crops, and checked.

Calibration crops are decoded and resized by the fp32 model's own runtime path
(:meth:`export.runtime.Embedder.preprocess`, i.e. :mod:`training.core.imageio` with the contract's
size and filter), so the activation ranges are those of the pixels the model will serve.
The crops of ``calibration_dir`` are split (in a seeded random order) into a calibration set
and a held-out validation set; the int8 model is judged on the held-out crops by cosine
similarity to the fp32 model, and refused below ``min_cosine``.

Fingerprint: the int8 graph computes slightly different vectors than the fp32 one, so a
gallery built with one must not be searched with the other. The int8 file therefore carries
its own fingerprint, ``sha256("<fp32 fingerprint>+int8-qdq")``, and names the fp32 one under
:data:`export.contract.SOURCE_FINGERPRINT_KEY`; everything else in the contract is the fp32 file's.

Torch-free: quantisation needs only onnx and onnxruntime.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from export.checks import (
    CheckResult,
    Tolerance,
    check_batch_consistency,
    check_onnx_file,
    open_checked,
    require_all,
)
from export.contract import INT8_QDQ, ModelContract, file_metadata
from export.parity import Agreement, compare
from export.runtime import CPU, Embedder
from training.core.errors import ReIDError
from training.core.fileio import atomic_path
from training.core.formats import IMAGE_SUFFIXES

PRECISION = INT8_QDQ
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}
#: Same static scales for every row, so batch 1 and batch N still agree almost exactly;
#: the looser limit allows int8 kernels that block differently by batch size.
INT8_BATCH_TOLERANCE = Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.9999)


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantise. Defaults are the measured best (docs/export.md).

    ``per_channel``: one weight scale per output channel (conv/gemm); ``method``: how
    activation ranges are found (``minmax``, ``percentile``, ``entropy``); ``keep_float``:
    op types left in float (LSTM is never quantised by ONNX Runtime's QDQ quantiser anyway;
    ``Gemm``/``MatMul`` keeps the small heads in float).
    """

    per_channel: bool = True
    method: str = "minmax"
    keep_float: tuple[str, ...] = ()
    calibration_images: int = 128
    validation_images: int = 64
    batch_size: int = 16
    min_cosine: float = 0.99
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ReIDError(f"calibration method {self.method!r} is not supported; expected one of {sorted(METHODS)}")
        for name in ("calibration_images", "validation_images", "batch_size"):
            if getattr(self, name) < 1:
                raise ReIDError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.min_cosine <= 1.0:
            raise ReIDError(f"min_cosine must be in (0, 1], got {self.min_cosine}")


@dataclass(frozen=True)
class QuantizeReport:
    """What :func:`quantize_model` wrote, how close it is to fp32 and how fast."""

    path: Path
    contract: ModelContract
    checks: list[CheckResult]
    agreement: Agreement  # int8 vs fp32 embeddings on the held-out crops
    calibration_crops: int
    validation_crops: int
    validation_held_out: bool  # False when the folder was too small to hold crops out
    float_images_per_s: float
    int8_images_per_s: float
    seconds: float
    options: QuantizeOptions = field(default_factory=QuantizeOptions)

    @property
    def speedup(self) -> float:
        return self.int8_images_per_s / self.float_images_per_s

    def text(self) -> str:
        where = "held-out" if self.validation_held_out else "calibration (folder too small to hold any out)"
        lines = [
            f"wrote {self.path} ({self.path.stat().st_size / 1e6:.1f} MB, int8 QDQ, "
            f"{'per-channel' if self.options.per_channel else 'per-tensor'} weights, "
            f"{self.options.method} calibration on {self.calibration_crops} crops) in {self.seconds:.1f} s",
            f"  fingerprint {self.contract.fingerprint} (int8 of the fp32 weights; do not mix with fp32 galleries)",
            f"  vs fp32 on {self.validation_crops} {where} crops: {self.agreement.describe()}",
            f"  speed at batch {self.options.batch_size}: fp32 {self.float_images_per_s:.1f} images/s, "
            f"int8 {self.int8_images_per_s:.1f} images/s ({self.speedup:.2f}x)",
            "checks:",
        ]
        return "\n".join(lines + [r.line() for r in self.checks])


def int8_fingerprint(float_fingerprint: str) -> str:
    """The int8 file's fingerprint: derived from, and never equal to, the fp32 one."""
    return hashlib.sha256(f"{float_fingerprint}+{PRECISION}".encode()).hexdigest()


def find_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursive, by suffix), sorted; ReIDError if none."""
    root = Path(folder)
    if not root.is_dir():
        raise ReIDError(f"calibration folder {root} does not exist or is not a folder")
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise ReIDError(f"calibration folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def split_crops(images: Sequence[Path], n_calib: int, n_val: int, seed: int) -> tuple[list[Path], list[Path], bool]:
    """(calibration, validation, held_out): a seeded shuffle cut in two. A folder too small
    to hold out anything validates on the calibration crops (``held_out`` False)."""
    order = list(images)
    random.Random(seed).shuffle(order)
    if len(order) < 2:
        return order, order, False
    n_val = min(n_val, len(order) // 4 or 1)
    val = order[:n_val]
    calib = order[n_val : n_val + n_calib]
    return calib, val, True


class CropReader(CalibrationDataReader):
    """Feeds preprocessed crops to the calibrator in batches of ``batch_size``."""

    def __init__(self, crops: np.ndarray, input_name: str, batch_size: int) -> None:
        self._batches = iter([crops[i : i + batch_size] for i in range(0, len(crops), batch_size)])
        self._input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: batch}


def load_crops(embedder: Embedder, paths: Sequence[Path]) -> np.ndarray:
    """(N, 3, H, W) float32 through the model's own decode + resize."""
    return np.stack([embedder.preprocess(p) for p in paths])


def images_per_second(embedder: Embedder, crops: np.ndarray, min_seconds: float = 1.0) -> float:
    """Throughput of ``embedder.embed_arrays`` on ``crops`` (one warm-up, then >= min_seconds)."""
    embedder.embed_arrays(crops)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or done == 0:
        embedder.embed_arrays(crops)
        done += len(crops)
    return done / elapsed


def quantize_model(
    float_model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    calibration_dir: str | os.PathLike[str],
    options: QuantizeOptions | None = None,
    *,
    threads: int | None = None,
) -> QuantizeReport:
    """Write a checked int8 QDQ version of ``float_model`` (an fp32 export of ours) to ``out``.

    Raises:
        ReIDError: ``float_model`` is not one of our exports, the folder has no images, or a
            crop cannot be decoded; :class:`~export.checks.ExportCheckError` when a check
            fails (cosine to fp32 below ``min_cosine`` included), leaving nothing at ``out``.
    """
    opts = options or QuantizeOptions()
    started = time.perf_counter()
    float_embedder = Embedder(float_model, providers=[CPU], intra_op_threads=threads, batch_size=opts.batch_size)
    contract = float_embedder.contract
    calib_paths, val_paths, held_out = split_crops(
        find_images(calibration_dir), opts.calibration_images, opts.validation_images, opts.seed
    )
    calib = load_crops(float_embedder, calib_paths)
    val = load_crops(float_embedder, val_paths)
    int8_contract = replace(contract, fingerprint=int8_fingerprint(contract.fingerprint))

    target = Path(out)
    with tempfile.TemporaryDirectory(prefix="reid-quant-") as work, atomic_path(target, suffix=".onnx") as tmp:
        prepared = Path(work) / "prepared.onnx"
        # Shape inference + graph optimisation first (BN folding, etc.), as ORT recommends,
        # so the quantiser sees the graph that will actually run.
        quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(tmp),
            CropReader(calib, contract.input_name, opts.batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=opts.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[opts.method],
            nodes_to_exclude=_nodes_of_types(prepared, opts.keep_float),
            extra_options={"CalibTensorRangeSymmetric": False},
        )
        model = onnx.load(str(tmp))
        metadata = file_metadata(int8_contract, PRECISION, source_fingerprint=contract.fingerprint)
        del model.metadata_props[:]
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save_model(model, str(tmp))

        checks = check_onnx_file(tmp)
        opened, int8_embedder = open_checked(tmp, int8_contract, batch_size=opts.batch_size, threads=threads)
        checks.append(opened)
        if int8_embedder is None:
            require_all(target, checks)  # raises: the runtime could not open the file
        assert int8_embedder is not None
        agreement = compare(float_embedder.embed_arrays(val), int8_embedder.embed_arrays(val))
        checks.append(
            CheckResult(
                "int8 vs fp32 cosine",
                agreement.min_cosine >= opts.min_cosine,
                f"{agreement.describe()} (limit: min cosine >= {opts.min_cosine})",
            )
        )
        consistency_crops = val[: min(len(val), opts.batch_size)]
        checks.append(check_batch_consistency(int8_embedder, consistency_crops, INT8_BATCH_TOLERANCE))
        speed_batch = val[: opts.batch_size]
        fp_speed = images_per_second(float_embedder, speed_batch)
        int8_speed = images_per_second(int8_embedder, speed_batch)
        require_all(target, checks)
    return QuantizeReport(
        path=target,
        contract=int8_contract,
        checks=checks,
        agreement=agreement,
        calibration_crops=len(calib),
        validation_crops=len(val),
        validation_held_out=held_out,
        float_images_per_s=fp_speed,
        int8_images_per_s=int8_speed,
        seconds=time.perf_counter() - started,
        options=opts,
    )


def _nodes_of_types(model_path: Path, op_types: Sequence[str]) -> list[str]:
    if not op_types:
        return []
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in op_types]

