"""Retrieval metrics; the implementation lives in :mod:`training.core.evaluation` (torch-free,
shared with the serving side). Kept here so ``from training.evaluation import evaluate`` works."""

from training.core.evaluation import *  # noqa: F403
from training.core.evaluation import __all__  # noqa: F401
