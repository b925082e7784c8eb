"""Entrance checks shared by every gallery backend: the shapes, dtypes and values a gallery
accepts, each refused with a one-line ReIDError that says what to change."""

from __future__ import annotations

import numpy as np

from index.records import ItemRecord
from training.core.errors import ReIDError


def check_matrix(x: object, dim: int, what: str) -> np.ndarray:
    """Return ``x`` as a C-contiguous (n, dim) float32 array of finite values, or raise."""
    if not isinstance(x, np.ndarray):
        raise ReIDError(f"{what} must be a numpy array of shape (n, {dim}), got {type(x).__name__}")
    if x.dtype != np.float32:
        raise ReIDError(f"{what} must have dtype float32, got {x.dtype} (convert with .astype(np.float32))")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ReIDError(f"{what} must have shape (n, {dim}) for this gallery, got {x.shape}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ReIDError(f"{what} has {bad} row(s) with NaN or infinite values")
    return np.ascontiguousarray(x)


def check_max_distance(value: object) -> None:
    """Raise ReIDError unless ``value`` is None or a non-negative number."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value >= 0:
        raise ReIDError(f"max_distance must be a non-negative number (Euclidean), got {value!r}")


def check_record(row: int, rec: object) -> None:
    """Raise ReIDError unless ``rec`` is an ItemRecord whose fields have storable types."""
    if not isinstance(rec, ItemRecord):
        raise ReIDError(f"metadata record {row} must be an ItemRecord, got {type(rec).__name__}")
    for name in ("pid", "camera"):
        value = getattr(rec, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise ReIDError(f"metadata record {row}: {name} must be an integer or None, got {value!r}")
    if rec.camera is not None and rec.camera < 1:
        raise ReIDError(f"metadata record {row}: camera is the number in the file name (c1 is 1), "
                        f"got {rec.camera!r}")
    ts = rec.timestamp
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float, np.integer, np.floating))
                           or not np.isfinite(ts)):
        raise ReIDError(f"metadata record {row}: timestamp must be a finite number or None, got {ts!r}")
    for name in ("path", "content_hash"):
        value = getattr(rec, name)
        if value is not None and not isinstance(value, str):
            raise ReIDError(f"metadata record {row}: {name} must be a string or None, got {value!r}")


def check_positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ReIDError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
