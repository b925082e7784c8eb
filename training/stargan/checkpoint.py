"""StarGAN checkpoints: both networks, both optimisers and the iteration, in one file.

Written atomically (temp file, fsync, rename: a kill mid-write keeps the previous file) and
read with ``torch.load(weights_only=True)`` (tensors and plain containers only). A ``format``
tag tells a StarGAN file from a reid-train checkpoint, so each command refuses the other's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from training.checkpoint import load_weights, read_torch_payload, write_torch_payload
from training.core.errors import ReIDError
from training.stargan.model import Generator, StarGANConfig

STARGAN_FORMAT = "reid-stargan"
#: Bump when a key changes meaning; readers refuse newer files instead of misreading them.
STARGAN_VERSION = 1
CHECKPOINT_NAME = "stargan.pt"


@dataclass
class StarGANCheckpoint:
    """A StarGAN after ``iteration`` discriminator steps.

    ``train_config``: the recipe (JSON-able); ``metrics``: the last logged losses;
    ``data``: where the images came from and how many. Optimiser states are what
    ``--resume`` needs.
    """

    model_config: StarGANConfig
    generator: dict[str, Tensor]
    discriminator: dict[str, Tensor]
    iteration: int = 0
    g_optimizer: dict[str, Any] | None = None
    d_optimizer: dict[str, Any] | None = None
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def build_generator(self) -> Generator:
        """The generator with these weights, in eval mode, on the CPU."""
        generator = Generator(self.model_config)
        load_weights(generator, self.generator, "StarGAN checkpoint")
        return generator.eval()


def _cpu(state: dict[str, Any] | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {k: (v.detach().to("cpu") if isinstance(v, Tensor) else v) for k, v in state.items()}


def save_stargan(path: str | os.PathLike[str], checkpoint: StarGANCheckpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically; on any failure the old file stays."""
    payload = {
        "format": STARGAN_FORMAT,
        "version": STARGAN_VERSION,
        "model_config": checkpoint.model_config.to_dict(),
        "generator": _cpu(checkpoint.generator),
        "discriminator": _cpu(checkpoint.discriminator),
        "iteration": int(checkpoint.iteration),
        "g_optimizer": checkpoint.g_optimizer,
        "d_optimizer": checkpoint.d_optimizer,
        "train_config": checkpoint.train_config,
        "metrics": checkpoint.metrics,
        "data": checkpoint.data,
    }
    write_torch_payload(path, payload)


def load_stargan(path: str | os.PathLike[str]) -> StarGANCheckpoint:
    """Read a file written by :func:`save_stargan` (tensors on the CPU).

    ReIDError naming the file when it is missing, not a torch file, not a StarGAN checkpoint
    (e.g. a reid-train checkpoint), or from a newer version.
    """
    file = Path(path)
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise ReIDError(f"StarGAN checkpoint {file} {what} (expected RUN/{CHECKPOINT_NAME} written by reid-camstyle train)")
    payload = read_torch_payload(file)
    if not isinstance(payload, dict) or payload.get("format") != STARGAN_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else None
        hint = f" (it is a '{found}' file)" if found else ""
        raise ReIDError(f"{file} is not a StarGAN checkpoint of reid-camstyle train{hint}")
    version = payload.get("version")
    if not isinstance(version, int) or version > STARGAN_VERSION:
        raise ReIDError(f"{file} is StarGAN checkpoint version {version}; this code reads up to {STARGAN_VERSION}")
    return StarGANCheckpoint(
        model_config=StarGANConfig.from_dict(payload["model_config"]),
        generator=payload["generator"],
        discriminator=payload["discriminator"],
        iteration=int(payload.get("iteration", 0)),
        g_optimizer=payload.get("g_optimizer"),
        d_optimizer=payload.get("d_optimizer"),
        train_config=dict(payload.get("train_config") or {}),
        metrics=dict(payload.get("metrics") or {}),
        data=dict(payload.get("data") or {}),
    )
