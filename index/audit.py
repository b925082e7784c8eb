"""A gallery's audit log: one JSON object a line, appended, rotated by size.

Who searched, viewed, added and removed what: ``reid-serve`` writes a line per request
(:mod:`server.auditing`), ``reid-index prune`` a line per pruning.

Every line is written with a single ``write(2)`` on a file descriptor opened with
``O_APPEND``, so a process killed at any moment (even ``kill -9``) leaves only whole lines:
the kernel has either taken the line into the file or not. What a power cut may lose depends
on the ``fsync`` policy:

- ``always``: each line is on disk before the call returns (costs a disk flush per request);
- ``interval`` (default): a background thread flushes at most ``fsync_interval_s`` after a
  write, so a power cut loses at most that much; a killed process loses nothing;
- ``never``: the operating system flushes when it likes.

When the file would grow past ``max_bytes`` it is renamed to ``<name>.1`` (older ones shift
to ``.2`` ... up to ``backups``; the oldest is deleted) and a new file is started. One process
writes a given log at a time (the gallery lock already makes the server and ``reid-index
prune`` take turns).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from training.core.fileio import fsync_dir

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "interval", "never")
AUDIT_DIR = "audit"
AUDIT_NAME = "audit.jsonl"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_BACKUPS = 20


def default_audit_path(gallery: Path) -> Path:
    """Where a gallery's audit log lives unless told otherwise: ``<gallery>/audit/audit.jsonl``
    (a subfolder: the gallery itself only looks at its top-level files)."""
    return Path(gallery) / AUDIT_DIR / AUDIT_NAME


def utc_now_iso() -> str:
    """Now as ISO 8601 UTC with milliseconds, ``2026-11-29T11:30:00.123Z``: sorts as text,
    so ``jq 'select(.time >= "2026-11-22")'`` selects by date."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_entry(entry: Mapping[str, object]) -> bytes:
    """One line of JSON: ASCII only (no raw newline can appear inside), no NaN, ``\\n`` ended."""
    return (json.dumps(entry, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=str)
            + "\n").encode("ascii")


class AuditLog:
    """An append-only JSON-lines file. Thread-safe. ``on_entry(entry)`` is called after each
    successful write (the server counts entries for ``/metrics`` with it)."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
                 fsync: FsyncPolicy = "interval", fsync_interval_s: float = 1.0,
                 on_entry: Callable[[Mapping[str, object]], None] | None = None) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        if max_bytes < 1024 or backups < 1:
            raise ValueError("an audit log needs max_bytes >= 1024 and backups >= 1")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self._on_entry = on_entry
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = self._open()
        self._dirty = False
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        if fsync == "interval":
            self._flusher = threading.Thread(target=self._flush_every, args=(fsync_interval_s,),
                                             name="reid-audit-fsync", daemon=True)
            self._flusher.start()

    def write(self, entry: Mapping[str, object]) -> None:
        """Append one entry (a ``time`` field is added when missing). Raises OSError when the
        disk refuses; the caller decides whether the audited action may still go ahead."""
        if "time" not in entry:
            entry = {"time": utc_now_iso(), **entry}
        line = encode_entry(entry)
        with self._lock:
            if self._fd < 0:
                raise OSError(f"audit log {self.path} is closed")
            if os.fstat(self._fd).st_size + len(line) > self.max_bytes:
                self._rotate_locked()
            view = memoryview(line)
            while view:  # a regular file takes the whole line; a full disk may not
                view = view[os.write(self._fd, view):]
            if self.fsync == "always":
                os.fsync(self._fd)
            else:
                self._dirty = True
        if self._on_entry is not None:
            self._on_entry(entry)

    def close(self) -> None:
        self._closed.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._lock:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    if self.fsync != "never":
                        os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def files(self) -> list[Path]:
        """The log and its rotated files, oldest first (the order to read them in)."""
        rotated = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self.backups, 0, -1)]
        return [p for p in [*rotated, self.path] if p.exists()]

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _rotate_locked(self) -> None:
        if os.fstat(self._fd).st_size == 0:
            return  # a single line longer than max_bytes goes into an empty file as it is
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        name = self.path.name
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path.with_name(f"{name}.{self.backups}"))
        for i in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path.with_name(f"{name}.{i}"), self.path.with_name(f"{name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{name}.1"))
        self._fd = self._open()
        fsync_dir(self.path.parent)
        self._dirty = False
        log.info("audit log rotated: %s -> %s.1", self.path, name)

    def _flush_every(self, interval_s: float) -> None:
        while not self._closed.wait(interval_s):
            with self._lock:
                if not self._dirty or self._fd < 0:
                    continue
                # A duplicate descriptor: writers need not wait for the flush, and a rotation
                # may close the original meanwhile.
                fd, self._dirty = os.dup(self._fd), False
            try:
                os.fdatasync(fd)
            except OSError as exc:
                log.error("audit log %s: flush failed: %s", self.path, exc)
            finally:
                os.close(fd)


def read_entries(paths: list[Path]) -> Iterator[dict[str, object]]:
    """Every entry of these files in order (for tests and tools; ``jq`` reads them as well)."""
    for path in paths:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                yield json.loads(line)
