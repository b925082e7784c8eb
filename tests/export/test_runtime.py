"""The ONNX Runtime embedder, checked against a numpy evaluation of the same tiny graph."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

onnx = pytest.importorskip("onnx")
from onnx_models import (  # noqa: E402
    EMBED_DIM,
    GLOBAL_DIM,
    HEIGHT,
    MEAN,
    STD,
    WIDTH,
    TinyWeights,
    make_contract,
    numpy_oracle,
    write_model,
)

from export import runtime  # noqa: E402
from training.core.imageio import ImageDecodeError  # noqa: E402
from export.runtime import CPU, CUDA, Embedder, resolve_providers  # noqa: E402
from training.core.cores import usable_cores  # noqa: E402
from training.core.errors import ReIDError  # noqa: E402


@pytest.fixture()
def weights() -> TinyWeights:
    return TinyWeights()


@pytest.fixture()
def model_path(tmp_path: Path, weights: TinyWeights) -> Path:
    return write_model(tmp_path / "tiny.onnx", weights, make_contract(weights).to_metadata())


def random_batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, HEIGHT, WIDTH), dtype=np.float32)


def write_crops(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        path = folder / f"{i:04d}_c1_{i}.png"
        Image.fromarray(rng.integers(0, 256, (20 + i, 10 + i, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- correctness
def test_embed_matches_numpy_oracle(tmp_path: Path, model_path: Path, weights: TinyWeights) -> None:
    paths = write_crops(tmp_path, 3)
    embedder = Embedder(model_path)
    got = embedder.embed(paths)
    # The oracle decodes with plain PIL, resizes bilinear, scales by 1/255, and runs the graph.
    pixels = np.stack([
        np.asarray(Image.open(p).convert("RGB").resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR),
                   dtype=np.float32).transpose(2, 0, 1) / 255
        for p in paths
    ])
    expected = numpy_oracle(pixels, weights)["embedding"]
    assert got.shape == (3, EMBED_DIM) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_run_returns_every_named_output(model_path: Path, weights: TinyWeights) -> None:
    batch = random_batch(5)
    out = Embedder(model_path).run(batch)
    expected = numpy_oracle(batch, weights)
    assert set(out) == {"global_feat", "local_feat", "embedding"}
    for name, value in out.items():
        assert value.dtype == np.float32 and value.flags.c_contiguous
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-5)
    only = Embedder(model_path).run(batch, outputs=("local_feat",))
    assert list(only) == ["local_feat"]
    with pytest.raises(ValueError, match="pool5"):
        Embedder(model_path).run(batch, outputs=("pool5",))


def test_batch_one_equals_batch_n(model_path: Path) -> None:
    embedder = Embedder(model_path)
    batch = random_batch(6)
    together = embedder.embed_arrays(batch)
    one_by_one = np.concatenate([embedder.embed_arrays(batch[i:i + 1]) for i in range(6)])
    np.testing.assert_allclose(one_by_one, together, rtol=1e-6, atol=1e-6)


def test_batch_splitting_matches_one_big_batch(tmp_path: Path, model_path: Path) -> None:
    paths = write_crops(tmp_path, 7)
    big = Embedder(model_path, batch_size=32).embed(paths)
    split = Embedder(model_path, batch_size=3).embed(iter(paths))  # a generator works too
    np.testing.assert_allclose(split, big, rtol=1e-6, atol=1e-6)
    chunks = list(Embedder(model_path, batch_size=3).iter_embed(paths))
    assert [len(c) for c in chunks] == [3, 3, 1]


def test_every_image_kind_embeds_alike(tmp_path: Path, model_path: Path) -> None:
    (path,) = write_crops(tmp_path, 1)
    data = path.read_bytes()
    pixels = np.asarray(Image.open(path).convert("RGB"))
    embedder = Embedder(model_path)
    vectors = embedder.embed([path, str(path), data, Image.open(path), pixels])
    for row in vectors[1:]:
        np.testing.assert_array_equal(row, vectors[0])


def test_empty_input_gives_zero_rows(model_path: Path) -> None:
    embedder = Embedder(model_path)
    assert embedder.embed([]).shape == (0, EMBED_DIM)
    empty = embedder.embed_arrays(np.zeros((0, 3, HEIGHT, WIDTH), np.float32))
    assert empty.shape == (0, EMBED_DIM) and empty.dtype == np.float32
    outs = embedder.run(np.zeros((0, 3, HEIGHT, WIDTH), np.float32))
    assert outs["global_feat"].shape == (0, GLOBAL_DIM)


def test_properties_come_from_the_file(model_path: Path, weights: TinyWeights) -> None:
    embedder = Embedder(model_path)
    assert embedder.embedding_dim == EMBED_DIM
    assert embedder.input_size == (HEIGHT, WIDTH)
    assert embedder.input_size.height == HEIGHT
    assert embedder.fingerprint == weights.fingerprint()
    assert embedder.contract.embedding_kind == "global+local"
    assert embedder.contract.train_config_dict == {"arch": "tiny"}
    assert embedder.providers == [CPU]


# ---------------------------------------------------------------- input checks
def test_uint8_batch_is_refused(model_path: Path) -> None:
    with pytest.raises(ValueError, match="255"):
        Embedder(model_path).embed_arrays((random_batch(2) * 255).astype(np.uint8))


def test_normalised_batch_is_refused(model_path: Path) -> None:
    normalised = (random_batch(2) - MEAN) / STD
    with pytest.raises(ValueError, match="normalises"):
        Embedder(model_path).embed_arrays(normalised.astype(np.float32))


def test_wrong_batch_shape_is_refused(model_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 4\)"):
        Embedder(model_path).embed_arrays(np.zeros((2, 3, 4, 8), np.float32))


def test_undecodable_image_names_itself(tmp_path: Path, model_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not really a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        Embedder(model_path).embed(write_crops(tmp_path, 1) + [bad])


# ---------------------------------------------------------------- providers and threads
def test_auto_providers_on_cpu_log_one_info_line(
    model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="export.runtime"):
        embedder = Embedder(model_path)
    assert embedder.providers == [CPU]
    lines = [r for r in caplog.records if r.name == "export.runtime"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert CPU in lines[0].getMessage()


def test_missing_cuda_falls_back_to_cpu_with_a_warning(
    model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="export.runtime"):
        embedder = Embedder(model_path, providers=["cuda"])
    assert embedder.providers == [CPU]
    lines = [r for r in caplog.records if r.name == "export.runtime"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    message = lines[0].getMessage()
    assert CUDA in message and f"running on {CPU}" in message and "not available" in message


def test_silent_session_fallback_is_reported(
    model_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend this build lists CUDA: the session is asked for it, cannot use it, and
    # quietly runs on CPU. The embedder must notice by reading session.get_providers().
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: [CUDA, CPU])
    with caplog.at_level(logging.INFO, logger="export.runtime"), pytest.warns(UserWarning):
        embedder = Embedder(model_path)
    assert embedder.providers == [CPU]
    lines = [r for r in caplog.records if r.name == "export.runtime"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "fell back" in lines[0].getMessage() and CUDA in lines[0].getMessage()


def test_resolve_providers_orders_and_falls_back() -> None:
    available = ["TensorrtExecutionProvider", CUDA, CPU]
    assert resolve_providers("auto", available) == (["TensorrtExecutionProvider", CUDA, CPU], [])
    assert resolve_providers("auto", [CPU]) == ([CPU], [])
    assert resolve_providers(["cuda"], [CPU]) == ([CPU], [CUDA])
    assert resolve_providers([(CUDA, {"device_id": 1})], available) == (
        [(CUDA, {"device_id": 1}), CPU], []
    )


def test_thread_counts_reach_the_session(model_path: Path) -> None:
    assert Embedder(model_path, intra_op_threads=1).intra_op_threads == 1
    assert Embedder(model_path).intra_op_threads == usable_cores()
    with pytest.raises(ReIDError, match="intra_op_threads"):
        Embedder(model_path, intra_op_threads=0)


@pytest.mark.parametrize("spin,entry", [(True, "1"), (False, "0")])
def test_spinning_reaches_the_session(model_path: Path, spin: bool, entry: str) -> None:
    options = Embedder(model_path, intra_op_threads=2, spin=spin)._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry


# ---------------------------------------------------------------- bad model files
def test_random_bytes_are_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "noise.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(ReIDError, match="noise.onnx"):
        Embedder(path)


def test_empty_file_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.touch()
    with pytest.raises(ReIDError, match=r"empty\.onnx.*empty"):
        Embedder(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReIDError, match=r"gone\.onnx.*not found"):
        Embedder(tmp_path / "gone.onnx")


def test_onnx_without_metadata_is_refused(tmp_path: Path, weights: TinyWeights) -> None:
    path = write_model(tmp_path / "foreign.onnx", weights, metadata=None)
    with pytest.raises(ReIDError, match=r"foreign\.onnx.*not a ReID model"):
        Embedder(path)


def test_embedding_dim_disagreeing_with_graph_is_refused(
    tmp_path: Path, weights: TinyWeights
) -> None:
    lying = make_contract(weights, embedding_dim=EMBED_DIM + 4).to_metadata()
    path = write_model(tmp_path / "lying.onnx", weights, lying)
    with pytest.raises(ReIDError, match=r"lying\.onnx.*embedding_dim=8"):
        Embedder(path)


def test_input_size_disagreeing_with_graph_is_refused(tmp_path: Path, weights: TinyWeights) -> None:
    lying = make_contract(weights, input_height=HEIGHT * 2).to_metadata()
    path = write_model(tmp_path / "size.onnx", weights, lying)
    with pytest.raises(ReIDError, match=r"size\.onnx.*input_height"):
        Embedder(path)


def test_input_name_disagreeing_with_graph_is_refused(tmp_path: Path, weights: TinyWeights) -> None:
    metadata = make_contract(weights).to_metadata()
    path = write_model(tmp_path / "named.onnx", weights, metadata, input_name="x_in")
    with pytest.raises(ReIDError, match=r"named\.onnx.*'images'"):
        Embedder(path)


def test_fixed_batch_axis_is_refused(tmp_path: Path, weights: TinyWeights) -> None:
    metadata = make_contract(weights).to_metadata()
    path = write_model(tmp_path / "fixed.onnx", weights, metadata, batch_dim=1)
    with pytest.raises(ReIDError, match=r"fixed\.onnx.*dynamic batch"):
        Embedder(path)


# ---------------------------------------------------------------- serving installs have no torch
def test_serving_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import export.contract, training.core.imageio, export.runtime\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] == 'torch')\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
