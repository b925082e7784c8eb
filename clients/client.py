"""``ReIDClient``: the search service over HTTP (httpx), with typed results.

Speaks HTTP only: nothing here imports the model, the index or the server, so a client
install needs just ``httpx``. Errors the server answers with become :class:`ReIDHTTPError`
carrying the server's ``error`` code and ``detail`` message. Camera numbers, sent and received,
are the numbers in the crops' file names (``c1`` is camera 1).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Union

import httpx

#: What can be uploaded: a path, raw bytes, or a binary file object.
ImageInput = Union[str, os.PathLike, bytes, BinaryIO]

API_KEY_HEADER = "X-API-Key"


class ReIDClientError(Exception):
    """The service could not be reached or answered something that is not its API."""


class ReIDHTTPError(ReIDClientError):
    """The service refused a request: ``status`` (e.g. 400, 401, 413, 422), its machine-readable
    ``error`` code and its ``detail`` message."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"HTTP {status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


@dataclass(frozen=True)
class Item:
    """A gallery item; ``camera`` is the file-name number (c1 is 1); ``distance`` is set when
    it comes from a search."""

    id: int
    pid: int | None
    camera: int | None
    timestamp: float | None
    path: str | None
    added_at: float
    image_url: str
    distance: float | None = None
    reranked_distance: float | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Item:
        return cls(id=d["id"], pid=d.get("pid"), camera=d.get("camera"), timestamp=d.get("timestamp"),
                   path=d.get("path"), added_at=d["added_at"], image_url=d["image_url"],
                   distance=d.get("distance"), reranked_distance=d.get("reranked_distance"))


@dataclass(frozen=True)
class Identity:
    pid: int
    distance: float
    items: list[Item]
    reranked_distance: float | None = None


@dataclass(frozen=True)
class Rerank:
    """How a search was re-ranked: k-reciprocal (``k1``, ``k2``, ``lambda_value``) on the
    query's ``shortlist`` nearest items."""

    shortlist: int
    k1: int
    k2: int
    lambda_value: float


@dataclass(frozen=True)
class Timings:
    decode_ms: float
    embed_ms: float
    search_ms: float
    total_ms: float
    batch_size: int


@dataclass(frozen=True)
class SearchResult:
    """Identities by best match, the k nearest items, and where the server spent its time;
    ``rerank`` says how the order was re-ranked (None: plain Euclidean), ``crops`` how many
    crops the query fused."""

    identities: list[Identity]
    matches: list[Item]
    gallery_size: int
    timings: Timings
    rerank: Rerank | None = None
    crops: int = 1

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SearchResult:
        return cls(
            identities=[Identity(pid=i["pid"], distance=i["distance"],
                                 items=[Item.from_json(m) for m in i["items"]],
                                 reranked_distance=i.get("reranked_distance")) for i in d["identities"]],
            matches=[Item.from_json(m) for m in d["matches"]],
            gallery_size=d["gallery_size"],
            timings=Timings(**d["timings"]),
            rerank=Rerank(**d["rerank"]) if d.get("rerank") else None,
            crops=d.get("crops", 1),
        )


@dataclass(frozen=True)
class AddResult:
    items: list[Item]
    gallery_size: int


@dataclass(frozen=True)
class RemoveResult:
    removed: int
    gallery_size: int


@dataclass(frozen=True)
class Stats:
    count: int
    identities: int
    unlabelled: int
    per_camera: dict[int | None, int]
    dim: int
    fingerprint: str
    index_type: str
    active_index: str
    device: str
    on_disk_bytes: int
    backend: str = "faiss"  # faiss, milvus-lite or milvus (servers before this field: faiss)
    address: str = ""


@dataclass(frozen=True)
class Health:
    alive: bool
    ready: bool
    detail: dict[str, Any]


class ReIDClient:
    """Client of one ``reid-serve`` instance. Use as a context manager or call :meth:`close`.

    ``api_key`` is sent with every call (header ``X-API-Key``): a write key for :meth:`add`,
    :meth:`remove` and :meth:`remove_identity`; for the reads too when the server protects them
    (a read key suffices there). ``verify``: True checks an ``https://`` server against the
    system's CAs; a path to a PEM file trusts that CA instead (a self-signed server
    certificate, say); an ``ssl.SSLContext`` is used as it is.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None,
                 verify: str | bool | ssl.SSLContext = True) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        if isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                                  transport=transport, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ReIDClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------

    def search(
        self,
        image: ImageInput | Sequence[ImageInput],
        *,
        k: int = 10,
        k_identities: int = 5,
        items_per_identity: int = 3,
        cameras: Sequence[int] | None = None,
        exclude_cameras: Sequence[int] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
        max_distance: float | None = None,
        rerank: bool = False,
        rerank_size: int | None = None,
    ) -> SearchResult:
        """Identities and items nearest to ``image`` (a path, bytes or a binary file), or to a
        list of crops of one person searched as one query (their mean embedding).

        ``cameras`` / ``exclude_cameras`` are camera numbers as in file names (c1 is 1).
        ``rerank`` re-ranks the ``rerank_size`` nearest items (default: the server's) by
        k-reciprocal distance; ``max_distance`` still cuts the original Euclidean distance.
        """
        params: dict[str, Any] = {"k": k, "k_identities": k_identities,
                                  "items_per_identity": items_per_identity}
        if rerank:
            params["rerank"] = "true"
        if rerank_size is not None:
            params["rerank_size"] = rerank_size
        for name, value in (("cameras", cameras), ("exclude_cameras", exclude_cameras)):
            if value:
                params[name] = list(value)
        for name, value in (("time_from", time_from), ("time_to", time_to), ("max_distance", max_distance)):
            if value is not None:
                params[name] = value
        crops = list(image) if isinstance(image, (list, tuple)) else [image]
        answer = self._request("POST", "/search", params=params, files=[("image", _read(c)) for c in crops])
        return SearchResult.from_json(answer)

    def add(
        self,
        images: Iterable[ImageInput],
        *,
        pid: int | Sequence[int] | None = None,
        camera: int | Sequence[int] | None = None,
        timestamp: float | Sequence[float] | None = None,
    ) -> AddResult:
        """Add crops in one transaction. Each of pid/camera/timestamp is one value for all crops
        or a sequence with one value per crop; ``camera`` is the file-name number (c1 is 1)."""
        files = [("files", _read(image)) for image in images]
        data = {name: [str(v) for v in _as_list(value)] for name, value in
                (("pid", pid), ("camera", camera), ("timestamp", timestamp)) if value is not None}
        answer = self._request("POST", "/gallery", files=files, data=data)
        return AddResult(items=[Item.from_json(i) for i in answer["items"]],
                         gallery_size=answer["gallery_size"])

    def remove(self, item_id: int) -> RemoveResult:
        """Remove one item; ``ReIDHTTPError`` 404 if there is no such id."""
        return RemoveResult(**self._request("DELETE", f"/gallery/{int(item_id)}"))

    def remove_identity(self, pid: int) -> RemoveResult:
        """Remove every item of identity ``pid``; ``ReIDHTTPError`` 404 if it has none."""
        return RemoveResult(**self._request("DELETE", "/gallery", params={"pid": int(pid)}))

    def stats(self) -> Stats:
        d = self._request("GET", "/gallery/stats")
        d["per_camera"] = {c["camera"]: c["count"] for c in d["per_camera"]}
        return Stats(**d)

    def health(self) -> Health:
        """Alive (``/healthz``) and ready (``/readyz``: model and gallery loaded)."""
        try:
            alive = self._http.get("/healthz").status_code == 200
            ready = self._http.get("/readyz")
        except httpx.HTTPError as exc:
            raise ReIDClientError(f"cannot reach {self._http.base_url}: {exc}") from exc
        return Health(alive=alive, ready=ready.status_code == 200, detail=_json(ready))

    def image(self, item: Item | int) -> bytes:
        """The stored crop of a gallery item."""
        url = item.image_url if isinstance(item, Item) else f"/gallery/{int(item)}/image"
        try:
            response = self._http.get(url)
        except httpx.HTTPError as exc:
            raise ReIDClientError(f"cannot reach {self._http.base_url}: {exc}") from exc
        _raise_for_status(response)
        return response.content

    def _request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ReIDClientError(f"cannot reach {self._http.base_url}: {exc}") from exc
        _raise_for_status(response)
        return _json(response)


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        error, detail = str(body.get("error", "error")), str(body.get("detail", response.text))
    except (ValueError, AttributeError):
        error, detail = "error", response.text.strip()[:500] or response.reason_phrase
    raise ReIDHTTPError(response.status_code, error, detail)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        return response.json()
    except ValueError as exc:
        raise ReIDClientError(f"{response.url} answered {response.status_code} with non-JSON content") from exc


def _read(image: ImageInput) -> tuple[str, bytes]:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "upload", bytes(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            return path.name, path.read_bytes()
        except OSError as exc:
            raise ReIDClientError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return Path(getattr(image, "name", "upload") or "upload").name, image.read()


def _as_list(value: object) -> list:
    # Any sequence (range, numpy array, ...) is one value per file, not one value for all.
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return list(value)
    return [value]
