"""extract_features and reid-eval: exact preprocessing, batch independence, printed metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.checkpoint import Checkpoint, save_checkpoint
from training.cli.evaluate import main
from training.core.datasets import load_dataset
from training.core.evaluation import evaluate_features
from training.core.rerank import ExpansionParams, RerankParams, evaluate_reranked
from training.features import extract_features
from training.model import ModelConfig, ReIDModel


def tiny_model(use_local: bool = True) -> ReIDModel:
    torch.manual_seed(0)
    config = ModelConfig(num_classes=4, backbone="resnet18", height=64, width=32, last_stride=1, use_local=use_local)
    return ReIDModel(config).eval()


def test_features_are_decode_bilinear_resize_div255_then_the_model(two_domains: Path) -> None:
    model = tiny_model()
    paths = [s.path for s in load_dataset(two_domains / "market").query[:5]]
    # an input of another size, so the resize matters
    big = two_domains.parent / "big.png"
    Image.open(paths[0]).convert("RGB").resize((48, 100)).save(big)
    paths.append(big)
    feats = extract_features(model, paths, batch_size=4)
    pixels = [np.asarray(Image.open(p).convert("RGB").resize((32, 64), Image.Resampling.BILINEAR), np.float32) / 255 for p in paths]
    x = torch.from_numpy(np.stack(pixels).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        expected = model(x).global_feat.numpy()
    assert feats.dtype == np.float32 and feats.shape == (6, 512)
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)
    one_by_one = extract_features(model, paths, batch_size=1)
    np.testing.assert_allclose(one_by_one, feats, rtol=1e-4, atol=1e-5)
    both = extract_features(model, paths, embedding="global+local")
    assert both.shape == (6, 512 + 1536) and np.allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    assert extract_features(model, [], embedding="global+local").shape == (0, 2048)


def test_reid_eval_prints_the_metrics_of_the_checkpoint(
    two_domains: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_model()
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, Checkpoint(model.config, model.state_dict(), epoch=7))
    data = load_dataset(two_domains / "market")
    qf = extract_features(model, [s.path for s in data.query])
    gf = extract_features(model, [s.path for s in data.gallery])
    expected = evaluate_features(qf, gf, [s.pid for s in data.query], [s.pid for s in data.gallery],
                                 [s.camid for s in data.query], [s.camid for s in data.gallery])

    assert main(["--checkpoint", str(ckpt), "--data", str(two_domains / "market"), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mAP"] == pytest.approx(expected.mAP) and result["rank1"] == pytest.approx(expected.cmc[0])
    assert result["mINP"] == pytest.approx(expected.mINP) and result["epoch"] == 7
    assert result["num_valid_queries"] == len(data.query)

    assert main(["--checkpoint", str(ckpt), "--data", str(two_domains / "market"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"mAP {100 * expected.mAP:.1f}%" in out and "R5" in out and "R10" in out and "mINP" in out


def test_reid_eval_rerank_and_aqe_score_the_reranked_distances(
    two_domains: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("faiss")
    model = tiny_model(use_local=False)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, Checkpoint(model.config, model.state_dict()))
    data = load_dataset(two_domains / "market")
    qf = extract_features(model, [s.path for s in data.query])
    gf = extract_features(model, [s.path for s in data.gallery])
    labels = ([s.pid for s in data.query], [s.pid for s in data.gallery],
              [s.camid for s in data.query], [s.camid for s in data.gallery])
    base = ["--checkpoint", str(ckpt), "--data", str(two_domains / "market"), "--device", "cpu", "--json"]

    expected = evaluate_reranked(qf, gf, *labels, rerank=RerankParams(k1=7, k2=3, lambda_value=0.2))
    assert main([*base, "--rerank", "--k1", "7", "--k2", "3", "--lambda", "0.2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mAP"] == pytest.approx(expected.mAP) and result["mINP"] == pytest.approx(expected.mINP)
    assert result["rerank"] == {"k1": 7, "k2": 3, "lambda": 0.2} and result["aqe"] is None
    plain = evaluate_features(qf, gf, *labels)
    assert expected.mAP != pytest.approx(plain.mAP)  # the options reach the scoring

    expected = evaluate_reranked(qf, gf, *labels, aqe=ExpansionParams(k=2, alpha=1.5))
    assert main([*base, "--aqe", "2", "--aqe-alpha", "1.5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mAP"] == pytest.approx(expected.mAP) and result["rank1"] == pytest.approx(expected.cmc[0])
    assert result["aqe"] == {"k": 2, "alpha": 1.5} and result["rerank"] is None

    for args, message in [(["--k1", "5"], "--k1 only apply with --rerank"),
                          (["--rerank", "--lambda", "2"], "--lambda must be in [0, 1]"),
                          (["--aqe-alpha", "2"], "--aqe-alpha only applies with --aqe K"),
                          (["--aqe", "0"], "--aqe K must be >= 1")]:
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_reid_eval_bad_input_is_one_line(two_domains: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model(use_local=False)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, Checkpoint(model.config, model.state_dict()))
    cases = [
        (["--checkpoint", str(tmp_path / "none.pt"), "--data", str(two_domains / "market")], "does not exist"),
        (["--checkpoint", str(ckpt), "--data", str(tmp_path)], "missing folder"),
        (["--checkpoint", str(ckpt), "--data", str(two_domains / "market"), "--embedding", "global+local"],
         "needs the local branch"),
    ]
    for args, message in cases:
        assert main([*args, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
