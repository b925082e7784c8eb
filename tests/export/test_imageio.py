"""Decoding and resizing: what the index builder, the server and the runtime all accept."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.core.imageio import (
    ALLOWED_FORMATS,
    ImageDecodeError,
    decode_image,
    load_input,
    resize_to_input,
)
from training.core.errors import ReIDError

EXIF_ORIENTATION = 0x0112


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def random_rgb(height: int = 24, width: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_with_declared_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but which carries almost no pixel data.

    Decoding it fully would fail as truncated, so a ``too_large`` error proves the size
    was refused from the header alone.
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- round trips and sources
def test_png_round_trip_is_lossless() -> None:
    pixels = random_rgb()
    image = decode_image(encode(Image.fromarray(pixels), "PNG"))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_jpeg_round_trip_is_close() -> None:
    pixels = np.full((32, 16, 3), (200, 40, 90), dtype=np.uint8)
    image = decode_image(encode(Image.fromarray(pixels), "JPEG", quality=95))
    assert image.mode == "RGB" and image.size == (16, 32)
    assert np.abs(np.asarray(image).astype(int) - pixels).max() <= 3


@pytest.mark.parametrize("fmt", ["BMP", "WEBP"])
def test_other_allowed_formats_decode(fmt: str) -> None:
    pixels = random_rgb()
    options = {"lossless": True} if fmt == "WEBP" else {}
    image = decode_image(encode(Image.fromarray(pixels), fmt, **options))
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_every_source_kind_gives_the_same_pixels(tmp_path: Path) -> None:
    pixels = random_rgb()
    data = encode(Image.fromarray(pixels), "PNG")
    path = tmp_path / "crop.png"
    path.write_bytes(data)
    sources = [
        path,
        str(path),
        data,
        bytearray(data),
        memoryview(data),
        io.BytesIO(data),
        Image.open(io.BytesIO(data)),
        pixels,
    ]
    for source in sources:
        np.testing.assert_array_equal(np.asarray(decode_image(source)), pixels)


def test_format_is_judged_by_content_not_extension(tmp_path: Path) -> None:
    path = tmp_path / "actually_a_png.jpg"
    path.write_bytes(encode(Image.fromarray(random_rgb()), "PNG"))
    assert decode_image(path).size == (12, 24)
    gif = tmp_path / "actually_a_gif.png"
    gif.write_bytes(encode(Image.new("RGB", (8, 8)), "GIF"))
    with pytest.raises(ImageDecodeError) as err:
        decode_image(gif)
    assert err.value.reason == "unsupported_format"


# ---------------------------------------------------------------- orientation and modes
def test_exif_orientation_is_applied() -> None:
    # Stored 32 wide x 16 tall, left half red; orientation 6 means "rotate 90 degrees
    # clockwise to display", which puts the red half on top of a 16 x 32 image.
    stored = Image.new("RGB", (32, 16), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))
    exif = stored.getexif()
    exif[EXIF_ORIENTATION] = 6
    image = decode_image(encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert image.size == (16, 32)
    top, bottom = np.asarray(image)[:16], np.asarray(image)[16:]
    assert top[..., 0].mean() > 200 and top[..., 2].mean() < 50
    assert bottom[..., 2].mean() > 200 and bottom[..., 0].mean() < 50


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[:, :2] = (10, 20, 30, 255)  # opaque left half
    rgba[:, 2:] = (10, 20, 30, 0)  # transparent right half
    image = np.asarray(decode_image(encode(Image.fromarray(rgba), "PNG")))
    np.testing.assert_array_equal(image[:, :2], np.full((4, 2, 3), (10, 20, 30)))
    np.testing.assert_array_equal(image[:, 2:], np.full((4, 2, 3), 255))


def test_greyscale_becomes_three_equal_channels() -> None:
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    image = np.asarray(decode_image(encode(Image.fromarray(grey), "PNG")))
    assert image.shape == (4, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], grey)


def test_palette_with_transparency_is_composited() -> None:
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette_image.paste(1, (2, 0, 4, 4))
    data = encode(palette_image, "PNG", transparency=1)
    image = np.asarray(decode_image(data))
    np.testing.assert_array_equal(image[:, :2], np.full((4, 2, 3), (255, 0, 0)))
    np.testing.assert_array_equal(image[:, 2:], np.full((4, 2, 3), 255))


def test_cmyk_jpeg_becomes_rgb() -> None:
    cyan_free_red = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    image = decode_image(encode(cyan_free_red, "JPEG", quality=95))
    assert image.mode == "RGB"
    r, g, b = np.asarray(image).reshape(-1, 3).mean(axis=0)
    assert r > 240 and g < 15 and b < 15


def test_sixteen_bit_png_is_rescaled_not_clipped() -> None:
    deep = np.array([[0, 32896, 65535, 257 * 100]], dtype=np.uint16)
    image = np.asarray(decode_image(encode(Image.fromarray(deep), "PNG")))
    np.testing.assert_array_equal(image[0, :, 0], [0, 128, 255, 100])


# ---------------------------------------------------------------- rejections
def test_truncated_jpeg_is_rejected() -> None:
    data = encode(Image.fromarray(random_rgb(64, 64)), "JPEG")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data[: len(data) // 2])
    assert err.value.reason == "truncated"
    assert "<upload>" in str(err.value)


def test_truncated_png_is_rejected() -> None:
    data = encode(Image.fromarray(random_rgb(64, 64)), "PNG")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data[: len(data) // 2])
    assert err.value.reason == "truncated"


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_formats_outside_the_list_are_unsupported(fmt: str) -> None:
    assert fmt not in ALLOWED_FORMATS
    with pytest.raises(ImageDecodeError) as err:
        decode_image(encode(Image.new("RGB", (8, 8)), fmt))
    assert err.value.reason == "unsupported_format"
    assert fmt in str(err.value)


def test_random_bytes_are_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ImageDecodeError) as err:
        decode_image(path)
    assert err.value.reason == "not_an_image"
    assert str(path) in str(err.value)
    assert isinstance(err.value, ReIDError)


@pytest.mark.parametrize("source", [b"", io.BytesIO(b"")])
def test_empty_input_is_rejected(source: object) -> None:
    with pytest.raises(ImageDecodeError) as err:
        decode_image(source)
    assert err.value.reason == "empty"


def test_empty_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(ImageDecodeError, match="empty.png") as err:
        decode_image(path)
    assert err.value.reason == "empty"


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageDecodeError, match="nope.jpg") as err:
        decode_image(path)
    assert err.value.reason == "unreadable"


def test_pixel_limit_refuses_from_the_header() -> None:
    data = png_with_declared_size(5000, 5000)  # 25 Mpx, below PIL's own guard
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data, max_pixels=1_000_000, name="bomb.png")
    assert err.value.reason == "too_large"
    assert "bomb.png" in str(err.value) and "5000x5000" in str(err.value)
    # The same file under a generous limit gets as far as decoding, and is truncated:
    # so the refusal above happened before any pixel data was read.
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data, max_pixels=30_000_000)
    assert err.value.reason == "truncated"


def test_pil_decompression_bomb_error_is_too_large() -> None:
    # 20000 x 20000 exceeds twice PIL's MAX_IMAGE_PIXELS, so PIL raises inside open().
    with pytest.raises(ImageDecodeError) as err:
        decode_image(png_with_declared_size(20000, 20000), max_pixels=10**12)
    assert err.value.reason == "too_large"


def test_pil_decompression_bomb_warning_is_too_large_when_escalated() -> None:
    side = int((Image.MAX_IMAGE_PIXELS * 1.1) ** 0.5)  # between PIL's warning and error
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageDecodeError) as err:
            decode_image(png_with_declared_size(side, side), max_pixels=10**12)
    assert err.value.reason == "too_large"


def test_real_compressible_bomb_is_refused_quickly() -> None:
    # A genuine, valid 4000 x 4000 PNG that compresses to a few kB.
    data = encode(Image.new("L", (4000, 4000)), "PNG")
    assert len(data) < 100_000
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data, max_pixels=4_000_000)
    assert err.value.reason == "too_large"


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((4, 4, 4), dtype=np.uint8),
        np.zeros((4, 4, 3), dtype=np.float32),
        np.zeros((0, 4, 3), dtype=np.uint8),
    ],
)
def test_bad_arrays_are_rejected(array: np.ndarray) -> None:
    with pytest.raises(ImageDecodeError) as err:
        decode_image(array)
    assert err.value.reason == "invalid_array"


def test_decoding_never_turns_on_truncated_loading() -> None:
    from PIL import ImageFile

    decode_image(encode(Image.fromarray(random_rgb()), "JPEG"))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ---------------------------------------------------------------- resize
def test_resize_gives_float_chw_in_unit_range() -> None:
    image = decode_image(random_rgb(40, 20))
    x = resize_to_input(image, 16, 8)
    assert x.shape == (3, 16, 8) and x.dtype == np.float32 and x.flags.c_contiguous
    assert 0.0 <= x.min() and x.max() <= 1.0
    expected = np.asarray(image.resize((8, 16), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    np.testing.assert_array_equal(x, expected.transpose(2, 0, 1))


def test_resize_at_model_size_keeps_pixels() -> None:
    pixels = random_rgb(16, 8)
    x = resize_to_input(decode_image(pixels), 16, 8)
    np.testing.assert_array_equal(x, pixels.transpose(2, 0, 1).astype(np.float32) / 255)


def test_resize_matches_torchvision_training_transform() -> None:
    """Serving must feed the model what training did: torchvision Resize + ToTensor on PIL."""
    transforms = pytest.importorskip("torchvision.transforms")
    image = decode_image(random_rgb(50, 30, seed=3))
    train_side = transforms.Compose([transforms.Resize((16, 8)), transforms.ToTensor()])(image)
    np.testing.assert_array_equal(resize_to_input(image, 16, 8, "bilinear"), train_side.numpy())


def test_unknown_interpolation_is_refused() -> None:
    with pytest.raises(ValueError, match="interpolation"):
        resize_to_input(decode_image(random_rgb()), 8, 4, "area")


def test_load_input_decodes_and_resizes(tmp_path: Path) -> None:
    path = tmp_path / "crop.png"
    Image.fromarray(random_rgb(40, 20)).save(path)
    x = load_input(path, 16, 8)
    np.testing.assert_array_equal(x, resize_to_input(decode_image(path), 16, 8))
