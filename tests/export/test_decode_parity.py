"""One decoder for training and serving: the odd image kinds give the same pixels and vectors.

Each kind below decodes differently under a plain ``Image.open(...).convert("RGB")`` than under
the core decoder (rotation ignored, 16-bit values clipped to white, alpha dropped instead of
composited onto white), so these tests fail if any training-side path stops using it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.cli import main as export_main
from export.runtime import Embedder
from index.cli import main as index_main
from training.checkpoint import load_checkpoint
from training.cli.evaluate import main as eval_main
from training.core.datasets import Sample, list_images, load_dataset
from training.core.errors import ReIDError
from training.core.imageio import ImageDecodeError, decode_image, load_input
from training.data import SourceImages
from training.features import extract_features
from training.transforms import eval_transform

CPU = "CPUExecutionProvider"
EXIF_ORIENTATION = 0x0112


def _exif_rotated_jpeg(rgb: Image.Image, path: Path) -> None:
    # Stored sideways with orientation 6 ("rotate 90 clockwise to display"): upright once applied.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    rgb.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=95, exif=exif)


def _sixteen_bit_png(rgb: Image.Image, path: Path) -> None:
    grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    Image.fromarray(grey).save(path, "PNG")


def _rgba_png(rgb: Image.Image, path: Path) -> None:
    rgba = rgb.convert("RGBA")
    alpha = np.linspace(0, 255, rgb.width, dtype=np.uint8)[None, :].repeat(rgb.height, axis=0)
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(path, "PNG")


def _palette_png(rgb: Image.Image, path: Path) -> None:
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path, "PNG")


def _palette_png_transparent(rgb: Image.Image, path: Path) -> None:
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path, "PNG", transparency=0)


def _cmyk_jpeg(rgb: Image.Image, path: Path) -> None:
    rgb.convert("CMYK").save(path, "JPEG", quality=95)


#: kind -> (suffix, writer). Every kind is a file a data set folder lists (.jpg/.png).
ODD_KINDS: dict[str, tuple[str, Callable[[Image.Image, Path], None]]] = {
    "exif_rotated_jpeg": (".jpg", _exif_rotated_jpeg),
    "sixteen_bit_png": (".png", _sixteen_bit_png),
    "rgba_png": (".png", _rgba_png),
    "palette_png": (".png", _palette_png),
    "palette_png_transparent": (".png", _palette_png_transparent),
    "cmyk_jpeg": (".jpg", _cmyk_jpeg),
}


def rewrite_as(path: Path, kind: str) -> Path:
    """Replace the crop at ``path`` by the same picture written as ``kind``; returns the new path."""
    suffix, write = ODD_KINDS[kind]
    rgb = decode_image(path)
    target = path.with_suffix(suffix)
    path.unlink()
    write(rgb, target)
    return target


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory: pytest.TempPathFactory, crops_dir: Path) -> dict[str, Path]:
    """One file of every odd kind, each made from a different generated crop."""
    folder = tmp_path_factory.mktemp("odd")
    crops = list_images(crops_dir / "bounding_box_test")
    files = {}
    for crop, kind in zip(crops, ODD_KINDS):
        copy = folder / f"{kind}{crop.suffix}"
        shutil.copyfile(crop, copy)
        files[kind] = rewrite_as(copy, kind)
    return files


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory, checkpoint_path: Path) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert export_main(["--checkpoint", str(checkpoint_path), "--out", str(out), "--embedding", "global",
                        "--batch-check", "2", "--seed", "0", "--threads", "1"]) == 0
    return out


def test_the_odd_kinds_really_are_odd(odd_files: dict[str, Path]) -> None:
    """Guards the test data: each file is in the mode it claims, and a plain convert("RGB")
    would decode it differently from the core decoder (so the parity below means something)."""
    modes = {kind: Image.open(path).mode for kind, path in odd_files.items()}
    assert modes == {"exif_rotated_jpeg": "RGB", "sixteen_bit_png": "I;16", "rgba_png": "RGBA",
                     "palette_png": "P", "palette_png_transparent": "P", "cmyk_jpeg": "CMYK"}
    plain_differs = {
        kind: np.asarray(Image.open(path).convert("RGB")).shape != np.asarray(decode_image(path)).shape
        or not np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(decode_image(path)))
        for kind, path in odd_files.items()
    }
    assert plain_differs["exif_rotated_jpeg"] and plain_differs["sixteen_bit_png"] and plain_differs["rgba_png"]


def test_training_loader_and_runtime_give_the_same_array(odd_files: dict[str, Path], onnx_model: Path) -> None:
    embedder = Embedder(onnx_model, providers=[CPU], intra_op_threads=1)
    height, width = embedder.contract.input_size
    samples = [Sample(path, pid=0, camid=0) for path in odd_files.values()]
    loader = SourceImages(samples, eval_transform(height, width))
    for index, path in enumerate(odd_files.values()):
        training = loader[index][0].numpy()
        assert training.dtype == np.float32 and training.shape == (3, height, width)
        np.testing.assert_array_equal(training, embedder.preprocess(path), err_msg=path.name)
        np.testing.assert_array_equal(training, load_input(path, height, width), err_msg=path.name)


def test_a_palette_gif_is_refused_the_same_way_by_both(tmp_path: Path, odd_files: dict[str, Path],
                                                        onnx_model: Path) -> None:
    """GIF is not an accepted format (docs/runtime.md): training refuses it with serving's message."""
    gif = tmp_path / "0001_c1s1_000001_01.png"  # a GIF behind a data-set name and suffix
    decode_image(odd_files["palette_png"]).convert("P").save(gif, "GIF")
    loader = SourceImages([Sample(gif, pid=0, camid=0)], eval_transform(64, 32))
    with pytest.raises(ReIDError) as training:
        loader[0]
    with pytest.raises(ImageDecodeError) as serving:
        Embedder(onnx_model, providers=[CPU], intra_op_threads=1).preprocess(gif)
    assert serving.value.reason == "unsupported_format"
    assert str(training.value) == str(serving.value) and "format GIF is not accepted" in str(serving.value)


def test_checkpoint_and_onnx_export_give_the_same_embedding(odd_files: dict[str, Path], onnx_model: Path,
                                                             checkpoint_path: Path) -> None:
    files = list(odd_files.values())
    expected = extract_features(load_checkpoint(checkpoint_path).build_model(), files, embedding="global")
    got = Embedder(onnx_model, providers=[CPU], intra_op_threads=1).embed(files)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _last_json(text: str) -> dict:
    return json.loads(next(line for line in reversed(text.splitlines()) if line.startswith("{")))


@pytest.mark.slow
def test_reid_eval_and_reid_index_eval_agree_on_odd_images(tmp_path: Path, crops_dir: Path, checkpoint_path: Path,
                                                           onnx_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "market"
    shutil.copytree(crops_dir, data, ignore=shutil.ignore_patterns("camstyle"))
    kinds = list(ODD_KINDS)
    for split in ("query", "bounding_box_test"):
        for number, path in enumerate(list_images(data / split)):
            rewrite_as(path, kinds[number % len(kinds)])
    dataset = load_dataset(data)
    suffixes = {s.path.suffix for s in (*dataset.query, *dataset.gallery)}
    assert suffixes == {".jpg", ".png"} and len(dataset.gallery) >= len(kinds)  # every kind is in the gallery

    capsys.readouterr()
    assert eval_main(["--checkpoint", str(checkpoint_path), "--data", str(data), "--device", "cpu", "--json"]) == 0
    trained = _last_json(capsys.readouterr().out)
    assert index_main(["eval", "--model", str(onnx_model), "--data", str(data), "--quiet", "--json",
                       "--workers", "1", "--threads", "1"]) == 0
    deployed = _last_json(capsys.readouterr().out)
    assert deployed["num_queries"] == trained["num_queries"] == len(dataset.query)
    for metric in ("mAP", "rank1", "rank5", "mINP"):
        assert deployed[metric] == pytest.approx(trained[metric], abs=1e-6), metric
