"""reid-train end to end on generated data: outputs, resume, torn checkpoints, gradients, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_data import tiny_args

from training import distributed
from training.checkpoint import Checkpoint, describe_selection, load_checkpoint, save_checkpoint
from training.cli.evaluate import main as eval_main
from training.cli.train import build_parser, main
from training.core.datasets import load_dataset
from training.core.errors import ReIDError
from training.losses import UDALoss
from training.model import ModelConfig, ReIDModel
from training.runlog import read_log
from training.trainer import TrainConfig, build_data, train_step
from training.validation import hold_out_source_ids


@pytest.fixture(autouse=True)
def few_threads() -> None:
    torch.set_num_threads(1)  # the machine is shared; a 1-thread run is also bit-reproducible


def test_a_tiny_run_writes_last_pt_and_no_checkpoint_chosen_on_target_labels(
    two_domains: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(two_domains, out, "--epochs", "2", "--eval-every", "1")) == 0
    last = load_checkpoint(out / "last.pt")
    assert last.epoch == 2 and last.train_config["epochs"] == 2
    assert last.train_config["source_triplet_weight"] == 0.0 and last.train_config["val_ids"] == 0
    assert last.selection == {"rule": "last epoch"}
    assert set(last.metrics["eval"]["target"]) >= {"mAP", "rank1", "rank5", "rank10", "mINP"}
    assert last.optimizer_state["state"]
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "log.jsonl"]  # no best.pt without --val-ids
    records = read_log(out / "log.jsonl")
    kinds = [r["kind"] for r in records if r["kind"] != "step"]
    assert kinds == ["start", "epoch", "target_report", "epoch", "target_report"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [(r["epoch"], r["step"]) for r in steps] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for name in ("total", "ce_global", "ce_local", "tri_source_global", "tri_source_local", "domain_global", "domain_local"):
        assert all(r[name] > 0 for r in steps), name
    # the total is Eq. 4: the source triplet is logged but weighs 0 by default
    r = steps[0]
    assert r["total"] == pytest.approx(r["ce_global"] + r["ce_local"] + 0.3 * (r["domain_global"] + r["domain_local"]),
                                       rel=1e-5)
    assert main(tiny_args(two_domains, out, "--epochs", "2")) == 2  # never overwrites a run silently


def test_val_ids_choose_best_pt_on_held_out_source_identities(
    two_domains: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(two_domains, out, "--epochs", "3", "--eval-every", "1", "--val-ids", "2",
                          "--source-triplet-weight", "1")) == 0
    records = read_log(out / "log.jsonl")
    val = [r for r in records if r["kind"] == "source_val"]
    assert [r["epoch"] for r in val] == [1, 2, 3] and all(r["num_valid_queries"] > 0 for r in val)
    best = load_checkpoint(out / "best.pt")
    first_best = max(val, key=lambda r: (r["mAP"], -r["epoch"]))
    assert best.selection == {"rule": "best held-out source mAP", "val_mAP": first_best["mAP"], "val_ids": 2}
    assert best.epoch == first_best["epoch"] and best.model_config.num_classes == 4  # 6 source ids - 2 held out
    step = next(r for r in records if r["kind"] == "step")
    assert step["total"] == pytest.approx(step["ce_global"] + step["ce_local"] + step["tri_source_global"]
                                          + step["tri_source_local"] + 0.3 * (step["domain_global"] + step["domain_local"]),
                                          rel=1e-5)
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(out / "best.pt"), "--data", str(two_domains / "market"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"checkpoint chosen by: best held-out source mAP (epoch {best.epoch} of 3" in printed


def test_held_out_source_split_is_query_gallery_of_unseen_identities(two_domains: Path) -> None:
    source = load_dataset(two_domains / "duke")
    split = hold_out_source_ids(source, 2)
    held = {s.pid for s in split.val.query} | {s.pid for s in split.val.gallery}
    trained = {source.train_original_pids[s.pid] for s in source.train} - held
    assert len(held) == 2 and split.num_train_pids == source.num_train_pids - 2
    assert sorted({s.pid for s in split.train}) == list(range(split.num_train_pids))
    assert len(split.train) + len(split.val.query) + len(split.val.gallery) == len(source.train)
    assert {(s.pid, s.camid) for s in split.val.query} == {(s.pid, s.camid) for s in split.val.query + split.val.gallery}
    assert len(split.val.query) == len({(s.pid, s.camid) for s in split.val.query})  # one query per id and camera
    assert trained and not trained & held
    assert hold_out_source_ids(source, 2).val == split.val  # the same identities whatever the run
    with pytest.raises(ReIDError, match="--val-ids must be 0 or between 2 and"):
        hold_out_source_ids(source, source.num_train_pids - 1)


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


def test_help_lists_the_loss_reading_and_the_held_out_source_option() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "--source-triplet-weight" in text and "(default: 0.0)" in text.split("--source-triplet-weight", 2)[2]
    assert "--val-ids" in text and "never on target labels" in text


def test_a_checkpoint_without_a_recorded_selection_says_so(tmp_path: Path) -> None:
    model = ReIDModel(ModelConfig(num_classes=3, backbone="resnet18", height=64, width=32, last_stride=1))
    save_checkpoint(tmp_path / "old.pt", Checkpoint(model.config, model.state_dict(), epoch=4))
    assert describe_selection(load_checkpoint(tmp_path / "old.pt")).startswith("not recorded (epoch 4)")
