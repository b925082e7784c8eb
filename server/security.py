"""The security setup of one app: its keys, its audit log, SIGHUP, scheduled retention.

Called by :func:`server.app.create_app` and its lifespan; each piece is in its own module
(:mod:`server.auth`, :mod:`index.audit`, :mod:`server.retention`) and this one only
builds them from :class:`~server.settings.Settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Iterator

from index.audit import AuditLog
from index.retention import PruneResult, prune
from server.auth import KeyRing
from server.metrics import Metrics
from server.retention import RetentionSchedule
from server.service import SearchService
from server.settings import Settings

log = logging.getLogger(__name__)


def keyring_for(settings: Settings) -> KeyRing:
    """The keys of ``settings``; ReIDError for an unreadable or malformed keys file."""
    return KeyRing(
        write_key=settings.api_key.get_secret_value() if settings.api_key else None,
        read_key=settings.read_key.get_secret_value() if settings.read_key else None,
        keys_file=settings.keys_file,
    )


def announce_access(keyring: KeyRing) -> None:
    """One line saying who may read (never the keys)."""
    if keyring.reads_open:
        log.warning("reads are open: anyone who can reach this server may search the gallery and view "
                    "its crops (set --read-key or --keys-file to require a key)")
    else:
        log.info("reads need a key: %d key(s) accepted", len(keyring))


def open_audit_log(settings: Settings, metrics: Metrics) -> AuditLog:
    audit = AuditLog(settings.audit_path, max_bytes=settings.audit_max_bytes,
                     backups=settings.audit_backups, fsync=settings.audit_fsync)
    log.info("audit log: %s (fsync %s)", audit.path, audit.fsync)
    return audit


@contextlib.contextmanager
def reload_keys_on_sighup(keyring: KeyRing) -> Iterator[None]:
    """While inside, SIGHUP re-reads the keys file. Only the main thread's event loop can
    take signals: an app run in another thread (tests) goes without, and says so."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, keyring.reload)
    except (NotImplementedError, RuntimeError, ValueError):
        if keyring.keys_file is not None:
            log.warning("cannot watch SIGHUP here (not the main thread); keys file changes need a restart")
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def retention_schedule(settings: Settings, service: SearchService, audit: AuditLog,
                       metrics: Metrics) -> RetentionSchedule | None:
    """Pruning every ``retain_check_minutes`` when ``retain_days`` is set, else None."""
    if settings.retain_days is None:
        return None
    days = settings.retain_days
    run = functools.partial(prune, service.gallery, days, audit=audit, actor="retention")

    def counted(result: PruneResult) -> None:
        metrics.pruned_items.inc(len(result.removed_ids))

    log.info("retention: items older than %g day(s) are pruned every %g minute(s)", days,
             settings.retain_check_minutes)
    return RetentionSchedule(lambda: service.run_exclusive(run), settings.retain_check_minutes * 60.0,
                             on_pruned=counted)
