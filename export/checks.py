"""Checks an exported ONNX file must pass before it is allowed to replace ``--out``.

Each check returns a :class:`CheckResult`; the exporter and the quantiser run them on the
temp file and refuse to commit it when one fails (:func:`require_all`). These checks look
only at the file and the runtime (torch-free); comparisons against PyTorch live in the
exporter, which owns the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from export.contract import ModelContract
from export.parity import compare
from export.runtime import CPU, Embedder
from training.core.errors import ReIDError


@dataclass(frozen=True)
class Tolerance:
    """Thresholds for one comparison: ``max_abs_diff <= atol + rtol * max|reference|`` and
    every row's cosine >= ``min_cosine``."""

    atol: float
    rtol: float
    min_cosine: float


#: fp32 graph vs PyTorch, and batch 1 vs batch N: the same arithmetic up to kernel order.
#: Measured on ResNet-50 256x128: max |diff| ~1e-5 on values up to ~10, cosine 1 - 1e-9.
FLOAT_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999)


@dataclass(frozen=True)
class CheckResult:
    """One named check: whether it passed and a one-line account of what was measured."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"  [{'ok' if self.passed else 'FAIL'}] {self.name}: {self.detail}"


class ExportCheckError(ReIDError):
    """An export that failed its checks; ``results`` holds every check that ran."""

    def __init__(self, target: os.PathLike[str] | str, results: Sequence[CheckResult]) -> None:
        failed = [r for r in results if not r.passed]
        summary = "; ".join(f"{r.name}: {r.detail}" for r in failed)
        super().__init__(f"{target}: not written, the exported model failed {len(failed)} check(s): {summary}")
        self.results = list(results)


def require_all(target: os.PathLike[str] | str, results: Sequence[CheckResult]) -> None:
    """Raise :class:`ExportCheckError` naming ``target`` unless every check passed."""
    if not all(r.passed for r in results):
        raise ExportCheckError(target, results)


def check_onnx_file(path: Path, *, require_ops: Sequence[str] = ("LSTM",)) -> list[CheckResult]:
    """``onnx.checker`` (with shape inference) and the presence of each op in ``require_ops``."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        checker = CheckResult("onnx.checker", True, "valid (full check with shape inference)")
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        checker = CheckResult("onnx.checker", False, first)
    ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    missing = [op for op in require_ops if op not in ops]
    if missing:
        found = CheckResult("graph ops", False, f"no {missing} op in the graph; the BiLSTM local branch was lost")
    else:
        found = CheckResult("graph ops", True, f"{', '.join(require_ops)} present among {len(ops)} op types")
    return [checker, found]


def open_checked(path: Path, contract: ModelContract, *, batch_size: int, threads: int | None) -> tuple[CheckResult, Embedder | None]:
    """Open ``path`` with the serving runtime (CPU) and check its metadata reads back as ``contract``."""
    try:
        embedder = Embedder(path, providers=[CPU], intra_op_threads=threads, batch_size=batch_size)
    except ReIDError as exc:
        return CheckResult("runtime opens it", False, str(exc)), None
    if embedder.contract != contract:
        return CheckResult("runtime opens it", False, "metadata read back differs from what was written"), embedder
    return CheckResult("runtime opens it", True, f"Embedder loads it, metadata round-trips, dim {contract.embedding_dim}"), embedder


def check_batch_consistency(embedder: Embedder, crops: np.ndarray, tolerance: Tolerance = FLOAT_TOLERANCE) -> CheckResult:
    """Every output for crops run one at a time equals the same rows run as one batch.

    The embedder must have ``batch_size >= len(crops)`` so the batched run is one call.
    """
    if embedder.batch_size < len(crops):
        raise ValueError(f"batch_size {embedder.batch_size} < {len(crops)} crops: the batched run would be split")
    batched = embedder.run(crops)
    singles = [embedder.run(crops[i : i + 1]) for i in range(len(crops))]
    worst = None
    passed = True
    for name, rows in batched.items():
        agreement = compare(rows, np.concatenate([s[name] for s in singles]))
        passed &= agreement.within(tolerance.atol, tolerance.rtol, tolerance.min_cosine)
        if worst is None or agreement.max_abs_diff > worst[1].max_abs_diff:
            worst = (name, agreement)
    assert worst is not None  # the contract has at least one output
    return CheckResult(f"batch 1 vs batch {len(crops)}", passed, f"worst output {worst[0]}: {worst[1].describe()}")


def random_crops(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """``n`` float32 (3, H, W) crops in [0, 1]: half pixel noise, half smooth blobs.

    Noise exercises every weight; smooth blobs (noise at 1/8 resolution, upsampled) have the
    large uniform regions real crops have, where activations saturate differently.
    """
    rng = np.random.default_rng(seed)
    noise = rng.random((n, 3, height, width), dtype=np.float32)
    coarse = rng.random((n, 3, -(-height // 8), -(-width // 8)), dtype=np.float32)
    smooth = coarse.repeat(8, axis=2).repeat(8, axis=3)[:, :, :height, :width]
    crops = np.where((np.arange(n) % 2 == 0)[:, None, None, None], noise, smooth)
    return np.ascontiguousarray(crops, dtype=np.float32)
