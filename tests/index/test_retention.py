"""Retention pruning: exactly the expired items go, with their stored crops, and nothing else."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import index.store
from index.audit import default_audit_path, read_entries
from index.cli import main
from index.crops import CropStore
from index.gallery import Gallery
from index.records import ItemRecord
from index.retention import SECONDS_PER_DAY, UNIX_TIME_FLOOR, prune

NOW = 1_800_000_000.0  # the clock of these tests (2027-01-15)
DAY = SECONDS_PER_DAY


def _crop(i: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + i.to_bytes(4, "big") * 8  # only the signature is sniffed


def _generated_gallery(folder: Path, monkeypatch: pytest.MonkeyPatch,
                       now: float = NOW) -> tuple[dict[int, float], np.ndarray]:
    """Items added 40, 20 and 1 day(s) before ``now`` with every kind of timestamp (none, a
    frame number, Unix times on both sides of 30 days); returns each id's age reference
    (capture time when it is a Unix time, else time added) and the vectors."""
    rng = np.random.default_rng(0)
    crops = CropStore(folder)
    reference: dict[int, float] = {}
    xb_all = []
    with Gallery.create(folder, dim=8, fingerprint="f" * 64) as gallery:
        n = 0
        for added_days_ago in (40, 20, 1):
            added = now - added_days_ago * DAY
            monkeypatch.setattr(index.store.time, "time", lambda added=added: added)
            timestamps = [None, 1234.0, now - 45 * DAY, now - 10 * DAY, now - 31 * DAY, now - 29 * DAY]
            records = []
            for ts in timestamps:
                digest, rel, _ = crops.put(_crop(n % 14))  # some crops shared by two items
                records.append(ItemRecord(path=rel, pid=n % 5, camera=1 + n % 3, timestamp=ts, content_hash=digest))
                n += 1
            xb = rng.standard_normal((len(records), 8)).astype(np.float32)
            ids = gallery.add(xb, records)
            xb_all.append(xb)
            for i, rec in zip(ids.tolist(), records, strict=True):
                ts = rec.timestamp
                reference[i] = ts if ts is not None and ts >= UNIX_TIME_FLOOR else added
        monkeypatch.undo()
    return reference, np.concatenate(xb_all)


def test_prune_removes_exactly_the_expired_items_and_their_crops(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "g"
    reference, xb = _generated_gallery(folder, monkeypatch)
    expired = sorted(i for i, t in reference.items() if t < NOW - 30 * DAY)
    kept = sorted(set(reference) - set(expired))
    assert 0 < len(expired) < len(reference)
    with Gallery.open(folder) as gallery:
        hashes = {i.id: i.content_hash for i in gallery.items(reference)}
        dry = prune(gallery, 30, now=NOW, dry_run=True)
        assert dry.removed_ids == expired and len(gallery) == len(reference)
        result = prune(gallery, 30, now=NOW)
        assert result.removed_ids == expired
        assert sorted(i.id for i in gallery.items(reference)) == kept
        found = gallery.search(xb, len(reference))
        assert not {m.item.id for row in found.matches for m in row} & set(expired)
    store = CropStore(folder)
    kept_hashes = {hashes[i] for i in kept}
    for i in expired:
        gone = hashes[i] not in kept_hashes
        assert (store.find(hashes[i]) is None) == gone
    assert all(store.find(h) is not None for h in kept_hashes)
    assert result.crops_deleted == len({hashes[i] for i in expired} - kept_hashes) > 0


def test_by_added_ignores_capture_timestamps(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "g"
    _generated_gallery(folder, monkeypatch)
    with Gallery.open(folder) as gallery:
        added = {i.id: i.added_at for i in gallery.items(range(1, 100))}
        result = prune(gallery, 30, now=NOW, by_added=True)
    assert result.removed_ids == sorted(i for i, t in added.items() if t < NOW - 30 * DAY)


def test_cli_prune_writes_the_audit_log_and_a_later_prune_finds_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "g"
    reference, _ = _generated_gallery(folder, monkeypatch, now=time.time())
    assert main(["prune", str(folder), "--older-than", "30", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = sorted(i for i, t in reference.items() if t < out["cutoff"])
    # per batch the 45- and 31-day captures; in the batch added 40 days ago also the two
    # items without a Unix capture time (none, a frame number)
    assert len(expected) == 8
    assert out["removed_ids"] == expected and out["gallery_size"] == len(reference) - len(expected)
    assert main(["prune", str(folder), "--older-than", "30"]) == 0
    assert "removed 0 item(s)" in capsys.readouterr().out
    entries = list(read_entries([default_audit_path(folder)]))
    assert [e["endpoint"] for e in entries] == ["prune", "prune"]
    assert entries[0]["ids"] == expected and entries[0]["key"] == "reid-index" and entries[0]["status"] == "ok"
    assert entries[1]["ids"] == []


@pytest.mark.parametrize("days", ["0", "-3", "soon", "nan", "inf"])
def test_bad_retention_is_one_line(tmp_path: Path, capsys, days: str) -> None:
    assert main(["prune", str(tmp_path), "--older-than", days]) == 2
    assert "positive number of days" in capsys.readouterr().err
