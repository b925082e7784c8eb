"""In-memory filter columns: which gallery ids pass a camera / time / label filter.

The columns are indexed by gallery id (ids are small, dense-ish int64 from SQLite's
AUTOINCREMENT), so a filter is a vectorised comparison producing a boolean mask over the id
range, which FAISS consumes as a bitmap selector. About 27 bytes per id ever issued.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from index.records import GalleryLabels, ItemRecord
from training.core.errors import ReIDError


class FilterColumns:
    """pid, camera (file-name number), timestamp and liveness per gallery id."""

    def __init__(self) -> None:
        self._alive = np.zeros(0, dtype=bool)
        self._has_pid = np.zeros(0, dtype=bool)
        self._has_cam = np.zeros(0, dtype=bool)
        self._pid = np.zeros(0, dtype=np.int64)
        self._camera = np.zeros(0, dtype=np.int64)
        self._ts = np.zeros(0, dtype=np.float64)  # NaN when unknown

    def _grow(self, max_id: int) -> None:
        size = self._alive.size
        if max_id < size:
            return
        new = max(max_id + 1, 2 * size, 1024)
        for name, fill in (("_alive", False), ("_has_pid", False), ("_has_cam", False),
                           ("_pid", 0), ("_camera", 0), ("_ts", np.nan)):
            old = getattr(self, name)
            grown = np.full(new, fill, dtype=old.dtype)
            grown[:size] = old
            setattr(self, name, grown)

    def add(self, ids: np.ndarray, records: Iterable[ItemRecord]) -> None:
        """Mark ``ids`` live with the fields of the matching ``records``."""
        records = list(records)
        if ids.size == 0:
            return
        self._grow(int(ids.max()))
        self._alive[ids] = True
        self._has_pid[ids] = [r.pid is not None for r in records]
        self._pid[ids] = [0 if r.pid is None else int(r.pid) for r in records]
        self._has_cam[ids] = [r.camera is not None for r in records]
        self._camera[ids] = [0 if r.camera is None else int(r.camera) for r in records]
        self._ts[ids] = [np.nan if r.timestamp is None else float(r.timestamp) for r in records]

    def remove(self, ids: np.ndarray) -> None:
        ids = ids[ids < self._alive.size]
        self._alive[ids] = False

    @property
    def count(self) -> int:
        return int(self._alive.sum())

    def mask(
        self,
        cameras: Iterable[int] | None = None,
        exclude_cameras: Iterable[int] | None = None,
        time_range: tuple[float | None, float | None] | None = None,
        labelled_only: bool = False,
    ) -> np.ndarray | None:
        """Boolean mask over ids ``[0, capacity)`` of live items passing every filter given,
        or None when no filter is given (everything live passes).

        Cameras are file-name numbers (``c1`` is 1).
        ``cameras`` keeps only items from those cameras (unknown camera fails);
        ``exclude_cameras`` drops items from those cameras (unknown camera passes);
        ``time_range=(start, end)`` keeps ``start <= timestamp <= end``, either bound may be
        None, unknown timestamps fail; ``labelled_only`` keeps items with a pid.
        """
        if cameras is None and exclude_cameras is None and time_range is None and not labelled_only:
            return None
        keep = self._alive.copy()
        if cameras is not None:
            keep &= self._has_cam & np.isin(self._camera, int_list(cameras, "cameras"))
        if exclude_cameras is not None:
            keep &= ~(self._has_cam & np.isin(self._camera, int_list(exclude_cameras, "exclude_cameras")))
        if time_range is not None:
            start, end = check_time_range(time_range)
            known = ~np.isnan(self._ts)
            keep &= known
            with np.errstate(invalid="ignore"):
                if start is not None:
                    keep &= self._ts >= start
                if end is not None:
                    keep &= self._ts <= end
        if labelled_only:
            keep &= self._has_pid
        return keep

    def pid_counts(self, mask: np.ndarray) -> dict[int, int]:
        """How many items of each pid the (labelled-only) ``mask`` lets through."""
        pids, counts = np.unique(self._pid[mask & self._has_pid], return_counts=True)
        return dict(zip(pids.tolist(), counts.tolist(), strict=True))

    def pids(self, ids: np.ndarray) -> np.ndarray:
        return self._pid[ids]

    def labels(self) -> GalleryLabels:
        """pid and camera of every live item, ascending by id (-1 where unknown)."""
        ids = np.flatnonzero(self._alive).astype(np.int64)
        pids = np.where(self._has_pid[ids], self._pid[ids], -1)
        cameras = np.where(self._has_cam[ids], self._camera[ids], -1)
        return GalleryLabels(ids=ids, pids=pids, cameras=cameras,
                             has_pid=self._has_pid[ids].copy(), has_camera=self._has_cam[ids].copy())

    def summary(self) -> tuple[int, int, dict[int | None, int]]:
        """(distinct pids, unlabelled items, items per camera with None for unknown)."""
        alive = self._alive
        identities = int(np.unique(self._pid[alive & self._has_pid]).size)
        unlabelled = int((alive & ~self._has_pid).sum())
        cams, counts = np.unique(self._camera[alive & self._has_cam], return_counts=True)
        per_camera: dict[int | None, int] = dict(zip(cams.tolist(), counts.tolist(), strict=True))
        unknown = int((alive & ~self._has_cam).sum())
        if unknown:
            per_camera[None] = unknown
        return identities, unlabelled, per_camera


def int_list(values: Iterable[int], name: str) -> list[int]:
    """``values`` as a list of camera numbers, or ReIDError naming ``name``."""
    if isinstance(values, (str, bytes)):
        raise ReIDError(f"{name} must be a collection of integer camera numbers (c1 is 1), got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ReIDError(f"{name} must hold integer camera numbers (c1 is 1), got {v!r}")
        out.append(int(v))
    return out


def check_time_range(time_range: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    """``(start, end)`` of a time-range filter, or ReIDError if it is not one."""
    try:
        start, end = time_range
    except (TypeError, ValueError) as exc:
        raise ReIDError(f"time_range must be (start, end), got {time_range!r}") from exc
    if start is not None and end is not None and start > end:
        raise ReIDError(f"time_range start {start} is after end {end}")
    return start, end
