"""One table of image formats: what the decoder accepts is what folder scans list and the server serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.core.datasets import list_images
from training.core.formats import ALLOWED_FORMATS, IMAGE_FORMATS, IMAGE_SUFFIXES, MEDIA_TYPES
from training.core.imageio import ImageDecodeError, decode_image


def test_every_listed_suffix_decodes_and_nothing_else_is_listed(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (6, 4, 3), dtype=np.uint8)
    for fmt, image_format in IMAGE_FORMATS.items():
        for suffix in image_format.suffixes:
            Image.fromarray(pixels).save(tmp_path / f"a_{fmt}{suffix.upper()}", fmt)
    Image.fromarray(pixels).save(tmp_path / "a.gif", "GIF")
    Image.fromarray(pixels).save(tmp_path / "a.tiff", "TIFF")
    listed = list_images(tmp_path)
    assert {p.suffix.lower() for p in listed} == IMAGE_SUFFIXES
    for path in listed:
        assert decode_image(path).size == (4, 6)
    for refused in ("a.gif", "a.tiff"):
        with pytest.raises(ImageDecodeError) as err:
            decode_image(tmp_path / refused)
        assert err.value.reason == "unsupported_format"


def test_formats_suffixes_and_media_types_agree_with_pillow() -> None:
    assert ALLOWED_FORMATS == set(IMAGE_FORMATS)
    registered = Image.registered_extensions()  # ".jpg" -> "JPEG", as Pillow names them
    for fmt, image_format in IMAGE_FORMATS.items():
        assert Image.MIME[fmt] == image_format.media_type
        for suffix in image_format.suffixes:
            assert registered[suffix] == fmt
            assert MEDIA_TYPES[suffix.lstrip(".")] == image_format.media_type
