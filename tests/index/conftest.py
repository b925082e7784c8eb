"""Fixtures for the gallery tests."""

from __future__ import annotations

import pytest
from gallery_data import Population, make_population


@pytest.fixture
def population() -> Population:
    return make_population(400, 16, seed=1, unlabelled_every=7)
