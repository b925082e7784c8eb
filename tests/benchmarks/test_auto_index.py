"""benchmarks/auto_index.py at a tiny size: ``auto``'s thresholds are lowered so a few thousand
vectors take the gallery from exact through training to a retrain, in seconds."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from index import faiss_index

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def auto_index(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import each other as siblings
    import auto_index

    # Exact below 1,000 items; nlist follows 2 sqrt(N) from 16 lists up, so 1,000 -> 3,000
    # items also asks for more lists (16 -> 64) and the gallery retrains.
    monkeypatch.setattr(faiss_index, "AUTO_EXACT_BELOW", 1000)
    monkeypatch.setattr(faiss_index, "AUTO_MIN_NLIST", 16)
    return auto_index


def test_grows_through_the_layouts_and_passes_its_checks(auto_index, tmp_path: Path) -> None:
    out = tmp_path / "auto.md"
    assert auto_index.main(["--size", "3000", "--checkpoints", "500", "1500", "3000", "--out", str(out)]) == 0
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    layouts = [row.split("|")[2].strip() for row in rows]
    nlists = [row.split("|")[3].strip() for row in rows]
    assert layouts == ["flat", "ivf_sq8", "ivf_sq8"]
    assert nlists == ["-", "32", "64"]  # the retrain at 3,000 items is in the table
    nprobes = [row.split("|")[4].strip() for row in rows]
    assert nprobes[0] == "-" and all(p.isdigit() for p in nprobes[1:])
    assert "Checks passed" in table
    # The plot needs the bench extra; without it the table is still written.
    assert out.with_suffix(".png").is_file() == (importlib.util.find_spec("matplotlib") is not None)


def test_fails_on_low_recall_and_on_short_filtered_rows(auto_index) -> None:
    good = auto_index.Checkpoint(
        size=3000, layout="ivf_sq8", nlist=64, nprobe=32, add_s=1.0, slowest_add_s=0.5, qps1=100.0, qps64=1000.0,
        exact_qps1=10.0, exact_qps64=100.0, recall=0.97, camera_recall=0.99, camera_short=0, camera_pass=500,
        camera_qps64=500.0, time_recall=1.0, time_short=0, time_pass=300, time_qps64=400.0, load1=1.0)
    assert auto_index.failures([good], 0.95) == []
    assert "below 0.95" in auto_index.failures([dataclasses.replace(good, recall=0.9)], 0.95)[0]
    assert "time-filtered" in auto_index.failures([dataclasses.replace(good, time_short=2)], 0.95)[0]
    # Recall is judged at the last size only: the exact layout's perfect recall cannot hide a drop.
    assert auto_index.failures([good, dataclasses.replace(good, recall=0.5)], 0.95)
