"""Tiny two-domain data and a tiny recipe shared by the training-run tests."""

from __future__ import annotations

from pathlib import Path

from training.cli.synth import main as synth_main


def make_two_domains(out: Path) -> Path:
    """duke (source) and market (target, with the camera-style oracle) under ``out``, 64x32 crops."""
    args = ["--out", str(out), "--ids", "12", "--images-per-id", "4", "--height", "64", "--width", "32",
            "--camstyle", "--distractors", "4", "--junk", "2", "--workers", "1"]
    assert synth_main(args) == 0
    return out


def tiny_args(root: Path, out: Path, *extra: str) -> list[str]:
    """reid-train arguments for a run of a few seconds: resnet18 at 64x32, 2 steps per epoch."""
    return [
        "--source", str(root / "duke"), "--target", str(root / "market"),
        "--camstyle", str(root / "market" / "camstyle"), "--out", str(out),
        "--backbone", "resnet18", "--height", "64", "--width", "32", "--last-stride", "1",
        "--ids-per-batch", "3", "--images-per-id", "2", "--target-batch", "2", "--max-steps-per-epoch", "2",
        "--pretrained", "none", "--device", "cpu", "--workers", "0", "--log-every", "1",
        *extra,
    ]
