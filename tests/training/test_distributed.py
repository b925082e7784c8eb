"""reid-train under torchrun with two CPU processes (gloo): one run, one checkpoint, one log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_data import tiny_args

from training.checkpoint import load_checkpoint
from training.runlog import read_log


@pytest.mark.slow
def test_torchrun_two_processes_write_one_checkpoint(two_domains: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "training.cli.train", *tiny_args(two_domains, out, "--epochs", "2", "--eval-every", "2", "--val-ids", "2",
                                                        "--workers", "1"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "log.jsonl"]
    assert load_checkpoint(out / "last.pt").epoch == 2
    records = read_log(out / "log.jsonl")
    assert [r["kind"] for r in records].count("start") == 1 and records[0]["world_size"] == 2
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    assert [r["epoch"] for r in records if r["kind"] == "source_val"] == [2]
    assert [r["epoch"] for r in records if r["kind"] == "target_report"] == [2]
    assert done.stdout.count("wrote ") == 1  # only rank 0 reports
