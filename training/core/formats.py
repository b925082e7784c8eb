"""The image formats the project reads, and the file names that carry them: one table.

Everything that lists, accepts or serves image files derives from :data:`IMAGE_FORMATS`: the
decoder's accepted formats (``training.core.imageio``), the suffixes a folder scan picks up
(data sets, ``reid-index build``, calibration images) and the media types the server answers
with. Adding a format here adds it everywhere at once.

Standard library only (``training.core.datasets`` stays free of numpy and Pillow).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

__all__ = ["ImageFormat", "IMAGE_FORMATS", "ALLOWED_FORMATS", "IMAGE_SUFFIXES", "MEDIA_TYPES",
           "FORMAT_NAMES", "SUFFIX_NAMES"]


class ImageFormat(NamedTuple):
    """One accepted format: its file suffixes (lower case, with the dot) and media type."""

    suffixes: tuple[str, ...]
    media_type: str


#: Pillow format name -> how files of that format are named and served. GIF, TIFF, ICO, ...
#: are absent on purpose: crops do not arrive that way, and each extra decoder is extra attack
#: surface on an upload endpoint.
IMAGE_FORMATS: Mapping[str, ImageFormat] = MappingProxyType({
    "JPEG": ImageFormat((".jpg", ".jpeg"), "image/jpeg"),
    "PNG": ImageFormat((".png",), "image/png"),
    "BMP": ImageFormat((".bmp",), "image/bmp"),
    "WEBP": ImageFormat((".webp",), "image/webp"),
})

#: Pillow ``Image.format`` values the decoder accepts.
ALLOWED_FORMATS = frozenset(IMAGE_FORMATS)

#: File suffixes (lower case, with the dot) that folder scans treat as images.
IMAGE_SUFFIXES = frozenset(s for f in IMAGE_FORMATS.values() for s in f.suffixes)

#: File extension (lower case, no dot) -> media type, for serving stored crops.
MEDIA_TYPES: Mapping[str, str] = MappingProxyType(
    {s.lstrip("."): f.media_type for f in IMAGE_FORMATS.values() for s in f.suffixes}
)

#: For messages: "JPEG, PNG, BMP or WEBP".
FORMAT_NAMES = ", ".join(list(IMAGE_FORMATS)[:-1]) + " or " + list(IMAGE_FORMATS)[-1]

#: For messages: ".jpg/.jpeg/.png/.bmp/.webp".
SUFFIX_NAMES = "/".join(s for f in IMAGE_FORMATS.values() for s in f.suffixes)
