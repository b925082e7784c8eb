"""The training log: ``OUT/log.jsonl``, one JSON object per line.

Kinds of record (field ``kind``): ``start`` (the recipe), ``step`` (every loss term of one
step), ``epoch`` (epoch means and images/s), ``source_val`` (mAP, CMC, mINP on held-out source
identities, which choose best.pt) and ``target_report`` (the same on the target's query/gallery,
reported only, never used to choose). Every record
carries ``epoch`` (1-based, the epoch it belongs to). On resume, records of epochs the
checkpoint does not contain are dropped first, so the log reads like one uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.core.fileio import atomic_write_bytes


class RunLog:
    """Append-only JSON-lines writer, flushed after each record."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, kind: str, **fields: Any) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"kind": kind, **fields}) + "\n")

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (work lost when a run stopped mid-epoch)."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if _epoch_of(line) <= epoch]
        atomic_write_bytes(self.path, "".join(line + "\n" for line in kept).encode())


def _epoch_of(line: str) -> float:
    """The record's epoch; a line torn by a kill mid-write counts as after every epoch."""
    try:
        return json.loads(line).get("epoch", 0)
    except ValueError:
        return float("inf")


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every record of a log, in order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
