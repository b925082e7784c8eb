"""kill -9 of a running `reid-index build`: the gallery stays whole and a re-run completes it."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from index.gallery import Gallery
from training.core.datasets import list_images, parse_reid_name

N_IMAGES = 240
KILLS = 4


def write_source(folder: Path) -> list[Path]:
    """Tiny PNG crops with Market names: pid i % 30, camera i % 6 + 1, frame i."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        pixels = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i % 30 + 1:04d}_c{i % 6 + 1}s1_{i:06d}_01.png")
    return list_images(folder)


def build_command(model: Path, gallery: Path, source: Path) -> list[str]:
    # Small batches and frequent snapshots: many commits, so kills land in adds and checkpoints.
    return [sys.executable, "-m", "index.cli", "build", "--model", str(model), "--out", str(gallery),
            str(source), "--batch-size", "4", "--workers", "2", "--checkpoint-every", "24", "--quiet"]


def committed_rows(gallery: Path) -> int:
    """Rows SQLite has committed, read from outside while the builder runs (0 before it exists)."""
    if not (gallery / "manifest.json").exists():
        return 0
    try:
        with sqlite3.connect(f"file:{gallery / 'gallery.db'}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])
    except sqlite3.Error:
        return 0


def kill_when(gallery: Path, proc: subprocess.Popen, rows: int, extra_delay: float) -> None:
    """SIGKILL ``proc`` once ``rows`` rows are committed, plus a random delay."""
    deadline = time.monotonic() + 60
    while committed_rows(gallery) < rows and proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError("the build made no progress")
        time.sleep(0.002)
    time.sleep(extra_delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_killed_build_leaves_a_whole_gallery_and_resumes(tmp_path: Path, tiny_model: Path) -> None:
    files = write_source(tmp_path / "src")
    gallery = tmp_path / "g"
    rng = random.Random(1234)
    partial = []
    for _ in range(KILLS):
        before = committed_rows(gallery)
        proc = subprocess.Popen(build_command(tiny_model, gallery, tmp_path / "src"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = min(N_IMAGES, before + rng.randint(0, N_IMAGES // KILLS))
        kill_when(gallery, proc, target, rng.uniform(0, 0.05))
        assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr.read().decode()
        if not (gallery / "manifest.json").exists():
            continue  # killed before the gallery existed: nothing to check yet
        with Gallery.open(gallery) as g:
            stored = committed_rows(gallery)
            assert len(g) == stored  # FAISS count == metadata rows after every kill
            partial.append(stored)
        assert stored >= before  # nothing that was committed was lost
    assert any(0 < n < N_IMAGES for n in partial), partial  # some kills landed mid-build

    done = subprocess.run(build_command(tiny_model, gallery, tmp_path / "src"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with Gallery.open(gallery) as g:
        assert len(g) == N_IMAGES
        hits = g.items(range(1, 10 * N_IMAGES))
    assert sorted(Path(item.path) for item in hits) == files  # every file once, none twice
    assert len({item.content_hash for item in hits}) == N_IMAGES
    for item in hits:
        name = parse_reid_name(item.path)
        assert (item.pid, item.camera) == (name.pid, name.camera)


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(tmp_path: Path, tiny_model: Path) -> None:
    files = write_source(tmp_path / "src")
    gallery = tmp_path / "g"
    proc = subprocess.Popen(build_command(tiny_model, gallery, tmp_path / "src"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while committed_rows(gallery) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the build finished before the interrupt landed")
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "reid-index: interrupted", err
    assert "Traceback" not in err
    with Gallery.open(gallery) as g:
        assert 0 < len(g) == committed_rows(gallery) < N_IMAGES
    done = subprocess.run(build_command(tiny_model, gallery, tmp_path / "src"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with Gallery.open(gallery) as g:
        assert sorted(Path(item.path) for item in g.items(range(1, 10 * N_IMAGES))) == files
