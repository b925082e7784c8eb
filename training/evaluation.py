"""Retrieval metrics and re-ranking; the implementation lives in :mod:`training.core.evaluation`
and :mod:`training.core.rerank` (torch-free, shared with the serving side). Kept here so
``from training.evaluation import evaluate, k_reciprocal`` works."""

from training.core import evaluation as _evaluation
from training.core import rerank as _rerank
from training.core.evaluation import *  # noqa: F403
from training.core.rerank import *  # noqa: F403

__all__ = [*_evaluation.__all__, *_rerank.__all__]
