"""Builders for export tests: small checkpoints trained for a few steps on generated crops."""

from __future__ import annotations

from pathlib import Path

import torch

from training.checkpoint import Checkpoint, save_checkpoint
from training.model import ModelConfig, ReIDModel
from training.core.imageio import decode_image
from training.transforms import eval_transform

#: resnet18 at 64x32 with last_stride 1: a 4x2 map, enough rows for 3 stripes.
SMALL_CONFIG = ModelConfig(
    num_classes=8, backbone="resnet18", height=64, width=32, last_stride=1, fc_dim=64, embed_dim=16, lstm_hidden=32
)


def make_checkpoint(path: Path, config: ModelConfig, train_dir: Path | None = None, steps: int = 3, seed: int = 0) -> Checkpoint:
    """Save (and return) a checkpoint of a fresh model after ``steps`` SGD steps.

    The steps run in train mode on crops from ``train_dir`` (or noise), so BatchNorm running
    statistics are no longer the 0/1 of a fresh model and the eval graph is non-trivial.
    """
    torch.manual_seed(seed)
    model = ReIDModel(config)
    if train_dir is not None:
        transform = eval_transform(config.height, config.width)
        files = sorted(train_dir.glob("*.jpg"))[:16]
        images = torch.stack([transform(decode_image(f)) for f in files])
    else:
        images = torch.rand(16, 3, config.height, config.width)
    labels = torch.arange(len(images)) % config.num_classes
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(steps):
        out = model(images)
        loss = torch.nn.functional.cross_entropy(out.global_logits, labels) + torch.nn.functional.cross_entropy(
            out.local_logits, labels
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    checkpoint = Checkpoint(config, model.state_dict(), epoch=1, train_config={"lr": 0.01, "steps": steps})
    save_checkpoint(path, checkpoint)
    return checkpoint
