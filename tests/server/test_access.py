"""Access as an outsider would try it: no key, a wrong key, a read key on a write, a key
removed from the keys file, path traversal, too many requests; plus the page's headers and
CORS. Each refusal is checked to serve nothing and change nothing."""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from export.runtime import Embedder
from index.gallery import Gallery
from index.records import ItemRecord
from live_server import serve_process
from security_data import READ, READ_KEY, WRITE, make_key, result_ids, upload
from server.app import STATIC_DIR, create_app
from server.headers import PAGE_POLICY
from server.settings import Settings
from service_data import crop_bytes, fill_gallery


def _refused(response: httpx.Response, status: int, error: str) -> None:
    """A refusal in the service's error shape, and nothing else in it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == error


def _state(client: TestClient) -> tuple[int, list[int]]:
    stats = client.get("/gallery/stats", headers=WRITE).json()
    found = client.post("/search", files=upload(), params={"k": 50, "k_identities": 0}, headers=WRITE).json()
    return stats["count"], sorted(m["id"] for m in found["matches"])


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": READ_KEY + "x"},
                                     {"X-API-Key": READ_KEY[:-1]}, {"x-api-key": "reid_00000000_" + "a" * 43}])
def test_reads_need_a_valid_key_when_protected(make_settings: Callable[..., Settings], headers) -> None:
    with TestClient(create_app(make_settings(read_key=READ_KEY))) as c:
        item = fill_gallery(c)[1][0]
        for response in (c.post("/search", files=upload(), headers=headers),
                         c.get("/gallery/stats", headers=headers),
                         c.get(f"/gallery/{item['id']}/image", headers=headers)):
            _refused(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "X-API-Key"
            assert crop_bytes(1, variant=1) not in response.content
        for key in (READ, WRITE):  # the read key, and the write key, which may also read
            assert c.post("/search", files=upload(), headers=key).status_code == 200
            assert c.get("/gallery/stats", headers=key).status_code == 200
            image = c.get(f"/gallery/{item['id']}/image", headers=key)
            assert image.status_code == 200 and image.content == crop_bytes(1, variant=1)
            assert image.headers["cache-control"].startswith("private")  # no shared cache keeps it


def test_open_reads_still_refuse_a_wrong_key(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings())) as c:
        assert c.get("/gallery/stats").status_code == 200
        _refused(c.get("/gallery/stats", headers={"X-API-Key": "wrong"}), 401, "unauthorized")


def test_a_read_key_cannot_write(make_settings: Callable[..., Settings], capsys, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    alice = {"X-API-Key": make_key(capsys, keys, "alice", "read")}
    with TestClient(create_app(make_settings(read_key=READ_KEY, keys_file=keys))) as c:
        items = fill_gallery(c)
        before = _state(c)
        for key in (READ, alice):
            _refused(c.post("/gallery", files=[("files", ("a.png", crop_bytes(3, variant=9), "image/png"))],
                            data={"pid": "3"}, headers=key), 403, "forbidden")
            _refused(c.delete(f"/gallery/{items[2][0]['id']}", headers=key), 403, "forbidden")
            _refused(c.delete("/gallery", params={"pid": 2}, headers=key), 403, "forbidden")
        for key in ({}, {"X-API-Key": "nope"}):
            _refused(c.delete(f"/gallery/{items[2][0]['id']}", headers=key), 401, "unauthorized")
        assert _state(c) == before
        assert c.delete(f"/gallery/{items[2][0]['id']}", headers=WRITE).status_code == 200


def test_path_traversal_on_item_images_serves_nothing(make_settings: Callable[..., Settings], tmp_path: Path,
                                                       model_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "inside.png").write_bytes(crop_bytes(1, variant=3))
    secret = tmp_path / "secret.png"
    secret.write_bytes(crop_bytes(2, variant=4))
    (images / "link.png").symlink_to(secret)
    settings = make_settings(read_key=READ_KEY, image_roots=(images,))
    embedder = Embedder(model_path, providers="cpu")
    paths = [images / "inside.png", images / ".." / "secret.png", images / "link.png",
             settings.gallery / "gallery.db", Path("/etc/passwd")]
    with Gallery.create(settings.gallery, dim=embedder.embedding_dim, fingerprint=embedder.fingerprint) as g:
        ids = g.add(np.eye(len(paths), embedder.embedding_dim, dtype=np.float32),
                    [ItemRecord(path=str(p), pid=1) for p in paths]).tolist()
    with TestClient(create_app(settings)) as c:
        ok = c.get(f"/gallery/{ids[0]}/image", headers=READ)
        assert ok.status_code == 200 and ok.content == crop_bytes(1, variant=3)
        for item_id in ids[1:]:
            _refused(c.get(f"/gallery/{item_id}/image", headers=READ), 404, "no_image")
        for raw in ("/gallery/..%2F..%2Fsecret.png/image", "/gallery/1%2F..%2F..%2Fgallery.db/image",
                    "/gallery/%2e%2e/image", "/gallery/..%5csecret.png/image", "/gallery/-1/image",
                    "/gallery/1e3/image", "/gallery/%00/image", "/gallery/1%2f..%2f..%2fsecret.png/image"):
            for headers in (READ, {}):  # ids are digits only: no route, so 404 with or without a key
                response = c.get(raw, headers=headers)
                _refused(response, 404, "not_found")
                assert crop_bytes(2, variant=4) not in response.content and b"root:" not in response.content


def test_a_key_removed_from_the_keys_file_is_refused_after_sighup(model_path: Path, tmp_path: Path,
                                                                 capsys) -> None:
    keys = tmp_path / "keys.txt"
    alice = make_key(capsys, keys, "alice", "read")
    bob = make_key(capsys, keys, "bob", "write")
    output = tmp_path / "serve.log"
    args = ["--model", str(model_path), "--gallery", str(tmp_path / "gallery"), "--create",
            "--keys-file", str(keys), "--log-level", "info"]
    with serve_process(args, output_path=output) as (url, proc):
        stats = f"{url}/gallery/stats"
        assert httpx.get(stats, headers={"X-API-Key": alice}).status_code == 200
        assert httpx.get(stats).status_code == 401
        capsys.readouterr()
        assert make_key(capsys, keys, "carol", "read")
        from server.keys import main as keys_main
        assert keys_main(["remove", str(keys), "alice"]) == 0
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while httpx.get(stats, headers={"X-API-Key": alice}).status_code != 401:
            assert time.monotonic() < deadline, "alice's key still works after SIGHUP"
            time.sleep(0.1)
        refused = httpx.get(stats, headers={"X-API-Key": alice})
        assert refused.json()["error"] == "unauthorized" and "count" not in refused.text
        assert httpx.get(stats, headers={"X-API-Key": bob}).status_code == 200  # others keep working
        added = httpx.post(f"{url}/gallery", files=[("files", ("a.png", crop_bytes(1), "image/png"))],
                           headers={"X-API-Key": alice})
        assert added.status_code == 401 and httpx.get(stats, headers={"X-API-Key": bob}).json()["count"] == 0
    log = output.read_text()
    assert "keys file" in log and "reloaded" in log
    assert alice not in log and bob not in log  # keys are never logged
    assert alice.split("_", 2)[2] not in (tmp_path / "gallery" / "audit" / "audit.jsonl").read_text()


def test_rate_limit_answers_429_with_retry_after(make_settings: Callable[..., Settings], capsys,
                                                 tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    alice = {"X-API-Key": make_key(capsys, keys, "alice", "read")}
    bob = {"X-API-Key": make_key(capsys, keys, "bob", "read")}
    with TestClient(create_app(make_settings(keys_file=keys, rate_limit=0.2, rate_burst=2))) as c:
        statuses = [c.post("/search", files=upload(), headers=alice).status_code for _ in range(2)]
        limited = c.get("/gallery/1/image", headers=alice)
        assert statuses == [200, 200]
        _refused(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 5
        assert c.post("/search", files=upload(), headers=bob).status_code == 200  # a bucket per key
        assert c.get("/gallery/stats", headers=alice).status_code == 200  # stats are not limited
        metrics = c.get("/metrics").text
        assert re.search(r'reid_rate_limited_total\{route="/gallery/\{item_id(:int)?\}/image"\} 1\.0', metrics)


def test_rate_limit_is_per_address_when_reads_are_open(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(rate_limit=0.1, rate_burst=1))) as c:
        assert c.post("/search", files=upload()).status_code == 200
        _refused(c.post("/search", files=upload()), 429, "rate_limited")


def test_no_rate_limit_by_default(client: TestClient) -> None:
    assert all(client.post("/search", files=upload()).status_code == 200 for _ in range(30))


def test_page_headers_and_no_inline_script_or_style(client: TestClient) -> None:
    page = client.get("/")
    assert page.headers["content-security-policy"] == PAGE_POLICY
    assert "unsafe-inline" not in PAGE_POLICY and "frame-ancestors 'none'" in PAGE_POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    for path in ("/static/app.js", "/gallery/stats", "/healthz"):
        assert client.get(path).headers["x-content-type-options"] == "nosniff"
    html = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)  # every script is a file
    assert "<style" not in html and not re.search(r"\sstyle=", html) and not re.search(r"\son[a-z]+=", html)
    assert "Strict-Transport-Security" not in page.headers  # plain HTTP: no HSTS


def test_cors_is_closed_by_default_and_opens_only_to_listed_origins(make_settings: Callable[..., Settings]) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "x-api-key"}
    with TestClient(create_app(make_settings())) as c:
        answer = c.get("/gallery/stats", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in answer.headers
        assert "access-control-allow-origin" not in c.options("/search", headers=preflight).headers
    with TestClient(create_app(make_settings(cors_origins=("https://ops.example",)))) as c:
        assert "access-control-allow-origin" not in c.options("/search", headers=preflight).headers
        ok = c.options("/search", headers={**preflight, "Origin": "https://ops.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ops.example"
        assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()


def test_open_reads_are_announced_in_one_line(make_settings: Callable[..., Settings], caplog) -> None:
    with caplog.at_level(logging.INFO, logger="server.security"):
        with TestClient(create_app(make_settings())):
            pass
        opened = [r for r in caplog.records if "reads are open" in r.getMessage()]
        caplog.clear()
        with TestClient(create_app(make_settings(read_key=READ_KEY))):
            pass
        protected = [r.getMessage() for r in caplog.records]
    assert len(opened) == 1 and opened[0].levelno == logging.WARNING
    assert not any("reads are open" in m for m in protected) and any("reads need a key" in m for m in protected)
    assert not any(READ_KEY in m for m in protected)


def test_search_results_match_with_any_valid_key(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(read_key=READ_KEY))) as c:
        fill_gallery(c)
        a = c.post("/search", files=upload(), headers=READ).json()
        b = c.post("/search", files=upload(), headers=WRITE).json()
        assert result_ids(a) == result_ids(b) and result_ids(a)


def test_the_schema_says_whether_reads_need_a_key(make_settings: Callable[..., Settings]) -> None:
    def security(settings: Settings) -> dict[str, list]:
        paths = create_app(settings).openapi()["paths"]
        return {f"{m} {p}": paths[p][m].get("security", []) for p, m in
                (("/search", "post"), ("/gallery/stats", "get"), ("/gallery/{item_id}/image", "get"),
                 ("/gallery", "post"))}

    header = {"APIKeyHeader": []}
    opened, protected = security(make_settings()), security(make_settings(read_key=READ_KEY))
    assert opened == {"post /search": [header, {}], "get /gallery/stats": [header, {}],
                      "get /gallery/{item_id}/image": [header, {}], "post /gallery": [header]}
    assert all(v == [header] for v in protected.values())
