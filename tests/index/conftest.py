"""Fixtures for the gallery tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from gallery_data import Population, make_population


@pytest.fixture
def population() -> Population:
    return make_population(400, 16, seed=1, unlabelled_every=7)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch-free contract-satisfying ONNX model: 16x8 input, 16-d embedding."""
    from onnx_models import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx", seed=0, embed_dim=16,
                            height=16, width=8)


@pytest.fixture(scope="session")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shapes as ``tiny_model``, other weights, so another fingerprint."""
    from onnx_models import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("model") / "other.onnx", seed=1, embed_dim=16,
                            height=16, width=8)


@pytest.fixture(scope="session")
def market_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Market-layout data set from reid-synth (with 0000 distractors and -1 junk)."""
    from training.cli.synth import main as synth

    root = tmp_path_factory.mktemp("synth") / "market"
    assert synth(["--out", str(root), "--domain", "market", "--ids", "8", "--images-per-id", "4",
                  "--height", "64", "--width", "32", "--distractors", "6", "--junk", "3",
                  "--workers", "1"]) == 0
    return root
