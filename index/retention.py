"""Retention: remove gallery items older than a number of days, and the crops stored for them.

An item's age is measured from its capture ``timestamp`` when that is a Unix time (at or after
:data:`UNIX_TIME_FLOOR`; bulk-indexed galleries often store frame numbers instead, which are
not times), otherwise from the time it was added to the gallery (``added_at``, which every
item has). ``by_added=True`` ignores timestamps altogether.

Crash safety is that of any removal: the items go in one durable gallery transaction, then
unreferenced crops are deleted. A crash between the two leaves crops no item refers to, which
the next pruning (or any removal through the server) deletes; a pruning therefore always
sweeps, even when nothing expired.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from index.audit import AuditLog
from index.crops import CropStore
from index.protocol import GalleryBackend

log = logging.getLogger(__name__)

#: Timestamps at or after 2000-01-01T00:00:00Z are taken as Unix times; smaller ones (frame
#: numbers, seconds into a video) cannot be compared with the clock.
UNIX_TIME_FLOOR = 946_684_800.0
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class PruneResult:
    """What a pruning did: the ``cutoff`` (Unix seconds; older items expire), the ids that
    expired and were removed, and how many crop files were deleted."""

    cutoff: float
    removed_ids: list[int]
    crops_deleted: int
    dry_run: bool = False


def retention_cutoff(older_than_days: float, now: float | None = None) -> float:
    """Unix seconds before which an item has expired."""
    if not older_than_days > 0:
        raise ValueError(f"older_than_days must be positive, got {older_than_days}")
    return (time.time() if now is None else now) - older_than_days * SECONDS_PER_DAY


def prune(gallery: GalleryBackend, older_than_days: float, *, now: float | None = None, by_added: bool = False,
          dry_run: bool = False, audit: AuditLog | None = None, actor: str = "retention") -> PruneResult:
    """Remove every item older than ``older_than_days`` and the crops only they used.

    The caller serialises this with other writers of the crop store (the server holds its
    write lock). With ``dry_run`` nothing changes and the expiring ids are returned. Writes one
    ``prune`` entry to ``audit`` (when given) naming the removed ids, after the removal has
    committed, or with ``status: "error"`` if it failed.
    """
    cutoff = retention_cutoff(older_than_days, now)
    expired = gallery.ids_older_than(cutoff, None if by_added else UNIX_TIME_FLOOR)
    if dry_run:
        return PruneResult(cutoff, expired, 0, dry_run=True)
    try:
        removed = gallery.remove(expired) if expired else 0
        crops = CropStore(gallery.path).sweep(gallery.contains_hash)
    except BaseException as exc:
        if audit is not None:
            audit.write(_entry(actor, older_than_days, cutoff, expired, "error", error=str(exc)))
        raise
    if removed != len(expired):  # a writer outside the caller's lock; the ids are still gone
        log.warning("prune: %d of %d expired items were already gone", len(expired) - removed, len(expired))
    result = PruneResult(cutoff, expired, crops)
    if audit is not None:
        audit.write(_entry(actor, older_than_days, cutoff, expired, "ok", crops_deleted=crops))
    if expired:
        log.info("pruned %d item(s) older than %s day(s) from %s", len(expired), older_than_days, gallery.path)
    return result


def _entry(actor: str, days: float, cutoff: float, ids: list[int], status: str, **more: object) -> dict[str, object]:
    return {"event": "prune", "key": actor, "client": None, "endpoint": "prune",
            "filters": {"older_than_days": days, "cutoff": cutoff}, "ids": ids, "count": len(ids),
            "status": status, **more}
