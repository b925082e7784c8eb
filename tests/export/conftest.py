"""Shared by the export tests: a small trained-ish checkpoint, generated crops, one export."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from export_data import SMALL_CONFIG, make_checkpoint  # noqa: E402
from training.synth.writer import SynthConfig, write_domains  # noqa: E402


@pytest.fixture(scope="session")
def crops_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated Market-layout crops (64x32), real JPEGs with a camera style."""
    out = tmp_path_factory.mktemp("synth")
    write_domains(out, [SynthConfig(domain="market", ids=8, images_per_id=4, size=(64, 32))], workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory: pytest.TempPathFactory, crops_dir: Path) -> Path:
    """A small resnet18 checkpoint after a few SGD steps on real crops (non-trivial BN stats)."""
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    make_checkpoint(path, SMALL_CONFIG, crops_dir / "bounding_box_train")
    return path
