"""Gallery addresses: which backend a ``--gallery`` / ``--out`` value names.

* a folder path -> the FAISS folder gallery (:class:`index.gallery.Gallery`);
* a path ending in ``.db`` -> an embedded Milvus Lite file (one machine, tests);
* ``milvus://HOST:PORT/COLLECTION`` -> a collection on a Milvus server, authenticated with the
  token in the environment variable :data:`TOKEN_ENV` (never a flag, never logged).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from training.core.errors import ReIDError

SCHEME = "milvus://"
LITE_SUFFIX = ".db"
TOKEN_ENV = "REID_MILVUS_TOKEN"
#: The collection a Milvus Lite file holds the gallery in.
LITE_COLLECTION = "gallery"
_COLLECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class MilvusAddress:
    """A Milvus collection: ``uri`` is what the client connects to (a local ``.db`` path for
    Milvus Lite, ``http://HOST:PORT`` for a server); ``lite`` says which."""

    uri: str
    collection: str
    lite: bool

    def __str__(self) -> str:
        if self.lite:
            return self.uri
        return f"{SCHEME}{self.uri.removeprefix('http://')}/{self.collection}"

    def token(self) -> str:
        """The server token from :data:`TOKEN_ENV` ('' when unset or for Milvus Lite)."""
        return "" if self.lite else os.environ.get(TOKEN_ENV, "")


def parse_address(text: str | os.PathLike[str]) -> Path | MilvusAddress:
    """A folder ``Path`` for the FAISS gallery, or the :class:`MilvusAddress` that ``text``
    names. Raises ReIDError, in one line, for a malformed ``milvus://`` address."""
    raw = os.fspath(text)
    if raw.startswith(SCHEME):
        rest = raw[len(SCHEME):]
        host_port, _, collection = rest.partition("/")
        match = _HOST_PORT.match(host_port)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ReIDError(f"gallery address {raw!r}: expected milvus://HOST:PORT/COLLECTION")
        if not _COLLECTION.match(collection):
            raise ReIDError(f"gallery address {raw!r}: the collection name must be letters, digits "
                            "and underscores, not starting with a digit")
        return MilvusAddress(uri=f"http://{host_port}", collection=collection, lite=False)
    if raw.endswith(LITE_SUFFIX):
        return MilvusAddress(uri=str(Path(raw).absolute()), collection=LITE_COLLECTION, lite=True)
    return Path(raw)


def side_folder(address: Path | MilvusAddress) -> Path:
    """The local folder for a gallery's side files (build report, uploaded crops, audit log):
    the folder itself, ``X.db.d`` beside a Lite file ``X.db``, ``./milvus-side/COLLECTION`` for
    a server collection."""
    if isinstance(address, Path):
        return address
    if address.lite:
        return Path(address.uri + ".d")
    return Path("milvus-side") / address.collection
