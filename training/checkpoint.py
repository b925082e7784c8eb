"""Training checkpoints: one file holds everything to rebuild, resume or export a model.

A checkpoint is a ``torch.save`` dict written atomically (temp file, fsync, rename), so a
process killed mid-write leaves the previous checkpoint intact. It is read back with
``torch.load(weights_only=True)``: only tensors and plain containers, never pickled code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from training.core.errors import ReIDError
from training.core.fileio import atomic_write_with
from training.model import ModelConfig, ReIDModel

CHECKPOINT_FORMAT = "reid-checkpoint"
#: Bump when a key changes meaning; readers refuse newer files instead of misreading them.
CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    """The state of a training run after ``epoch`` completed epochs.

    ``train_config`` and ``metrics`` are JSON-able dicts (the recipe and the last evaluation);
    ``selection`` says how this file was chosen among the run's epochs (``rule``: ``"last
    epoch"`` or ``"best held-out source mAP"``, with the numbers behind it), never on target
    labels; :func:`describe_selection` prints it. ``optimizer_state`` and ``extra`` (scheduler,
    grad scaler, RNG states...) are what
    ``--resume`` needs and may be empty in a checkpoint meant only for export.
    """

    model_config: ModelConfig
    model_state: dict[str, Tensor]
    epoch: int = 0
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha256 hex digest of the model weights (see :func:`weights_fingerprint`)."""
        return weights_fingerprint(self.model_state)

    def build_model(self) -> ReIDModel:
        """A :class:`ReIDModel` with these weights, in eval mode, on the CPU."""
        model = ReIDModel(self.model_config)
        load_weights(model, self.model_state, "checkpoint")
        return model.eval()


def load_weights(module: torch.nn.Module, state: dict[str, Tensor], what: str) -> None:
    """``module.load_state_dict(state)``, with a mismatch as one :class:`ReIDError` line."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ReIDError(f"{what} weights do not fit its config: {first}") from exc


def weights_fingerprint(state_dict: dict[str, Tensor]) -> str:
    """sha256 over parameter names, dtypes, shapes and bytes, in name order.

    Buffers that change in eval-free ways (BN's ``num_batches_tracked``) are included too: two
    files with the same fingerprint compute the same function.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically; on any failure the old file stays."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": checkpoint.model_config.to_dict(),
        "model_state": {k: v.detach().to("cpu") for k, v in checkpoint.model_state.items()},
        "epoch": int(checkpoint.epoch),
        "train_config": checkpoint.train_config,
        "metrics": checkpoint.metrics,
        "optimizer_state": checkpoint.optimizer_state,
        "extra": checkpoint.extra,
        "selection": checkpoint.selection,
    }
    write_torch_payload(path, payload)


def write_torch_payload(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """``torch.save`` a dict of tensors and plain containers atomically; ReIDError on failure."""
    try:
        atomic_write_with(path, lambda fh: torch.save(payload, fh))
    except OSError as exc:
        raise ReIDError(f"could not write checkpoint {path}: {exc.strerror or exc}; the previous file is unchanged") from exc


def read_torch_payload(file: Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` onto the CPU; ReIDError naming ``file`` (a ``what``)
    in one line when it is not a readable torch file (truncated, a text file, arbitrary bytes)."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    # Arbitrary bytes reach the unpickler as random opcodes: KeyError / IndexError come from there.
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, KeyError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if first.startswith("Weights only load failed"):  # torch's advice to unpickle code: not ours to give
            first = "not a torch file of tensors, or it holds pickled objects"
        raise ReIDError(f"{file} is not a readable {what} (truncated or not a torch file): {first}") from exc
    except OSError as exc:
        # torch's zip reader seeking past the end of a truncated file raises EINVAL with no file
        # name; one that names a file is the machine's (permissions, I/O) and stays an OSError.
        if exc.filename is not None:
            raise
        raise ReIDError(f"{file} is not a readable {what} (truncated or not a torch file): {exc.strerror or exc}") from exc


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors land on the CPU).

    Raises :class:`ReIDError` naming the file when it is missing, not a torch file, not a
    checkpoint of this project, or from a newer version.
    """
    file = Path(path)
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        raise ReIDError(f"checkpoint {file} {what} (expected a .pt file written by reid-train)")
    payload = read_torch_payload(file)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ReIDError(f"{file} is a torch file but not a reid-train checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    version = payload.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ReIDError(
            f"{file} is checkpoint version {version}; this code reads versions up to {CHECKPOINT_VERSION} (upgrade reid-uda)"
        )
    return Checkpoint(
        model_config=ModelConfig.from_dict(payload["model_config"]),
        model_state=payload["model_state"],
        epoch=int(payload.get("epoch", 0)),
        train_config=dict(payload.get("train_config") or {}),
        metrics=dict(payload.get("metrics") or {}),
        optimizer_state=payload.get("optimizer_state"),
        extra=dict(payload.get("extra") or {}),
        selection=dict(payload.get("selection") or {}),
    )


def describe_selection(checkpoint: Checkpoint) -> str:
    """One line saying which rule chose this checkpoint, e.g. ``last epoch (epoch 6 of 6)``."""
    selection = checkpoint.selection
    rule = selection.get("rule")
    if rule is None:  # written before checkpoints recorded their selection
        return f"not recorded (epoch {checkpoint.epoch}); older runs may have chosen best.pt on target labels"
    text = f"{rule} (epoch {checkpoint.epoch} of {checkpoint.train_config.get('epochs', '?')}"
    if "val_mAP" in selection:
        text += f", held-out source mAP {100 * selection['val_mAP']:.1f}% over {selection.get('val_ids')} identities"
    return text + ")"
