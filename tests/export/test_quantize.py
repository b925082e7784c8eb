"""Int8 export: calibrated on generated crops, close to fp32, its own fingerprint, checked."""

from __future__ import annotations

import contextlib
import io
import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.checks import ExportCheckError
from export.cli import main
from export.contract import PRECISION_KEY, SOURCE_FINGERPRINT_KEY
from export.quantize import QuantizeOptions, int8_fingerprint, quantize_model, split_crops
from export.runtime import CPU, Embedder
from onnx_models import TinyWeights, write_model
from training.checkpoint import load_checkpoint
from training.core.errors import ReIDError


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory: pytest.TempPathFactory, checkpoint_path: Path, crops_dir: Path) -> tuple[Path, Path, str]:
    """fp32 and int8 files from one CLI run, and what it printed."""
    folder = tmp_path_factory.mktemp("int8")
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["--checkpoint", str(checkpoint_path), "--out", str(int8), "--float-out", str(fp32),
                     "--quantize", "int8", "--calibration", str(crops_dir), "--calibration-images", "48",
                     "--validation-images", "32", "--batch-check", "3", "--seed", "0", "--threads", "2"])
    assert code == 0
    return fp32, int8, buffer.getvalue()


def test_int8_is_close_to_fp32_on_held_out_crops(int8_export: tuple[Path, Path, str], crops_dir: Path) -> None:
    fp32, int8, printed = int8_export
    assert "[ok] int8 vs fp32 cosine" in printed and "FAIL" not in printed
    files = sorted((crops_dir / "query").glob("*.jpg"))
    a = Embedder(fp32, providers=[CPU], intra_op_threads=1).embed(files)
    b = Embedder(int8, providers=[CPU], intra_op_threads=1).embed(files)
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.99


def test_int8_graph_is_quantised_and_keeps_the_lstm(int8_export: tuple[Path, Path, str]) -> None:
    ops = [node.op_type for node in onnx.load(str(int8_export[1])).graph.node]
    assert "LSTM" in ops and ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert int8_export[1].stat().st_size < int8_export[0].stat().st_size / 3  # int8 weights


def test_int8_contract_is_fp32_with_a_derived_fingerprint(int8_export: tuple[Path, Path, str], checkpoint_path: Path) -> None:
    fp32, int8, _ = int8_export
    float_contract = Embedder(fp32, providers=[CPU], intra_op_threads=1).contract
    int8_contract = Embedder(int8, providers=[CPU], intra_op_threads=1).contract
    weights = load_checkpoint(checkpoint_path).fingerprint()
    assert float_contract.fingerprint == weights
    assert int8_contract.fingerprint == hashlib.sha256(f"{weights}+int8-qdq".encode()).hexdigest() == int8_fingerprint(weights)
    assert int8_contract.__class__(**{**vars(int8_contract), "fingerprint": weights}) == float_contract
    metadata = {p.key: p.value for p in onnx.load(str(int8), load_external_data=False).metadata_props}
    assert metadata[PRECISION_KEY] == "int8-qdq" and metadata[SOURCE_FINGERPRINT_KEY] == weights


def test_cosine_below_the_limit_writes_nothing(int8_export: tuple[Path, Path, str], crops_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    with pytest.raises(ExportCheckError, match="int8 vs fp32 cosine") as info:
        quantize_model(int8_export[0], out, crops_dir, QuantizeOptions(calibration_images=16, validation_images=8,
                                                                      min_cosine=1.0), threads=1)
    assert str(out) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_an_onnx_file_that_is_not_ours_is_named(tmp_path: Path, crops_dir: Path) -> None:
    foreign = write_model(tmp_path / "foreign.onnx", TinyWeights(), metadata=None)
    with pytest.raises(ReIDError, match="not a ReID model export") as info:
        quantize_model(foreign, tmp_path / "q.onnx", crops_dir)
    assert str(foreign) in str(info.value)
    assert not (tmp_path / "q.onnx").exists()


def test_empty_calibration_folder_is_named(int8_export: tuple[Path, Path, str], tmp_path: Path) -> None:
    with pytest.raises(ReIDError, match="holds no images") as info:
        quantize_model(int8_export[0], tmp_path / "q.onnx", tmp_path)
    assert str(tmp_path) in str(info.value)


def test_split_holds_validation_out_of_calibration() -> None:
    paths = [Path(f"{i}.jpg") for i in range(40)]
    calib, val, held_out = split_crops(paths, n_calib=100, n_val=8, seed=0)
    assert held_out and len(val) == 8 and len(calib) == 32 and not set(calib) & set(val)
    assert split_crops(paths, 100, 8, seed=0) == (calib, val, held_out)  # seeded
    assert split_crops(paths[:1], 10, 10, seed=0) == (paths[:1], paths[:1], False)
