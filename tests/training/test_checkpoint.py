"""Checkpoints round-trip, fingerprint the weights, and never get replaced by a torn write."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, weights_fingerprint
from training.core.errors import ReIDError
from training.model import ModelConfig, ReIDModel


def small_checkpoint(seed: int = 0, epoch: int = 3) -> Checkpoint:
    torch.manual_seed(seed)
    config = ModelConfig(num_classes=5, backbone="resnet18", height=64, width=32, last_stride=1)
    model = ReIDModel(config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    return Checkpoint(config, model.state_dict(), epoch=epoch, train_config={"lr": 3e-4},
                      metrics={"mAP": 0.5}, optimizer_state=opt.state_dict())


def test_round_trip_rebuilds_the_same_function(tmp_path: Path) -> None:
    ckpt = small_checkpoint()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, ckpt)
    loaded = load_checkpoint(path)
    assert loaded.epoch == 3 and loaded.metrics == {"mAP": 0.5} and loaded.model_config == ckpt.model_config
    assert loaded.fingerprint() == ckpt.fingerprint()
    x = torch.rand(2, 3, 64, 32)
    a = ckpt.build_model()(x).global_feat
    b = loaded.build_model()(x).global_feat
    assert torch.equal(a, b)


def test_fingerprint_changes_with_any_weight() -> None:
    state = small_checkpoint().model_state
    before = weights_fingerprint(state)
    state = {k: v.clone() for k, v in state.items()}
    state["global_head.embed.weight"][0, 0] += 1e-6
    assert weights_fingerprint(state) != before


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, small_checkpoint(epoch=1))
    good = path.read_bytes()

    def torn_save(obj: object, fh: object) -> None:
        fh.write(b"PK\x03\x04 half a file")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(ReIDError, match="previous file is unchanged"):
        save_checkpoint(path, small_checkpoint(epoch=2))
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ReIDError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, small_checkpoint())
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ReIDError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ReIDError, match="not a reid-train checkpoint"):
        load_checkpoint(foreign)


def test_checkpoint_cut_anywhere_or_a_folder_is_one_line_for_reid_eval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli.evaluate import main

    whole = tmp_path / "whole.pt"
    save_checkpoint(whole, small_checkpoint())
    data = whole.read_bytes()
    cut = tmp_path / "cut.pt"
    # A cut a few kB in makes torch's zip reader seek beyond the end (an OSError with no file
    # name); later cuts fail in the record table (RuntimeError).
    for size in (20_000, len(data) // 2):
        cut.write_bytes(data[:size])
        assert main(["--checkpoint", str(cut), "--data", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{cut} is not a readable checkpoint" in err
    assert main(["--checkpoint", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert f"checkpoint {tmp_path} is a folder" in capsys.readouterr().err
