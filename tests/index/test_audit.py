"""The audit log: whole lines, rotation by size, fsync policies, whole lines after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from index.audit import AuditLog, default_audit_path, encode_entry, read_entries


def test_entries_are_single_json_lines_with_time(tmp_path: Path) -> None:
    seen = []
    with AuditLog(tmp_path / "a" / "audit.jsonl", on_entry=seen.append) as log:
        log.write({"endpoint": "search", "filters": {"text": "two\nlines"}, "ids": [1, 2]})
        log.write({"time": "2026-01-01T00:00:00.000Z", "endpoint": "delete"})
    lines = (tmp_path / "a" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2 and len(seen) == 2
    first = json.loads(lines[0])
    assert first["filters"]["text"] == "two\nlines" and first["time"].endswith("Z")
    assert json.loads(lines[1])["time"] == "2026-01-01T00:00:00.000Z"
    assert os.stat(tmp_path / "a" / "audit.jsonl").st_mode & 0o077 == 0
    with pytest.raises(ValueError):
        encode_entry({"x": float("nan")})


def test_rotation_keeps_backups_and_loses_no_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, max_bytes=2048, backups=3, fsync="never") as log:
        for i in range(120):
            log.write({"n": i, "pad": "x" * 60})
        files = log.files()
    assert [p.name for p in files] == ["audit.jsonl.3", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
    assert all(p.stat().st_size <= 2048 for p in files)
    numbers = [e["n"] for e in read_entries(files)]
    assert numbers == list(range(numbers[0], 120))  # the oldest fell off the end, in order, no gaps
    assert numbers[0] > 0


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_every_policy_writes_from_many_threads(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, fsync=policy, fsync_interval_s=0.01) as log:
        def writer(t: int) -> None:
            for i in range(50):
                log.write({"t": t, "i": i, "ids": list(range(100))})
        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        time.sleep(0.05)
    entries = list(read_entries([path]))
    assert sorted((e["t"], e["i"]) for e in entries) == [(t, i) for t in range(4) for i in range(50)]


def test_default_path_is_inside_the_gallery(tmp_path: Path) -> None:
    assert default_audit_path(tmp_path / "g") == tmp_path / "g" / "audit" / "audit.jsonl"


_WRITER = textwrap.dedent("""
    import sys
    from index.audit import AuditLog
    log = AuditLog(sys.argv[1], max_bytes=64 * 1024, backups=50, fsync="interval")
    print("ready", flush=True)
    i = 0
    while True:
        log.write({"i": i, "ids": list(range(i % 400)), "pad": "y" * (i % 97)})
        i += 1
""")


def test_kill_9_leaves_only_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(0.5)  # mid-stream, rotations included
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    files = sorted(tmp_path.glob("audit.jsonl*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    assert len(files) > 1  # it rotated while being killed at random
    numbers = []
    for f in files:
        data = f.read_bytes()
        assert data == b"" or data.endswith(b"\n")  # empty: killed just after a rotation made it
        numbers += [json.loads(line)["i"] for line in data.splitlines()]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
