"""Schemathesis hooks for the service: real images where the schema declares image parts, and the
findings that only rules no OpenAPI schema can state explain (docs/server.md lists them).

Load with ``SCHEMATHESIS_HOOKS=schemathesis_hooks`` (the tests folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis import Case, HookContext, Response
from schemathesis.transport.serialization import Binary

#: media type -> Pillow format name: the formats the service decodes.
FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/bmp": "BMP", "image/webp": "WEBP"}

#: ``error`` codes of an upload refused for its content (training.core.imageio's reasons).
_NOT_AN_IMAGE = {"empty", "not_an_image", "truncated", "unsupported_format", "too_large"}


def _encode(fmt: str, height: int, width: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def image_bytes(fmt: str) -> st.SearchStrategy[bytes]:
    """Small crops (at most 48x24, a few KiB: under any upload limit) encoded as ``fmt``."""
    return st.builds(_encode, st.just(fmt), st.integers(1, 48), st.integers(1, 24), st.integers(0, 2**32 - 1))


# A part the schema declares as one of these media types is drawn from these strategies in
# requests meant to be valid, and is arbitrary bytes in the others.
for _media_type, _fmt in FORMATS.items():
    schemathesis.openapi.media_type(_media_type, image_bytes(_fmt))


#: The list-of-files fields of each operation (no media type a generator honours, see above).
_FILE_LISTS = {("POST", "/gallery"): "files", ("POST", "/search"): "image"}
_FILE_ROUTES = {f"{method} {path}" for method, path in _FILE_LISTS}


@schemathesis.hook
def before_generate_body(context: HookContext, strategy: st.SearchStrategy) -> st.SearchStrategy:
    """``POST /gallery`` ``files`` and ``POST /search`` ``image`` (several crops): each non-empty
    drawn part becomes a PNG made from its bytes, in valid and invalid requests alike (no schema
    rule judges a non-empty part's content, so this never makes an invalid request valid); an
    empty part stays empty."""
    operation = context.operation
    field = None if operation is None else _FILE_LISTS.get((operation.method.upper(), operation.path))
    if field is None:
        return strategy
    return strategy.map(lambda body: _files_as_images(body, field))


def _files_as_images(body: object, field: str) -> object:
    if not isinstance(body, dict) or not isinstance(body.get(field), list):
        return body
    return {**body, field: [_as_image(part) for part in body[field]]}


def _as_image(part: object) -> object:
    # Binary parts come as Binary (bytes inside a str), str or bytes, depending on the schema's
    # spelling (format: binary or contentMediaType) and the phase.
    data = part.data if isinstance(part, Binary) else part.encode() if isinstance(part, str) else part
    if not isinstance(data, bytes) or not data:
        return part
    seed = zlib.crc32(data)
    image = _encode("PNG", 1 + seed % 48, 1 + (seed >> 8) % 24, seed)
    return image if isinstance(part, bytes) else Binary(image)


@schemathesis.hook
def filter_failure(context: object, failure: object, case: Case, response: Response) -> bool:
    """Drop a "valid request refused" finding (ST202) only where a rule outside any schema refused
    it; keep every other finding.

    * ``POST /gallery`` and ``POST /search`` parts that are not images: a list of files has no
      media type a test generator honours (see server/openapi.py), so its valid-looking parts
      are random bytes where the body hook does not run (the coverage phase);
    * ``POST /gallery`` labels (pid, camera, timestamp) given neither once nor once per file;
    * ``POST /search`` with ``time_from`` after ``time_to``, or ``rerank_size`` without
      ``rerank=true``.
    """
    if getattr(failure, "code", None) != "ST202":
        return True
    try:
        body = response.json()
    except ValueError:
        return True
    error, detail = body.get("error"), str(body.get("detail", ""))
    route = f"{case.method.upper()} {case.operation.path}"
    if route in _FILE_ROUTES and response.status_code in (400, 413, 415) and error in _NOT_AN_IMAGE:
        return False
    if route == "POST /gallery" and response.status_code == 422 and " times for " in detail:
        return False
    if route == "POST /search" and response.status_code == 422 and " is after time_to=" in detail:
        return False
    if route == "POST /search" and response.status_code == 422 and "only applies with rerank=true" in detail:
        return False
    return True
