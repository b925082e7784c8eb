"""reid-train end to end on generated data: outputs, resume, torn checkpoints, gradients, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_data import tiny_args

from training import distributed
from training.checkpoint import load_checkpoint
from training.cli.train import main
from training.core.errors import ReIDError
from training.losses import UDALoss
from training.model import ReIDModel
from training.runlog import read_log
from training.trainer import TrainConfig, build_data, train_step


@pytest.fixture(autouse=True)
def few_threads() -> None:
    torch.set_num_threads(1)  # the machine is shared; a 1-thread run is also bit-reproducible


def test_a_tiny_run_writes_checkpoints_and_a_log(two_domains: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(two_domains, out, "--epochs", "2", "--eval-every", "1")) == 0
    last = load_checkpoint(out / "last.pt")
    assert last.epoch == 2 and last.train_config["epochs"] == 2
    assert set(last.metrics["eval"]) >= {"mAP", "rank1", "rank5", "rank10", "mINP"}
    assert last.optimizer_state["state"] and last.extra["best_mAP"] == max(
        r["mAP"] for r in read_log(out / "log.jsonl") if r["kind"] == "eval"
    )
    assert (out / "best.pt").is_file()
    records = read_log(out / "log.jsonl")
    assert [r["kind"] for r in records if r["kind"] != "step"] == ["start", "epoch", "eval", "epoch", "eval"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [(r["epoch"], r["step"]) for r in steps] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for name in ("total", "ce_global", "ce_local", "tri_source_global", "tri_source_local", "domain_global", "domain_local"):
        assert all(r[name] > 0 for r in steps), name
    # the total is the documented weighting of the terms
    r = steps[0]
    expected = r["ce_global"] + r["ce_local"] + r["tri_source_global"] + r["tri_source_local"] + 0.3 * (
        r["domain_global"] + r["domain_local"])
    assert r["total"] == pytest.approx(expected, rel=1e-5)
    assert main(tiny_args(two_domains, out, "--epochs", "2")) == 2  # never overwrites a run silently


def adam_steps(optimizer_state: dict) -> set[float]:
    return {float(s["step"]) for s in optimizer_state["state"].values()}


def test_resume_after_a_torn_checkpoint_equals_an_uninterrupted_run(
    two_domains: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--epochs", "2", "--eval-every", "0", "--seed", "3")
    assert main(tiny_args(two_domains, tmp_path / "straight", *args)) == 0
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")

    # The second epoch's checkpoint is cut off mid-write (disk full): the first must survive.
    real_save, saves = torch.save, []

    def torn_save(obj: object, fh) -> None:
        saves.append(1)
        if len(saves) == 2:
            fh.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(28, "No space left on device")
        real_save(obj, fh)

    monkeypatch.setattr(torch, "save", torn_save)
    out = tmp_path / "resumed"
    assert main(tiny_args(two_domains, out, *args)) == 2
    err = capsys.readouterr().err  # progress bars and log lines, then the error
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("reid-train: error:") and "previous file is unchanged" in last_line
    assert "Traceback" not in err
    assert load_checkpoint(out / "last.pt").epoch == 1
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "log.jsonl"]  # no temp file left
    monkeypatch.setattr(torch, "save", real_save)

    assert main(["--out", str(out), "--resume", "--workers", "0"]) == 0  # the recipe comes from last.pt
    resumed = load_checkpoint(out / "last.pt")
    assert resumed.epoch == straight.epoch == 2
    assert adam_steps(resumed.optimizer_state) == adam_steps(straight.optimizer_state) == {4.0}
    assert resumed.fingerprint() == straight.fingerprint()  # same weights, bit for bit
    epochs = [r["epoch"] for r in read_log(out / "log.jsonl") if r["kind"] == "epoch"]
    assert epochs == [1, 2]  # the lost epoch's records were dropped before it was redone


def test_every_parameter_receives_a_gradient_in_uda_mode(two_domains: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        source=str(two_domains / "duke"), target=str(two_domains / "market"),
        camstyle=str(two_domains / "market" / "camstyle"), out=str(tmp_path), backbone="resnet18",
        height=64, width=32, last_stride=1, p=3, k=2, target_batch=2, eval_every=0, workers=0, pretrained="none",
    )
    runtime = distributed.Runtime(torch.device("cpu"), 0, 1)
    data = build_data(config, runtime)
    model = ReIDModel(config.model_config(data.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    terms = train_step(model, UDALoss(), optimizer, scaler, next(iter(data.source)), next(iter(data.target)), runtime.device)
    assert terms.domain_global.item() > 0 and terms.domain_local.item() > 0
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda args, root, tmp: args[:0] + args[2:], "--source DIR is required"),
        (lambda args, root, tmp: args[:5] + [str(tmp / "empty")] + args[6:], "has no camera-style image"),
        (lambda args, root, tmp: [*args, "--pretrained", "imagenet"], "ImageNet weights for resnet18"),
        (lambda args, root, tmp: [*args, "--ids-per-batch", "50"], "only 6 identities"),
        (lambda args, root, tmp: args[:1] + [str(tmp / "nowhere")] + args[2:], "does not exist"),
        (lambda args, root, tmp: ["--out", str(tmp / "out"), "--resume"], "last.pt does not exist"),
        (lambda args, root, tmp: [*args, "--target-batch", "0"], "--target-batch must be >= 1"),
        # torch's refusal of these bytes runs to six lines
        (lambda args, root, tmp: [*args, "--pretrained", str(tmp / "bytes.pth")],
         "bytes.pth is not a readable torch state dict"),
    ],
    ids=["missing-source", "empty-camstyle", "no-imagenet-weights", "p-too-large", "source-missing-folder",
         "resume-without-run", "zero-target-batch", "pretrained-not-torch"],
)
def test_bad_input_is_one_line_and_exit_2(
    two_domains: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    change, message: str,
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bytes.pth").write_bytes(bytes(range(256)) * 16)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached weights, no network
    args = change(tiny_args(two_domains, tmp_path / "out", "--epochs", "1"), two_domains, tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("reid-train: error:") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out" / "last.pt").exists()


def test_negative_seed_is_refused_up_front():
    # numpy's default_rng (the PK sampler's) rejects negative seeds only once batches are drawn
    with pytest.raises(ReIDError, match="--seed must be >= 0"):
        TrainConfig(source="s", out="o", mode="source-only", eval_every=0, seed=-1)
