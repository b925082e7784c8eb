"""The gallery's transactional store: one SQLite file holding metadata AND raw vectors.

Every add and every remove is a single SQLite transaction in WAL mode with
``synchronous=FULL``: once the call returns, the change survives a kill -9 or a power cut,
and a failed write (full disk) rolls back to the previous state. Each transaction bumps a
change counter; every item remembers the change that added it and every removal is logged
with the change that removed it, so a FAISS snapshot taken at change S can be brought up to
date by replaying what happened after S.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.records import GalleryItem, ItemRecord
from training.core.errors import ReIDError

DB_NAME = "gallery.db"
_VECTOR_DTYPE = np.dtype("<f4")
_IN_CHUNK = 500  # stays well under SQLite's bound-parameter limit

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER,
    camera INTEGER,
    timestamp REAL,
    path TEXT,
    content_hash TEXT,
    added_at REAL NOT NULL,
    add_seq INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX items_content_hash ON items (content_hash);
CREATE INDEX items_pid ON items (pid);
CREATE INDEX items_camera ON items (camera);
CREATE INDEX items_add_seq ON items (add_seq);
CREATE TABLE removals (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX removals_seq ON removals (seq);
INSERT INTO counter (name, value) VALUES ('change_seq', 0);
"""


@dataclass(frozen=True)
class FilterRow:
    """The fields the in-memory filters need, for one item."""

    id: int
    pid: int | None
    camera: int | None
    timestamp: float | None


@dataclass(frozen=True)
class VectorBatch:
    """``ids`` (n,) int64 with their vectors ``xb`` (n, dim) float32, ascending by id."""

    ids: np.ndarray
    xb: np.ndarray


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves so one call is one transaction.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60.0)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL fsyncs the WAL on every commit: an acknowledged add survives a power cut too.
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _chunks(values: Sequence, size: int = _IN_CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[arg-type]


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class MetadataStore:
    """SQLite store of gallery items. Writes must be serialised by the caller (one writer);
    reads may come from any thread, each on its own connection."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self._writer = _connect(path)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, dim: int, fingerprint: str) -> MetadataStore:
        """Create a fresh store at ``path`` (which must not exist) for ``dim``-d vectors."""
        conn = _connect(path)
        try:
            conn.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("dim", str(dim)), ("fingerprint", fingerprint), ("gallery_id", uuid.uuid4().hex)],
            )
        finally:
            conn.close()
        return cls(path, dim)

    @classmethod
    def open(cls, path: Path, dim: int, fingerprint: str) -> MetadataStore:
        """Open the store at ``path``; check it was made for this dimension and fingerprint."""
        if not path.is_file():
            raise ReIDError(f"gallery metadata {path} is missing: the gallery is incomplete")
        try:
            # Setting WAL mode on connect is the first read of the file: a damaged one fails here.
            store = cls(path, dim)
        except sqlite3.DatabaseError as exc:
            raise ReIDError(f"{path} is not a readable gallery database: {exc}") from exc
        try:
            meta = dict(store._read().execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            store.close()
            raise ReIDError(f"{path} is not a readable gallery database: {exc}") from exc
        if meta.get("dim") != str(dim) or meta.get("fingerprint") != fingerprint:
            store.close()
            raise ReIDError(
                f"{path} was made for dim {meta.get('dim')} / model {meta.get('fingerprint')}, "
                f"but the manifest says dim {dim} / model {fingerprint}: the gallery folder "
                "mixes files of two galleries; rebuild it"
            )
        return store

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._writer.close()

    def _read(self) -> sqlite3.Connection:
        """This thread's read connection (WAL lets it read while the writer commits)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # -- writes (one transaction each) ---------------------------------------------------

    def _bump(self, conn: sqlite3.Connection) -> int:
        conn.execute("UPDATE counter SET value = value + 1 WHERE name = 'change_seq'")
        return int(conn.execute("SELECT value FROM counter WHERE name = 'change_seq'").fetchone()[0])

    def _write_failed(self, what: str, exc: sqlite3.Error) -> ReIDError:
        if self._writer.in_transaction:
            self._writer.execute("ROLLBACK")
        return ReIDError(f"could not {what} in {self.path}: {exc}; nothing from this call was stored")

    def add_items(self, xb: np.ndarray, records: Sequence[ItemRecord]) -> tuple[np.ndarray, int]:
        """Store ``xb`` (n, dim) float32 with ``records``; return (ids (n,) int64, change seq)."""
        conn = self._writer
        now = time.time()
        ids = np.empty(len(records), dtype=np.int64)
        try:
            conn.execute("BEGIN IMMEDIATE")
            seq = self._bump(conn)
            for row, (vec, rec) in enumerate(zip(xb, records, strict=True)):
                cur = conn.execute(
                    "INSERT INTO items (pid, camera, timestamp, path, content_hash, added_at,"
                    " add_seq, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (
                        _opt_int(rec.pid),
                        _opt_int(rec.camera),
                        _opt_float(rec.timestamp),
                        rec.path,
                        rec.content_hash,
                        now,
                        seq,
                        vec.astype(_VECTOR_DTYPE, copy=False).tobytes(),
                    ),
                )
                ids[row] = cur.fetchone()[0]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._write_failed(f"add {len(records)} items", exc) from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return ids, seq

    def _remove(self, find: Callable[[sqlite3.Connection], list[int]]) -> tuple[np.ndarray, int]:
        """Delete the items ``find`` selects, in one transaction; return (removed ids, seq)."""
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            found = find(conn)
            removed = np.asarray(found, dtype=np.int64)
            if removed.size == 0:
                conn.execute("ROLLBACK")
                return removed, self.change_seq()
            seq = self._bump(conn)
            conn.executemany("INSERT INTO removals (id, seq) VALUES (?, ?)", [(i, seq) for i in found])
            conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in found])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._write_failed("remove items", exc) from exc
        return removed, seq

    def remove_ids(self, ids: Sequence[int]) -> tuple[np.ndarray, int]:
        """Remove the listed ids that exist; return (removed ids int64, change seq)."""
        wanted = [int(i) for i in dict.fromkeys(ids)]

        def find(conn: sqlite3.Connection) -> list[int]:
            found: list[int] = []
            for chunk in _chunks(wanted):
                q = ",".join("?" * len(chunk))
                found += [r[0] for r in conn.execute(f"SELECT id FROM items WHERE id IN ({q})", chunk)]
            return found

        return self._remove(find)

    def remove_column(self, column: str, value: int) -> tuple[np.ndarray, int]:
        """Remove every item whose ``column`` ("pid" or "camera") equals ``value``."""
        if column not in ("pid", "camera"):
            raise ValueError(f"cannot remove by column {column!r}")
        return self._remove(
            lambda conn: [r[0] for r in conn.execute(f"SELECT id FROM items WHERE {column} = ?", (value,))]
        )

    def run_script(self, script: str, *, what: str) -> None:
        """Run ``script`` (SQL statements, no transaction control) as one transaction; on an
        SQLite error roll back and raise ReIDError saying ``what`` failed. For format upgrades."""
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._write_failed(what, exc) from exc

    def prune_removals(self, upto_seq: int) -> None:
        """Forget removals a durable snapshot already reflects."""
        try:
            self._writer.execute("DELETE FROM removals WHERE seq <= ?", (upto_seq,))
        except sqlite3.Error:
            pass  # only housekeeping: the log is replayed idempotently

    # -- reads ---------------------------------------------------------------------------

    def change_seq(self) -> int:
        row = self._read().execute("SELECT value FROM counter WHERE name = 'change_seq'").fetchone()
        return int(row[0])

    def item_columns(self) -> list[str]:
        """Names of the ``items`` table's columns (tells a format-1 table from a current one)."""
        return [row[1] for row in self._read().execute("PRAGMA table_info(items)")]

    def count(self) -> int:
        return int(self._read().execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def contains_hashes(self, hashes: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(hashes))
        found: set[str] = set()
        conn = self._read()
        for chunk in _chunks(wanted):
            q = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in conn.execute(
                    f"SELECT DISTINCT content_hash FROM items WHERE content_hash IN ({q})", chunk
                )
            )
        return found

    def items_by_ids(self, ids: Iterable[int]) -> dict[int, GalleryItem]:
        wanted = [int(i) for i in dict.fromkeys(ids)]
        out: dict[int, GalleryItem] = {}
        conn = self._read()
        for chunk in _chunks(wanted):
            q = ",".join("?" * len(chunk))
            for row in conn.execute(
                "SELECT id, path, pid, camera, timestamp, content_hash, added_at"
                f" FROM items WHERE id IN ({q})",
                chunk,
            ):
                out[row[0]] = GalleryItem(*row)
        return out

    def ids_older_than(self, cutoff: float, timestamp_floor: float | None) -> list[int]:
        """Ids of items whose age reference is before ``cutoff`` (Unix seconds), ascending.

        The reference is the item's ``timestamp`` when ``timestamp_floor`` is given and the
        timestamp is at least that (a Unix time, not a frame number), else ``added_at``.
        """
        use_timestamps = timestamp_floor is not None
        rows = self._read().execute(
            "SELECT id FROM items WHERE (CASE WHEN ? AND timestamp IS NOT NULL AND timestamp >= ?"
            " THEN timestamp ELSE added_at END) < ? ORDER BY id",
            (use_timestamps, timestamp_floor if use_timestamps else 0.0, cutoff),
        ).fetchall()
        return [r[0] for r in rows]

    def filter_rows(self) -> Iterator[FilterRow]:
        for row in self._read().execute("SELECT id, pid, camera, timestamp FROM items ORDER BY id"):
            yield FilterRow(*row)

    def removals_after(self, seq: int) -> np.ndarray:
        rows = self._read().execute("SELECT id FROM removals WHERE seq > ?", (seq,)).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def iter_vectors(self, after_seq: int = 0, batch: int = 4096) -> Iterator[VectorBatch]:
        """Yield every item added by a change numbered ``> after_seq``, in id order, in batches
        of at most ``batch`` so memory stays flat however large the gallery."""
        conn = self._read()
        last_id = 0
        while True:
            rows = conn.execute(
                "SELECT id, vector FROM items WHERE add_seq > ? AND id > ? ORDER BY id LIMIT ?",
                (after_seq, last_id, batch),
            ).fetchall()
            if not rows:
                return
            yield self._to_batch(rows)
            last_id = rows[-1][0]

    def sample_vectors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Return up to ``n`` stored vectors chosen uniformly at random, (n', dim) float32."""
        conn = self._read()
        all_ids = np.asarray([r[0] for r in conn.execute("SELECT id FROM items")], dtype=np.int64)
        if all_ids.size > n:
            all_ids = np.sort(rng.choice(all_ids, size=n, replace=False))
        return self.vectors_by_ids(all_ids).xb

    def vectors_by_ids(self, ids: np.ndarray) -> VectorBatch:
        """The stored vectors of those ``ids`` that exist, ascending by id (duplicates once)."""
        conn = self._read()
        parts = []
        for chunk in _chunks(np.unique(ids).tolist()):
            q = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT id, vector FROM items WHERE id IN ({q}) ORDER BY id", chunk).fetchall()
            parts.append(self._to_batch(rows))
        if not parts:
            return VectorBatch(ids=np.empty(0, dtype=np.int64), xb=np.empty((0, self.dim), dtype=np.float32))
        return VectorBatch(ids=np.concatenate([p.ids for p in parts]), xb=np.concatenate([p.xb for p in parts]))

    def _to_batch(self, rows: list[tuple[int, bytes]]) -> VectorBatch:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        xb = np.frombuffer(b"".join(r[1] for r in rows), dtype=_VECTOR_DTYPE)
        return VectorBatch(ids=ids, xb=xb.reshape(len(rows), self.dim).astype(np.float32))
