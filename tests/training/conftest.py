"""Fixtures for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_data import make_two_domains


@pytest.fixture(scope="session")
def two_domains(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated duke (source) and market (target + camstyle/) data sets, shared read-only."""
    return make_two_domains(tmp_path_factory.mktemp("synth"))
