"""How bytes become model input: the one decoder every caller uses (index build, server, runtime).

Two steps, kept apart so bulk indexing can run :func:`decode_image` in parallel workers and
resize wherever it likes:

1. :func:`decode_image`: path / bytes / file-like / PIL image / (H, W, 3) uint8 array ->
   an RGB ``PIL.Image``. Only :data:`~training.core.formats.ALLOWED_FORMATS` (JPEG, PNG, BMP,
   WEBP) are accepted, judged by the decoded format, not the file name; EXIF orientation is applied; palette, grey, alpha, CMYK and
   16-bit images become 8-bit RGB; oversized, truncated, empty and non-image inputs raise
   :class:`ImageDecodeError` with a machine-readable ``reason``.
2. :func:`resize_to_input`: RGB image -> float32 ``(3, H, W)`` in [0, 1], resized with the
   filter the model contract names. No mean/std normalisation: the model does that itself.

Torch-free: the serving install imports this module.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import BinaryIO, Literal, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from training.core.errors import ReIDError
from training.core.formats import ALLOWED_FORMATS, FORMAT_NAMES

# The accepted formats (and the file suffixes that go with them) are one table in
# training.core.formats; re-exported here because the decoder is where they are enforced.

#: Default pixel limit (width * height). Person crops are a few hundred pixels tall; this
#: leaves room for whole camera frames while keeping a decoded image under ~120 MB of RGB.
DEFAULT_MAX_PIXELS = 40_000_000

#: Background that transparent pixels are composited onto before dropping alpha.
ALPHA_BACKGROUND = (255, 255, 255)

DecodeReason = Literal[
    "empty",  # zero bytes
    "not_an_image",  # no decoder recognises the data
    "unsupported_format",  # a real image, but not in ALLOWED_FORMATS
    "too_large",  # more pixels than the limit (decompression bomb guard)
    "truncated",  # the data ends before the image does
    "corrupt",  # the decoder failed on damaged data
    "unreadable",  # the path could not be opened (missing, permission, directory)
    "invalid_array",  # a numpy array that is not (H, W, 3) uint8
]

ImageSource = Union[
    str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray
]

_FILTERS: Mapping[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

#: Resize filters :func:`resize_to_input` implements; the contract accepts exactly these.
INTERPOLATIONS: tuple[str, ...] = tuple(_FILTERS)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class ImageDecodeError(ReIDError):
    """An input that cannot be turned into an RGB image.

    ``reason`` is one of :data:`DecodeReason` (a server maps ``too_large`` to 413,
    ``unsupported_format`` to 415 and the rest to 400); ``source`` names the file, or
    ``<upload>`` for raw bytes. ``str(exc)`` is one line: ``<source>: <what went wrong>``.
    """

    def __init__(self, reason: DecodeReason, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.reason: DecodeReason = reason
        self.source = source


def decode_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Decode ``source`` into a fully loaded 8-bit RGB ``PIL.Image`` (mode ``"RGB"``).

    ``source`` is a path, raw bytes, a binary file-like object, a ``PIL.Image`` or a numpy
    array of shape (H, W, 3) and dtype uint8 in RGB order. ``name`` overrides how the
    input is named in errors (default: the path, the file object's ``name``, ``<upload>``
    for bytes). Images with more than ``max_pixels`` pixels are refused from their header,
    before any pixel data is decoded; animated files give their first frame.

    Raises:
        ImageDecodeError: with ``reason`` saying why (see :data:`DecodeReason`).
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if isinstance(source, np.ndarray):
        return _from_array(source, name or "<array>", max_pixels)
    if isinstance(source, Image.Image):
        label = name or (getattr(source, "filename", "") or "<image>")
        return _finish(source, label, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), name or "<upload>", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ImageDecodeError(
                "unreadable", label, f"cannot read image file ({exc.strerror or exc})"
            ) from None
        return _from_bytes(data, label, max_pixels)
    if hasattr(source, "read"):
        label = name or _stream_name(source)
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"{label}: file object must be opened in binary mode")
        return _from_bytes(bytes(data), label, max_pixels)
    raise TypeError(
        "image source must be a path, bytes, a binary file object, a PIL image or an "
        f"(H, W, 3) uint8 array; got {type(source).__name__}"
    )


def resize_to_input(
    image: Image.Image, height: int, width: int, interpolation: str = "bilinear"
) -> np.ndarray:
    """Resize an RGB image to the model input: float32, shape (3, height, width), in [0, 1].

    Uses PIL's resampling, which is what torchvision's ``Resize`` applies to PIL images
    during training, then divides by 255 in float32 like ``ToTensor``; the result is
    C-contiguous. Mean/std normalisation is deliberately absent: it lives in the model.
    """
    if image.mode != "RGB":
        raise ValueError(
            f"resize_to_input needs an RGB image, got mode {image.mode!r}; use decode_image"
        )
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got height={height} width={width}")
    try:
        resample = _FILTERS[interpolation]
    except KeyError:
        raise ValueError(
            f"unknown interpolation {interpolation!r}; expected one of {sorted(_FILTERS)}"
        ) from None
    resized = image.resize((width, height), resample=resample)
    pixels = np.asarray(resized, dtype=np.float32) / np.float32(255.0)  # (H, W, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def load_input(
    source: ImageSource,
    height: int,
    width: int,
    interpolation: str = "bilinear",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """:func:`decode_image` then :func:`resize_to_input`: float32 (3, height, width) in [0, 1]."""
    return resize_to_input(
        decode_image(source, max_pixels=max_pixels, name=name), height, width, interpolation
    )


def _stream_name(stream: object) -> str:
    name = getattr(stream, "name", None)
    return name if isinstance(name, str) and name else "<stream>"


def _from_bytes(data: bytes, label: str, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty", label, "empty input (0 bytes); expected an image file")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError(
            "not_an_image", label,
            f"not an image file; expected {FORMAT_NAMES}",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL's own guard fires inside open() above 2x Image.MAX_IMAGE_PIXELS (the warning
        # only raises when a warnings filter escalates it); report it like our own limit.
        raise ImageDecodeError(
            "too_large", label, f"image too large ({exc}); limit is {max_pixels} pixels"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError("corrupt", label, f"damaged image header ({exc})") from None
    return _finish(image, label, max_pixels)


def _finish(image: Image.Image, label: str, max_pixels: int) -> Image.Image:
    """Check format and size from the header, decode pixels, orient, and convert to RGB."""
    if image.format is not None and image.format not in ALLOWED_FORMATS:
        raise ImageDecodeError(
            "unsupported_format", label,
            f"image format {image.format} is not accepted; expected one of "
            f"{sorted(ALLOWED_FORMATS)}",
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError("corrupt", label, f"image has no pixels (size {width}x{height})")
    _check_pixels(width, height, label, max_pixels)
    try:
        # Decoding happens here, not in open(): a truncated file only fails now. PIL's
        # LOAD_TRUNCATED_IMAGES must stay False for that (this module never sets it).
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError("too_large", label, f"image too large ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        text = str(exc)
        if "truncated" in text or isinstance(exc, EOFError):
            raise ImageDecodeError(
                "truncated", label, f"image data is truncated ({text or 'unexpected end of data'})"
            ) from None
        raise ImageDecodeError("corrupt", label, f"cannot decode image data ({text})") from None
    image = _apply_orientation(image)
    return _to_rgb(image)


def _apply_orientation(image: Image.Image) -> Image.Image:
    # A malformed EXIF block must not cost the user an otherwise good image: keep it
    # unrotated. PIL raises many unrelated types from EXIF parsing, hence the broad catch.
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001
        return image
    return image if oriented is None else oriented


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        # PIL's convert() clips 16-bit values at 255 (mostly white); rescale instead.
        values = np.asarray(image).astype(np.int64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))  # (H, W, 3) uint8
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, P, CMYK (PIL undoes Adobe's inverted CMYK), YCbCr, LAB, HSV, F.
    return image.convert("RGB")


def _check_pixels(width: int, height: int, label: str, max_pixels: int) -> None:
    """The decompression-bomb guard, applied to the header's size before any pixel is decoded."""
    if width * height > max_pixels:
        raise ImageDecodeError(
            "too_large", label,
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
        )


def _from_array(array: np.ndarray, label: str, max_pixels: int) -> Image.Image:
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ImageDecodeError(
            "invalid_array", label,
            f"expected an (H, W, 3) uint8 RGB array, got shape {array.shape} dtype {array.dtype}",
        )
    height, width = array.shape[:2]
    if height < 1 or width < 1:
        raise ImageDecodeError("invalid_array", label, f"array has no pixels (shape {array.shape})")
    _check_pixels(width, height, label, max_pixels)
    return Image.fromarray(np.ascontiguousarray(array))  # (H, W, 3) uint8 -> mode "RGB"
