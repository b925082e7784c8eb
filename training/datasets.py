"""ReID data sets on disk; the implementation lives in :mod:`training.core.datasets`
(torch-free, shared with the serving side). Kept here so ``from training.datasets import
load_dataset`` works."""

from training.core.datasets import *  # noqa: F403
from training.core.datasets import __all__  # noqa: F401
