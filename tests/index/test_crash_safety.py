"""Kill -9 during adds, and a full disk during a snapshot: the gallery must stay whole."""

from __future__ import annotations

import errno
import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gallery_data import make_population

import index.faiss_index
import index.manifest
from index.gallery import Gallery
from training.core.errors import ReIDError

WRITER = Path(__file__).with_name("gallery_writer.py")
N_ITEMS, BATCH = 15_000, 50


def _run_writer(folder: Path, kill_after: tuple[int, float] | None) -> list[str]:
    """Run the writer and return the lines it printed. With ``kill_after=(n, delay)``, SIGKILL
    it ``delay`` seconds after its n-th acknowledged batch (n=0: once it is ready): the child
    keeps writing meanwhile, so the kill lands at an arbitrary point of add or checkpoint."""
    proc = subprocess.Popen([sys.executable, str(WRITER), str(folder), str(N_ITEMS), str(BATCH)],
                            stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    target = kill_after[0] if kill_after else 0
    reached = threading.Event()

    def read() -> None:
        acks = 0
        for line in proc.stdout:
            # A line cut short by the kill has no newline: it was never acknowledged.
            if line.endswith("\n"):
                lines.append(line.rstrip("\n"))
            acks += line.startswith("ACK ")
            if line.startswith("READY") and target == 0 or acks >= target > 0:
                reached.set()
        reached.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        if not reached.wait(timeout=60):
            raise AssertionError("writer made no progress")
        if kill_after is not None:
            time.sleep(kill_after[1])
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    return lines


def _acked(lines: list[str]) -> dict[int, int]:
    out = {}
    for line in lines:
        if line.startswith("ACK "):
            for pair in line[4:].split():
                gid, j = pair.split(":")
                out[int(gid)] = int(j)
    return out


def _check_consistent(folder: Path, acked: dict[int, int]) -> int:
    """Open the gallery and check FAISS == SQLite, every acknowledged item present, no
    duplicate content. Returns the item count."""
    with Gallery.open(folder, expected_dim=64, expected_fingerprint="crash-model") as gallery:
        faiss_count = len(gallery)
        with sqlite3.connect(folder / "gallery.db") as db:
            rows = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            dupes = db.execute("SELECT content_hash FROM items GROUP BY content_hash HAVING COUNT(*) > 1").fetchall()
        assert faiss_count == rows
        assert not dupes
        items = {it.id: it for it in gallery.items(acked)}
        missing = set(acked) - set(items)
        assert not missing, f"{len(missing)} acknowledged ids lost, e.g. {sorted(missing)[:5]}"
        assert all(items[gid].path == f"item-{j}.jpg" for gid, j in acked.items())
        # The FAISS side holds them too: each acknowledged vector finds itself.
        sample = random.Random(0).sample(sorted(acked), min(20, len(acked)))
        if not sample:
            return faiss_count
        xq = np.stack([np.random.default_rng(acked[g]).standard_normal(64).astype(np.float32) for g in sample])
        assert gallery.search(xq, 1).I[:, 0].tolist() == sample
        return faiss_count


@pytest.mark.slow
def test_sigkill_during_adds_loses_nothing_acknowledged(tmp_path):
    folder = tmp_path / "g"
    acked: dict[int, int] = {}
    rng = random.Random()
    # (acknowledged batches to wait for, then seconds before the kill)
    kills = [(0, 0.0), (1, 0.0), (3, rng.uniform(0, 0.02)), (15, rng.uniform(0, 0.05)),
             (30, rng.uniform(0, 0.1)), (45, rng.uniform(0, 0.2))]
    counts = []
    for kill_after in kills:
        acked.update(_acked(_run_writer(folder, kill_after)))
        counts.append(_check_consistent(folder, acked))
    assert counts[-1] < N_ITEMS, "the writer finished before any kill: the test did not test anything"
    lines = _run_writer(folder, kill_after=None)
    assert lines[-1] == "DONE"
    acked.update(_acked(lines))
    assert _check_consistent(folder, acked) == N_ITEMS
    # Items committed just before a kill but never acknowledged are kept, not duplicated:
    # the universe is stored exactly once.
    with sqlite3.connect(folder / "gallery.db") as db:
        paths = sorted(r[0] for r in db.execute("SELECT path FROM items"))
    assert paths == sorted(f"item-{j}.jpg" for j in range(N_ITEMS))


def _snapshot_state(folder: Path) -> tuple[bytes, list[str]]:
    return (folder / "manifest.json").read_bytes(), sorted(p.name for p in folder.iterdir() if "faiss" in p.name)


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["index", "manifest"])
def test_full_disk_during_snapshot_keeps_previous_state(tmp_path, monkeypatch, where):
    folder = tmp_path / "g"
    pop = make_population(300, 16, seed=4)
    gallery = Gallery.create(folder, 16, "m", checkpoint_every=None)
    gallery.add(pop.xb[:200], pop.records[:200])
    gallery.checkpoint()
    before = _snapshot_state(folder)
    gallery.add(pop.xb[200:], pop.records[200:])  # committed to SQLite, not yet in a snapshot

    if where == "index":
        real_open = index.faiss_index.atomic_write_with.__globals__["atomic_open"]

        def write_half_then_fail(path, write):
            with real_open(path) as fh:
                fh.write(b"partial")
                _enospc()

        monkeypatch.setattr(index.faiss_index, "atomic_write_with", write_half_then_fail)
    else:
        monkeypatch.setattr(index.manifest, "atomic_write_bytes", _enospc)

    with pytest.raises(ReIDError, match="No space left on device.*unchanged"):
        gallery.checkpoint()
    assert _snapshot_state(folder) == before
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    # The live gallery keeps working and still holds everything.
    assert len(gallery) == 300
    with pytest.raises(ReIDError, match="No space left"):
        gallery.close()  # releases the gallery even though its final snapshot failed
    monkeypatch.undo()

    snap = json.loads(before[0])["snapshot"]
    assert snap["ntotal"] == 200
    with Gallery.open(folder) as reopened:
        assert len(reopened) == 300
        assert reopened.search(pop.xb[250:251], 1).I[0, 0] == 251
    with Gallery.open(folder) as reopened:  # the close above wrote a fresh snapshot
        assert json.loads((folder / "manifest.json").read_text())["snapshot"]["ntotal"] == 300
        assert len(reopened) == 300
