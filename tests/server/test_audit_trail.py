"""The audit trail: one whole line per search, image view, add and delete (refused ones too)
and per pruning, with who, from where, what was asked and what came back; whole lines also
when the server is killed mid-sequence; retention while serving."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from index.audit import default_audit_path, read_entries
from index.cli import main as index_main
from live_server import serve_process
from security_data import WRITE, make_key, result_ids, upload
from server.app import create_app
from server.settings import Settings
from service_data import API_KEY, add_identity, crop_bytes, fill_gallery

FIELDS = {"time", "event", "key", "key_given", "client", "method", "endpoint", "query", "ids", "count", "status"}
DAY = 86_400.0


def _lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a torn last line"
    return [json.loads(line) for line in data.splitlines()]


def test_every_call_is_one_line_with_who_what_and_result(make_settings: Callable[..., Settings], capsys,
                                                         tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    alice = {"X-API-Key": make_key(capsys, keys, "alice", "read")}
    bob = {"X-API-Key": make_key(capsys, keys, "bob", "write")}
    settings = make_settings(keys_file=keys)
    expected: list[tuple[str, str | None, int, list[int]]] = []  # event, key, status, ids
    with TestClient(create_app(settings)) as c:
        added = fill_gallery(c)  # four adds with the write key
        expected += [("add", "write-key", 201, [i["id"] for i in items]) for items in added.values()]
        params = {"k": 5, "k_identities": 2, "cameras": [1, 2], "time_from": 0}
        found = c.post("/search", files=upload(3), params=params, headers=alice)
        expected.append(("search", "alice", 200, result_ids(found.json())))
        expected.append(("search", None, c.post("/search", files=upload(), headers={}).status_code, []))
        expected.append(("search", None, c.post("/search", files=upload(), headers={"X-API-Key": "x"}).status_code, []))
        image_id = added[3][0]["id"]
        assert c.get(f"/gallery/{image_id}/image", headers=alice).status_code == 200
        expected.append(("image", "alice", 200, [image_id]))
        # No route matches a non-numeric id, so the key is never looked at: on record without a name.
        expected.append(("image", None, c.get("/gallery/..%2e/image", headers=alice).status_code, []))
        new = add_identity_with(c, bob, pid=4)
        expected.append(("add", "bob", 201, new))
        refused = c.post("/gallery", files=[("files", ("a.png", crop_bytes(1), "image/png"))], headers=alice)
        expected.append(("add", "alice", refused.status_code, []))
        assert c.delete(f"/gallery/{new[0]}", headers=bob).status_code == 200
        expected.append(("delete", "bob", 200, [new[0]]))
        assert c.delete("/gallery", params={"pid": 1}, headers=bob).json()["removed"] == 2
        expected.append(("delete", "bob", 200, [i["id"] for i in added[1]]))
        expected.append(("delete", "alice", c.delete("/gallery/999", headers=alice).status_code, []))
        too_big = c.post("/search", content=b"x" * (settings.max_upload_bytes + 10),
                         headers={**alice, "content-type": "multipart/form-data; boundary=x"})
        expected.append(("search", None, too_big.status_code, []))
        metrics = c.get("/metrics").text
    assert [s for _, _, s, _ in expected] == [201] * 4 + [200, 401, 401, 200, 404, 201, 403, 200, 200, 403, 413]
    entries = _lines(default_audit_path(settings.gallery))
    assert len(entries) == len(expected)
    for entry, (event, key, status, ids) in zip(entries, expected, strict=True):
        assert FIELDS <= set(entry), entry
        assert (entry["event"], entry["key"], entry["status"], entry["ids"]) == (event, key, status, ids), entry
        assert entry["client"] == "testclient"
    search = entries[4]
    assert search["query"] == {"k": 5, "k_identities": 2, "cameras": [1, 2], "time_from": 0}
    assert search["pids"] == [i["pid"] for i in found.json()["identities"]] and search["count"] == len(search["ids"])
    assert entries[5]["key_given"] is False and entries[6]["key_given"] is True and entries[6]["error"] == "unauthorized"
    assert entries[12]["query"] == {"pid": 1} and entries[12]["count"] == 2
    assert entries[10]["error"] == "forbidden"
    assert (entries[8]["item_id"], entries[8]["error"], entries[8]["key_given"]) == ("...", "not_found", True)
    assert entries[14]["error"] == "too_large" and entries[14]["key"] is None
    raw = default_audit_path(settings.gallery).read_text()
    for key in (alice["X-API-Key"], bob["X-API-Key"], API_KEY):
        assert key not in raw
    assert "PNG" not in raw and max(len(line) for line in raw.splitlines()) < 2000  # never the image
    assert 'reid_audit_entries_total{event="search",outcome="ok"} 1.0' in metrics
    assert 'reid_audit_entries_total{event="add",outcome="refused"} 1.0' in metrics


def add_identity_with(client: TestClient, headers: dict[str, str], pid: int) -> list[int]:
    files = [("files", (f"p{pid}.png", crop_bytes(pid, variant=30 + i), "image/png")) for i in range(2)]
    response = client.post("/gallery", files=files, data={"pid": str(pid), "camera": "1"}, headers=headers)
    assert response.status_code == 201, response.text
    return [i["id"] for i in response.json()["items"]]


def test_an_unwritable_audit_log_refuses_reads_but_keeps_writes(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings())) as c:
        items = fill_gallery(c)
        audit = c.app.state.audit  # type: ignore[attr-defined]
        os.close(audit._fd)  # the disk goes away under the log
        audit._fd = os.open(os.devnull, os.O_RDONLY)
        refused = c.post("/search", files=upload())
        assert refused.status_code == 503 and refused.json()["error"] == "audit_unavailable"
        assert "identities" not in refused.text
        image = c.get(f"/gallery/{items[1][0]['id']}/image")
        assert image.status_code == 503 and crop_bytes(1, variant=1) not in image.content
        assert c.delete(f"/gallery/{items[1][0]['id']}", headers=WRITE).status_code == 200  # done: stands
        assert 'reid_audit_write_failures_total 3.0' in c.get("/metrics").text


def _sequence(url: str, keys: dict[str, str], stop: threading.Event, done: list[tuple]) -> None:
    """Searches, image views, adds and deletes until the server dies; ``done`` gets
    (event, key name, status, ids) of every call that was answered."""
    n = 0
    with httpx.Client(base_url=url, timeout=10) as http:
        while not stop.is_set():
            n += 1
            try:
                r = http.post("/search", files=upload(1 + n % 4, variant=n), params={"k": 3},
                              headers={"X-API-Key": keys["alice"]})
                done.append(("search", "alice", r.status_code, result_ids(r.json()) if r.status_code == 200 else []))
                r = http.post("/gallery", files=[("files", (f"{n}.png", crop_bytes(1 + n % 4, variant=100 + n),
                                                            "image/png"))],
                              data={"pid": str(1 + n % 4)}, headers={"X-API-Key": keys["bob"]})
                new = [i["id"] for i in r.json()["items"]] if r.status_code == 201 else []
                done.append(("add", "bob", r.status_code, new))
                if new:
                    r = http.get(f"/gallery/{new[0]}/image", headers={"X-API-Key": keys["alice"]})
                    done.append(("image", "alice", r.status_code, [new[0]] if r.status_code == 200 else []))
                    if n % 2:
                        r = http.delete(f"/gallery/{new[0]}", headers={"X-API-Key": keys["bob"]})
                        done.append(("delete", "bob", r.status_code, [new[0]] if r.status_code == 200 else []))
                r = http.post("/search", files=upload(), headers={})
                done.append(("search", None, r.status_code, []))
            except httpx.HTTPError:
                return


@pytest.mark.slow
def test_audit_lines_stay_whole_when_the_server_is_killed(model_path: Path, tmp_path: Path, capsys) -> None:
    keys_file = tmp_path / "keys.txt"
    keys = {name: make_key(capsys, keys_file, name, scope) for name, scope in (("alice", "read"), ("bob", "write"))}
    gallery = tmp_path / "gallery"
    args = ["--model", str(model_path), "--gallery", str(gallery), "--create", "--keys-file", str(keys_file),
            "--log-level", "warning"]
    done: list[tuple] = []
    with serve_process(args) as (url, proc):
        stop = threading.Event()
        worker = threading.Thread(target=_sequence, args=(url, keys, stop, done))
        worker.start()
        deadline = time.monotonic() + 60
        while len(done) < 25 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-sequence, requests in flight
        proc.wait(10)
        stop.set()
        worker.join(30)
    assert len(done) >= 25
    before = _lines(default_audit_path(gallery))
    # Every answered call has its line, in order; at most the calls in flight add more.
    answered = [(e["event"], e["key"], e["status"], e["ids"]) for e in before]
    assert answered[:len(done)] == [tuple(d) for d in done]
    assert len(answered) <= len(done) + 2

    # The gallery reopens after the kill; the log goes on where it stopped, and a pruning is
    # written to it as well.
    after: list[tuple] = []
    with serve_process(args) as (url, proc):
        stop = threading.Event()
        stop_after_one = threading.Thread(target=lambda: (time.sleep(0.5), stop.set()))
        stop_after_one.start()
        _sequence(url, keys, stop, after)
        stop_after_one.join()
    assert index_main(["prune", str(gallery), "--older-than", "0.0000001"]) == 0
    entries = _lines(default_audit_path(gallery))
    assert [(e["event"], e["key"], e["status"], e["ids"]) for e in entries[len(before):-1]] == [tuple(a) for a in after]
    assert entries[-1]["event"] == "prune" and entries[-1]["status"] == "ok" and entries[-1]["ids"]
    for e in entries:
        assert {"time", "event", "key", "endpoint", "ids", "status"} <= set(e)


def test_retention_while_serving_prunes_expired_items_and_searches_never_return_them(
        make_settings: Callable[..., Settings]) -> None:
    now = time.time()
    with TestClient(create_app(make_settings())) as c:
        old = add_identity(c, 1, [1, 2], [now - 40 * DAY, now - 31 * DAY])
        fresh = add_identity(c, 2, [1, 2], [now - 29 * DAY, now - DAY])
        undated = add_identity(c, 3, [1], None)
        frames = add_identity(c, 4, [2], [1234.0])  # a frame number, not a time: aged by when it was added
    expired = {i["id"] for i in old}
    kept = {i["id"] for i in fresh + undated + frames}
    with TestClient(create_app(make_settings(retain_days=30, retain_check_minutes=60))) as c:
        found = c.post("/search", files=upload(1), params={"k": 50, "k_identities": 5}).json()
        assert set(result_ids(found)) == kept
        for item_id in expired:
            assert c.get(f"/gallery/{item_id}/image").status_code == 404
        assert all(c.get(f"/gallery/{i}/image").status_code == 200 for i in kept)
        assert "reid_retention_pruned_items_total 2.0" in c.get("/metrics").text
        gallery = c.app.state.settings.gallery  # type: ignore[attr-defined]
    prunes = [e for e in _lines(default_audit_path(gallery)) if e["event"] == "prune"]
    assert len(prunes) == 1 and prunes[0]["key"] == "retention" and sorted(prunes[0]["ids"]) == sorted(expired)
    assert not list((gallery / "crops").glob("*/" + old[0]["path"].rsplit("/", 1)[-1]))


def test_jq_answers_who_searched_for_a_person(make_settings: Callable[..., Settings], capsys,
                                              tmp_path: Path) -> None:
    """The query docs/security.md gives operators, run as written on a real log."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    keys = tmp_path / "keys.txt"
    alice = {"X-API-Key": make_key(capsys, keys, "alice", "read")}
    carol = {"X-API-Key": make_key(capsys, keys, "carol", "read")}
    settings = make_settings(keys_file=keys, audit_fsync="always")  # lines written from a thread
    with TestClient(create_app(settings)) as c:
        fill_gallery(c)
        assert c.post("/search", files=upload(2), params={"k_identities": 1}, headers=alice).status_code == 200
        assert c.post("/search", files=upload(3), params={"k_identities": 1}, headers=carol).status_code == 200
    docs = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", docs, re.S) if "who searched" in b)
    env = {**os.environ, "LOG": str(default_audit_path(settings.gallery)), "PID": "2", "SINCE": "2000-01-01"}
    out = subprocess.run(["bash", "-c", block], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    found = [json.loads(line) for line in out.stdout.splitlines()]
    assert [f["key"] for f in found] == ["alice"]
