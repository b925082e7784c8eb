"""Who is asking: API keys, their scopes, and the keys file.

Three sources of keys, all optional:

- the write key (``--api-key`` / ``REID_API_KEY``): scope ``write``, named ``write-key``;
- the read key (``--read-key`` / ``REID_READ_KEY``): scope ``read``, named ``read-key``;
- a keys file (``--keys-file``): one named key per person, each ``read`` or ``write``.

A ``write`` key may also read. With no read key and no keys file, reads need no key at all
(the server says so at start).

Keys file format (UTF-8 text, one key a line, ``#`` starts a comment)::

    # NAME   SCOPE  ID        HASH
    alice    read   3f9a1c2e  scrypt$16384$8$1$<salt, base64>$<hash, base64>

The file never holds a key, only its scrypt hash with a random salt; ``reid-keys add`` makes
a line and prints the key once. A key reads ``reid_<ID>_<secret>``: the id picks the line, so
a request costs at most one scrypt however many people hold keys, and a key once verified is
remembered (in memory, under a keyed hash) until the file is reloaded. Keys from the
command line or environment are compared with :func:`hmac.compare_digest`, as is every hash.

The file is re-read on :meth:`KeyRing.reload` (``reid-serve`` calls it on SIGHUP). A file that
cannot be read or parsed at a reload refuses every key it held until it is fixed and
reloaded again (fail closed: a key an operator meant to remove must not live on because of a
typo elsewhere in the file).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from training.core.errors import ReIDError

log = logging.getLogger(__name__)

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")
WRITE_KEY_NAME = "write-key"
READ_KEY_NAME = "read-key"
RESERVED_NAMES = frozenset({WRITE_KEY_NAME, READ_KEY_NAME})

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_ID_RE = re.compile(r"^[0-9a-f]{8}$")
_KEY_RE = re.compile(r"^reid_([0-9a-f]{8})_([A-Za-z0-9_-]{20,200})$")

#: scrypt cost for new entries: 16 MiB and tens of milliseconds per verification, paid once
#: per key per reload thanks to the verified-key cache.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_MAX_SCRYPT_N = 2**20  # a hand-edited huge cost would stall every request


@dataclass(frozen=True)
class Principal:
    """The holder of a key: its ``name`` (what the audit log records) and ``scope``."""

    name: str
    scope: Scope

    def may(self, scope: Scope) -> bool:
        """A write key may also read."""
        return self.scope == "write" or scope == "read"


@dataclass(frozen=True)
class KeyEntry:
    """One line of a keys file."""

    name: str
    scope: Scope
    key_id: str
    hash: str  # scrypt$N$r$p$salt$digest

    def line(self) -> str:
        return f"{self.name} {self.scope} {self.key_id} {self.hash}"


def hash_secret(secret: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$salt$digest`` of ``secret`` with a fresh 16-byte salt (base64 fields)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, n, r, p)
    return "$".join(["scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)])


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches a :func:`hash_secret` string (constant-time comparison)."""
    n, r, p, salt, digest = _parse_hash(stored)
    return hmac.compare_digest(_scrypt(secret, salt, n, r, p), digest)


def new_entry(name: str, scope: Scope, taken_ids: set[str] | frozenset[str] = frozenset()) -> tuple[KeyEntry, str]:
    """A keys-file entry for a freshly drawn key, and the key itself (shown once, never stored)."""
    _check_name(name)
    if scope not in SCOPES:
        raise ReIDError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    key_id = secrets.token_hex(4)
    while key_id in taken_ids:
        key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    return KeyEntry(name, scope, key_id, hash_secret(secret)), f"reid_{key_id}_{secret}"


def parse_keys_file(text: str, source: str = "keys file") -> list[KeyEntry]:
    """The entries of a keys file; ReIDError naming the line for anything malformed."""
    entries: list[KeyEntry] = []
    names: set[str] = set()
    ids: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source} line {number}"
        fields = line.split()
        if len(fields) != 4:
            raise ReIDError(f"{where}: expected NAME SCOPE ID HASH, got {len(fields)} field(s)")
        name, scope, key_id, stored = fields
        try:
            _check_name(name)
            if scope not in SCOPES:
                raise ReIDError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
            if not _ID_RE.match(key_id):
                raise ReIDError(f"id must be 8 lowercase hex digits, got {key_id!r}")
            _parse_hash(stored)
        except ReIDError as exc:
            raise ReIDError(f"{where}: {exc}") from None
        if name in names:
            raise ReIDError(f"{where}: name {name!r} appears twice")
        if key_id in ids:
            raise ReIDError(f"{where}: id {key_id} appears twice")
        names.add(name)
        ids.add(key_id)
        entries.append(KeyEntry(name, scope, key_id, stored))  # type: ignore[arg-type]
    return entries


def read_keys_file(path: Path) -> list[KeyEntry]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ReIDError(f"cannot read keys file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ReIDError(f"keys file {path} is not UTF-8 text") from None
    return parse_keys_file(text, str(path))


class KeyRing:
    """Every key the server accepts, and who holds each. Thread-safe; :meth:`reload` swaps
    the keys file's entries in one step."""

    def __init__(self, *, write_key: str | None = None, read_key: str | None = None,
                 keys_file: Path | None = None) -> None:
        if write_key is not None and read_key is not None and hmac.compare_digest(
                write_key.encode(), read_key.encode()):
            raise ReIDError("the read key and the write key are the same; give them different values")
        # Digests, so that comparing keys of different lengths takes the same time too.
        self._fixed = [(_digest(k), Principal(name, scope)) for k, name, scope in (
            (write_key, WRITE_KEY_NAME, "write"), (read_key, READ_KEY_NAME, "read")) if k]
        self.keys_file = Path(keys_file) if keys_file is not None else None
        self._by_id: dict[str, KeyEntry] = {}
        self._verified: dict[bytes, Principal] = {}
        self._cache_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        if self.keys_file is not None:
            self._by_id = {e.key_id: e for e in read_keys_file(self.keys_file)}  # bad at start: refuse to start

    @property
    def reads_open(self) -> bool:
        """No read key and no keys file: reads need no key."""
        return self.keys_file is None and not any(p.scope == "read" for _, p in self._fixed)

    @property
    def writes_possible(self) -> bool:
        return self.keys_file is not None or any(p.scope == "write" for _, p in self._fixed)

    def __len__(self) -> int:
        return len(self._fixed) + len(self._by_id)

    def reload(self) -> bool:
        """Re-read the keys file. On a bad file, log one error and accept none of its keys
        until a later reload succeeds (fail closed); returns whether the file was read."""
        if self.keys_file is None:
            return True
        try:
            entries = read_keys_file(self.keys_file)
        except ReIDError as exc:
            log.error("keys file not reloaded, its keys are refused until it is fixed: %s", exc)
            entries, ok = [], False
        else:
            ok = True
        with self._lock:
            self._by_id = {e.key_id: e for e in entries}
            self._verified = {}
        if ok:
            log.info("keys file %s reloaded: %d key(s)", self.keys_file, len(entries))
        return ok

    def identify(self, presented: str | None) -> Principal | None:
        """The holder of ``presented``, or None for a missing or unknown key. May run scrypt
        (tens of milliseconds): an event loop calls :meth:`identify_quickly` first."""
        decided, principal = self.identify_quickly(presented)
        if decided:
            return principal
        assert presented is not None
        match = _KEY_RE.match(presented)
        assert match is not None
        with self._lock:
            entry = self._by_id.get(match.group(1))
        if entry is None or not verify_secret(match.group(2), entry.hash):
            return None
        principal = Principal(entry.name, entry.scope)
        with self._lock:
            if self._by_id.get(entry.key_id) is entry:  # not reloaded away meanwhile
                self._verified[self._tag(presented)] = principal
        return principal

    def identify_quickly(self, presented: str | None) -> tuple[bool, Principal | None]:
        """``(True, holder or None)`` when that is known without hashing (a command-line key,
        a key verified since the last reload, a malformed or unknown key); ``(False, None)``
        when only :meth:`identify` can tell."""
        if not presented:
            return True, None
        presented_digest = _digest(presented)
        found = None
        for expected, principal in self._fixed:  # every comparison runs: no early exit to time
            if hmac.compare_digest(presented_digest, expected):
                found = principal
        if found is not None:
            return True, found
        match = _KEY_RE.match(presented)
        if match is None:
            return True, None
        tag = self._tag(presented)
        with self._lock:
            cached = self._verified.get(tag)
            known_id = match.group(1) in self._by_id
        if cached is not None:
            return True, cached
        return (False, None) if known_id else (True, None)

    def _tag(self, presented: str) -> bytes:
        # Keyed with a secret of this process: the cache's keys say nothing about the keys.
        return hmac.new(self._cache_key, presented.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ReIDError(f"key name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-', "
                        "starting with a letter or digit")
    if name in RESERVED_NAMES:
        raise ReIDError(f"key name {name!r} is reserved for the key given on the command line")


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise ReIDError("hash must read scrypt$N$r$p$salt$digest (made by reid-keys add)") from None
    if not (2 <= n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ReIDError(f"scrypt cost N={n} r={r} p={p} is out of range")
    if len(salt) < 8 or len(digest) < 16:
        raise ReIDError("scrypt salt or digest is too short")
    return n, r, p, salt, digest


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ValueError("not base64") from None
