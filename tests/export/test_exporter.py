"""reid-export: the written file is the checkpoint's function, carries its contract, and a
broken export never reaches --out."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export import exporter
from export.checks import ExportCheckError
from export.cli import main
from export.contract import ModelContract
from export.contract import PRECISION_KEY
from export.exporter import OUTPUT_NAMES, ExportGraph, export_model
from export.runtime import CPU, Embedder
from export_data import SMALL_CONFIG, make_checkpoint
from training.checkpoint import load_checkpoint
from training.core.errors import ReIDError
from training.features import extract_features
from training.model import ModelConfig

H, W = SMALL_CONFIG.height, SMALL_CONFIG.width


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, checkpoint_path: Path) -> tuple[Path, str]:
    """One CLI export with the global+local embedding, and what it printed."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["--checkpoint", str(checkpoint_path), "--out", str(out), "--embedding", "global+local",
                     "--batch-check", "6", "--seed", "3", "--threads", "2"])
    assert code == 0
    return out, buffer.getvalue()


def torch_reference(checkpoint_path: Path, crops: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    graph = ExportGraph(load_checkpoint(checkpoint_path).build_model(), kind).eval()
    with torch.no_grad():
        values = graph(torch.from_numpy(crops))
    return {name: v.numpy() for name, v in zip(OUTPUT_NAMES, values)}


def test_cli_reports_every_check_passed(exported: tuple[Path, str]) -> None:
    out, printed = exported
    assert f"wrote {out}" in printed
    for check in ("onnx.checker", "graph ops", "runtime opens it", "ONNX Runtime vs PyTorch", "batch 1 vs batch 6"):
        assert f"[ok] {check}:" in printed
    assert "FAIL" not in printed
    assert "seed 3" in printed


def test_graph_keeps_the_bilstm_and_a_dynamic_batch(exported: tuple[Path, str]) -> None:
    model = onnx.load(str(exported[0]))
    assert "LSTM" in {node.op_type for node in model.graph.node}
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, H, W]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)


def test_metadata_round_trips_with_the_checkpoint_fingerprint(exported: tuple[Path, str], checkpoint_path: Path) -> None:
    ckpt = load_checkpoint(checkpoint_path)
    model = onnx.load(str(exported[0]), load_external_data=False)
    metadata = {p.key: p.value for p in model.metadata_props}
    contract = ModelContract.from_metadata(metadata, source="model.onnx")
    assert contract.fingerprint == ckpt.fingerprint()
    assert contract.input_size == (H, W)
    assert contract.embedding_kind == "global+local"
    assert contract.embedding_dim == 512 + 2 * 32 * 3
    assert contract.train_config_dict["model"] == SMALL_CONFIG.to_dict()
    assert contract.train_config_dict["train"] == {"lr": 0.01, "steps": 3}
    assert contract.producer_version.startswith("reid-uda ")
    assert metadata[PRECISION_KEY] == "float32"
    assert Embedder(exported[0], providers=[CPU], intra_op_threads=1).contract == contract


def test_onnx_matches_pytorch_at_a_new_batch_size(exported: tuple[Path, str], checkpoint_path: Path) -> None:
    crops = np.random.default_rng(11).random((5, 3, H, W), dtype=np.float32)  # not the checked 6
    got = Embedder(exported[0], providers=[CPU], intra_op_threads=1).run(crops)
    expected = torch_reference(checkpoint_path, crops, "global+local")
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4)
    norms = np.linalg.norm(got["embedding"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)  # global+local is unit length by design


def test_runtime_on_files_agrees_with_training_eval_on_files(exported: tuple[Path, str], checkpoint_path: Path,
                                                             crops_dir: Path) -> None:
    """The accuracy measured in training is the accuracy served: the same JPEGs through the
    training evaluation path (extract_features: decode_image + eval_transform + PyTorch) and the
    serving path (Embedder on the files)."""
    files = sorted((crops_dir / "query").glob("*.jpg"))[:8]
    expected = extract_features(load_checkpoint(checkpoint_path).build_model(), files, embedding="global+local")
    got = Embedder(exported[0], providers=[CPU], intra_op_threads=1).embed(files)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    cosine = np.sum(got * expected, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.99999


def test_global_embedding_is_pool5(checkpoint_path: Path, tmp_path: Path) -> None:
    report = export_model(checkpoint_path, tmp_path / "g.onnx", embedding="global", batch_check=3, seed=0, threads=1)
    assert report.contract.embedding_kind == "global" and report.contract.embedding_dim == 512
    out = Embedder(tmp_path / "g.onnx", providers=[CPU], intra_op_threads=1).run(
        np.random.default_rng(0).random((2, 3, H, W), dtype=np.float32))
    np.testing.assert_array_equal(out["embedding"], out["global_feat"])


def _legacy_to_onnx(graph: ExportGraph, height: int, width: int, opset: int = 17) -> onnx.ModelProto:
    """The TorchScript exporter, which gets the BiLSTM wrong in torch 2.14 (docs/export.md)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (torch.rand(2, 3, height, width),), buffer, dynamo=False, opset_version=17,
                          input_names=["images"], output_names=list(OUTPUT_NAMES),
                          dynamic_axes={n: {0: "N"} for n in ("images", *OUTPUT_NAMES)})
    return onnx.load_from_string(buffer.getvalue())


def test_a_wrong_graph_is_refused_and_the_old_file_kept(checkpoint_path: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous model")
    monkeypatch.setattr(exporter, "to_onnx", _legacy_to_onnx)
    with pytest.raises(ExportCheckError) as info:
        export_model(checkpoint_path, out, batch_check=4, seed=0, threads=1)
    message = str(info.value)
    assert str(out) in message and "not written" in message and "ONNX Runtime vs PyTorch" in message
    failed = {r.name for r in info.value.results if not r.passed}
    assert "ONNX Runtime vs PyTorch" in failed  # local_feat is wrong, global_feat is not
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp file left


def test_missing_checkpoint_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.pt"
    assert main(["--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reid-export: error: ") and str(missing) in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("content", ["torch-dict", "onnx"])
def test_a_file_that_is_not_our_checkpoint_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     content: str) -> None:
    path = tmp_path / "other.pt"
    if content == "torch-dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    else:
        path.write_bytes(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])).SerializeToString())
    assert main(["--checkpoint", str(path), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "checkpoint" in err and err.count("\n") == 1


def test_model_without_the_local_branch_is_refused(tmp_path: Path) -> None:
    config = ModelConfig(**{**SMALL_CONFIG.to_dict(), "use_local": False})
    make_checkpoint(tmp_path / "g.pt", config, steps=0)
    with pytest.raises(ReIDError, match="BiLSTM"):
        export_model(tmp_path / "g.pt", tmp_path / "g.onnx")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch-check", "1"], "batch_check must be >= 2"),
        (["--quantize", "int8"], "needs --calibration"),
        (["--float-out", "x.onnx"], "only apply with --quantize"),
        (["--threads", "0"], "argument --threads: must be >= 1, got 0"),
    ],
)
def test_bad_values_are_one_line_errors(checkpoint_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        extra: list[str], message: str) -> None:
    assert main(["--checkpoint", str(checkpoint_path), "--out", str(tmp_path / "m.onnx"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("where", ["under-a-file", "a-folder"])
def test_unwritable_out_is_one_line_naming_the_path_before_exporting(
        checkpoint_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    # Before: "<parent>: File exists" from mkdir, or the name of a temp file after the whole export.
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    out, named = (a_file / "sub" / "m.onnx", a_file) if where == "under-a-file" else (tmp_path, tmp_path)
    assert main(["--checkpoint", str(checkpoint_path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    expected = "is a file, not a folder" if where == "under-a-file" else "is a folder; expected a file name"
    assert err == f"reid-export: error: {named}: {expected}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_default_resnet50_256x128_export_matches_pytorch(tmp_path: Path) -> None:
    config = ModelConfig(num_classes=751)  # the paper's configuration: ResNet-50, 256x128, stride 2
    ckpt = make_checkpoint(tmp_path / "r50.pt", config, steps=1)
    report = export_model(tmp_path / "r50.pt", tmp_path / "r50.onnx", batch_check=4, seed=1, threads=2)
    assert all(r.passed for r in report.checks)
    assert report.contract.fingerprint == ckpt.fingerprint()
    assert report.contract.embedding_dim == 2048 and report.contract.input_size == (256, 128)
    crops = np.random.default_rng(5).random((3, 3, 256, 128), dtype=np.float32)
    got = Embedder(tmp_path / "r50.onnx", providers=[CPU], intra_op_threads=2).run(crops)
    expected = torch_reference(tmp_path / "r50.pt", crops, "global")
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=2e-4)
