"""The server's own failures as JSON: a full disk during a gallery write is a 507 that leaves the
gallery as it was, a busy backend a 503, anything else a 500 with the same error body."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import index.store
from server.app import create_app
from server.settings import Settings
from service_data import AUTH, crop_bytes, fill_gallery, snapshot
from training.core.errors import BackendUnavailable


class FailingCommits:
    """A SQLite connection whose COMMITs fail with ``code`` while ``failing`` is set: how SQLite
    reports a full disk (SQLITE_FULL) or a busy database (SQLITE_BUSY) at the commit point."""

    failing: int | None = None

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if FailingCommits.failing is not None and sql.strip().upper() == "COMMIT":
            exc = sqlite3.OperationalError("database or disk is full")
            exc.sqlite_errorcode = FailingCommits.failing  # type: ignore[attr-defined]
            raise exc
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FailingCommits]]:
    connect = index.store._connect
    monkeypatch.setattr(index.store, "_connect", lambda path: FailingCommits(connect(path)))
    yield FailingCommits
    FailingCommits.failing = None


@pytest.fixture
def app_client(make_settings: Callable[..., Settings], commits) -> Iterator[TestClient]:
    with serving(make_settings) as c:
        fill_gallery(c)
        yield c


def serving(make_settings: Callable[..., Settings]) -> TestClient:
    # Server faults come back as responses, as a real client sees them, not as test exceptions.
    return TestClient(create_app(make_settings()), raise_server_exceptions=False)


def add_two(client: TestClient):
    files = [("files", (f"{i}.png", crop_bytes(3, variant=40 + i), "image/png")) for i in range(2)]
    return client.post("/gallery", files=files, data={"pid": "3"}, headers=AUTH)


def assert_storage_full(r) -> None:
    assert r.status_code == 507, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "storage_full", "detail": r.json()["detail"]}
    assert "not applied" in r.json()["detail"]


def reopened_snapshot(client: TestClient, make_settings: Callable[..., Settings]) -> tuple[object, ...]:
    """Close ``client``'s app and look at the gallery again from disk, in a new app."""
    client.__exit__(None, None, None)
    with serving(make_settings) as c:
        return snapshot(c)


def test_full_disk_writing_a_crop_is_507_and_changes_nothing(
        app_client: TestClient, make_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(app_client)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_space)
        assert_storage_full(add_two(app_client))
    assert snapshot(app_client) == before
    assert add_two(app_client).status_code == 201  # once there is space again, the same add works
    after = snapshot(app_client)
    assert reopened_snapshot(app_client, make_settings) == after


def test_full_disk_at_the_gallery_commit_is_507_and_changes_nothing(
        app_client: TestClient, commits, make_settings: Callable[..., Settings]) -> None:
    before = snapshot(app_client)
    commits.failing = sqlite3.SQLITE_FULL
    assert_storage_full(add_two(app_client))
    assert_storage_full(app_client.delete("/gallery/1", headers=AUTH))
    assert_storage_full(app_client.delete("/gallery", params={"pid": 2}, headers=AUTH))
    commits.failing = None
    assert snapshot(app_client) == before
    # What is on disk agrees: SQLite rolled back, and no crop of the refused add was left behind.
    assert reopened_snapshot(app_client, make_settings) == before


def test_busy_or_unavailable_backend_is_503(app_client: TestClient, commits, monkeypatch) -> None:
    before = snapshot(app_client)
    commits.failing = sqlite3.SQLITE_BUSY
    r = app_client.delete("/gallery/1", headers=AUTH)
    assert (r.status_code, r.json()["error"]) == (503, "backend_unavailable")
    commits.failing = None
    service = app_client.app.state.service

    def unreachable(*args: object, **kwargs: object) -> None:
        raise BackendUnavailable("the vector store did not answer")

    monkeypatch.setattr(service.gallery, "stats", unreachable)
    r = app_client.get("/gallery/stats")
    assert (r.status_code, r.json()["error"]) == (503, "backend_unavailable")
    monkeypatch.undo()
    assert snapshot(app_client) == before


def test_other_server_failures_are_json_500_without_server_paths(app_client: TestClient, tmp_path: Path,
                                                                 monkeypatch) -> None:
    service = app_client.app.state.service

    def damaged(*args: object, **kwargs: object) -> None:
        raise sqlite3.DatabaseError(f"{tmp_path}/gallery.db: database disk image is malformed")

    monkeypatch.setattr(service.gallery, "stats", damaged)
    r = app_client.get("/gallery/stats")
    assert (r.status_code, r.json()["error"]) == (500, "internal_error")
    assert str(tmp_path) not in r.text


def test_stats_count_the_crops_on_disk(app_client: TestClient, tmp_path: Path, monkeypatch) -> None:
    service = app_client.app.state.service
    crops = [p for p in (tmp_path / "gallery" / "crops").rglob("*") if p.is_file()]
    assert len(crops) == 8
    own = replace(service.gallery.stats(), on_disk_bytes=1000)  # the gallery's own files, fixed
    monkeypatch.setattr(service.gallery, "stats", lambda: own)
    reported = app_client.get("/gallery/stats").json()["on_disk_bytes"]
    assert reported == 1000 + sum(p.stat().st_size for p in crops)
