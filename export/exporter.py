"""Checkpoint -> checked ONNX file: the whole dual-branch network, BiLSTM included.

The graph takes ``images`` (N, 3, H, W) float32 RGB in [0, 1] with a dynamic N (the model
normalises inside) and returns ``global_feat`` (N, C), ``local_feat`` (N, 2*hidden*stripes)
and ``embedding`` (the search vector, :func:`training.model.search_embedding` of the chosen
kind). The file carries the :class:`~export.contract.ModelContract` as metadata.

Nothing reaches ``out`` unchecked: the graph is written to a temp file beside it, checked
(``onnx.checker``, LSTM op present, opens in the serving runtime with its metadata intact,
ONNX Runtime vs PyTorch on freshly drawn crops, batch 1 vs batch N), and only then renamed
over ``out``. A failed check leaves no file at ``out`` (and an older one untouched).

Exporter choice: torch's dynamo exporter (``torch.export`` based). The legacy TorchScript
exporter, in torch 2.14, produces a graph whose BiLSTM output is wrong (``local_feat`` off by
~1, even at the traced batch size), see docs/export.md.

This module imports torch; the runtime side (contract, imageio, runtime) does not.
"""

from __future__ import annotations

import importlib.metadata
import os
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from export.checks import (
    FLOAT_TOLERANCE,
    CheckResult,
    Tolerance,
    check_batch_consistency,
    check_onnx_file,
    open_checked,
    random_crops,
    require_all,
)
from export.contract import EMBEDDING_KINDS, FLOAT32, ModelContract, file_metadata
from export.parity import compare
from training.checkpoint import Checkpoint, load_checkpoint
from training.core.errors import ReIDError
from training.core.fileio import atomic_path
from training.model import ReIDModel, embedding_dim, search_embedding

#: ONNX opset of the export; 18 is the dynamo exporter's native one and ORT >= 1.14 runs it.
DEFAULT_OPSET = 18
OUTPUT_NAMES = ("global_feat", "local_feat", "embedding")
INPUT_NAME = "images"


class ExportGraph(nn.Module):
    """The exported function: images -> (global_feat, local_feat, embedding)."""

    def __init__(self, model: ReIDModel, embedding: str) -> None:
        super().__init__()
        self.model = model
        self.embedding = embedding

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(images)
        return out.global_feat, out.local_feat, search_embedding(out, self.embedding)


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote and how it was checked."""

    path: Path
    contract: ModelContract
    checks: list[CheckResult]
    size_bytes: int
    seconds: float
    seed: int
    extra_lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        c = self.contract
        head = [
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB) in {self.seconds:.1f} s",
            f"  input {c.input_name} [N, 3, {c.input_height}, {c.input_width}] float32 RGB 0-1; outputs "
            f"{', '.join(c.output_names)}; embedding {c.embedding_kind} dim {c.embedding_dim}",
            f"  fingerprint {c.fingerprint}",
            f"checks (crops drawn with seed {self.seed}):",
        ]
        return "\n".join(head + [r.line() for r in self.checks] + self.extra_lines)


def producer_version() -> str:
    """``reid-uda <version> (torch <version>)``: the code that wrote the file."""
    try:
        ours = importlib.metadata.version("reid-uda")
    except importlib.metadata.PackageNotFoundError:
        ours = "unknown"
    return f"reid-uda {ours} (torch {torch.__version__})"


def build_contract(checkpoint: Checkpoint, embedding: str) -> ModelContract:
    """The metadata an fp32 export of ``checkpoint`` carries."""
    config = checkpoint.model_config
    return ModelContract(
        input_height=config.height,
        input_width=config.width,
        embedding_dim=embedding_dim(config, embedding),
        embedding_kind=embedding,  # type: ignore[arg-type]  # checked against EMBEDDING_KINDS
        fingerprint=checkpoint.fingerprint(),
        producer_version=producer_version(),
        train_config={
            "model": config.to_dict(),
            "train": checkpoint.train_config,
            "epoch": checkpoint.epoch,
        },
        input_name=INPUT_NAME,
        output_names=OUTPUT_NAMES,
    )


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace the keys of ``metadata`` in ``model.metadata_props``, keeping any others."""
    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)


def to_onnx(graph: ExportGraph, height: int, width: int, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace ``graph`` with the dynamo exporter: dynamic batch axis ``N``, weights inline."""
    example = torch.rand(2, 3, height, width)
    batch = torch.export.Dim("N", min=1, max=65536)
    with warnings.catch_warnings(), torch.no_grad():
        # torch.export's internal deprecation notices are not the user's business.
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                graph,
                (example,),
                None,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamo=True,
                dynamic_shapes={"images": {0: batch}},
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001  # torch.export raises many unrelated types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ReIDError(f"torch.onnx.export failed at opset {opset}: {first}") from exc
    assert program is not None  # f=None returns the program
    return program.model_proto


def export_model(
    checkpoint: str | os.PathLike[str] | Checkpoint,
    out: str | os.PathLike[str],
    *,
    embedding: str = "global",
    opset: int = DEFAULT_OPSET,
    batch_check: int = 8,
    seed: int | None = None,
    threads: int | None = None,
    tolerance: Tolerance = FLOAT_TOLERANCE,
) -> ExportReport:
    """Export ``checkpoint`` (a reid-train ``.pt``, or one already loaded) to ``out`` as a
    checked fp32 ONNX file.

    ``embedding`` is ``"global"`` (POOL-5, the paper's test feature) or ``"global+local"``.
    ``batch_check`` crops (>= 2) are drawn with ``seed`` (fresh when None, reported) for the
    PyTorch parity and batch 1 vs batch N checks. ``threads`` is the intra-op thread count of
    the check session (default: all usable cores).

    Raises:
        ReIDError: the checkpoint is missing or not ours, the model has no local branch, a
            value is bad, or export fails; :class:`~export.checks.ExportCheckError` (a
            ReIDError) when a check fails, in which case nothing is written at ``out``.
    """
    if embedding not in EMBEDDING_KINDS:
        raise ReIDError(f"embedding {embedding!r} is not supported; expected one of {list(EMBEDDING_KINDS)}")
    if batch_check < 2:
        raise ReIDError(f"batch_check must be >= 2 to compare batch 1 with batch N, got {batch_check}")
    if opset < 14:
        raise ReIDError(f"opset {opset} is too old; the exporter needs >= 14 (default {DEFAULT_OPSET})")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if not ckpt.model_config.use_local:
        name = "checkpoint" if isinstance(checkpoint, Checkpoint) else str(checkpoint)
        raise ReIDError(
            f"{name}: the model was trained without the local branch (use_local=False); "
            "the export must carry the BiLSTM"
        )
    started = time.perf_counter()
    model = ckpt.build_model()
    graph = ExportGraph(model, embedding).eval()
    contract = build_contract(ckpt, embedding)
    proto = to_onnx(graph, contract.input_height, contract.input_width, opset)
    set_metadata(proto, file_metadata(contract, FLOAT32))

    seed = secrets.randbelow(2**31) if seed is None else seed
    crops = random_crops(batch_check, contract.input_height, contract.input_width, seed)
    target = Path(out)
    with atomic_path(target, suffix=".onnx") as tmp:
        onnx.save_model(proto, str(tmp))
        checks = check_onnx_file(tmp)
        opened, embedder = open_checked(tmp, contract, batch_size=batch_check, threads=threads)
        checks.append(opened)
        if embedder is not None:
            checks.append(check_against_torch(embedder, graph, crops, tolerance))
            checks.append(check_batch_consistency(embedder, crops, tolerance))
            del embedder  # release the session before the rename
        require_all(target, checks)
    return ExportReport(
        path=target,
        contract=contract,
        checks=checks,
        size_bytes=target.stat().st_size,
        seconds=time.perf_counter() - started,
        seed=seed,
    )


def torch_outputs(graph: ExportGraph, crops: np.ndarray) -> dict[str, np.ndarray]:
    """PyTorch eval-mode outputs of ``graph`` on (N, 3, H, W) crops, by output name."""
    with torch.no_grad():
        values = graph(torch.from_numpy(crops))
    return {name: v.numpy() for name, v in zip(OUTPUT_NAMES, values)}


def check_against_torch(embedder, graph: ExportGraph, crops: np.ndarray, tolerance: Tolerance) -> CheckResult:
    """Every output of the ONNX graph (through the runtime) matches PyTorch on ``crops``."""
    expected = torch_outputs(graph, crops)
    got = embedder.run(crops)
    parts = []
    passed = True
    for name in OUTPUT_NAMES:
        agreement = compare(expected[name], got[name])
        passed &= agreement.within(tolerance.atol, tolerance.rtol, tolerance.min_cosine)
        parts.append(f"{name} {agreement.describe()}")
    limits = f" (limits: atol {tolerance.atol:g} + rtol {tolerance.rtol:g}, cosine >= {tolerance.min_cosine})"
    return CheckResult("ONNX Runtime vs PyTorch", passed, "; ".join(parts) + limits)
