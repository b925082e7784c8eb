"""Keys: scopes, the keys file and its reload, constant-time checks, the reid-keys command."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from server.auth import (
    KeyRing,
    Principal,
    hash_secret,
    new_entry,
    parse_keys_file,
    read_keys_file,
    verify_secret,
)
from server.keys import main as keys_main
from training.core.errors import ReIDError


def _add(capsys, path: Path, name: str, scope: str) -> str:
    assert keys_main(["add", str(path), name, "--scope", scope]) == 0
    return capsys.readouterr().out.strip()


def test_hash_round_trip_and_fresh_salt() -> None:
    a, b = hash_secret("s3cret", n=2**4), hash_secret("s3cret", n=2**4)
    assert a != b  # salted
    assert verify_secret("s3cret", a) and verify_secret("s3cret", b)
    assert not verify_secret("s3creT", a)


def test_fixed_keys_scopes_and_open_reads() -> None:
    ring = KeyRing(write_key="w" * 20, read_key="r" * 20)
    assert ring.identify("w" * 20) == Principal("write-key", "write")
    assert ring.identify("r" * 20) == Principal("read-key", "read")
    assert ring.identify("r" * 19) is None and ring.identify(None) is None and ring.identify("") is None
    assert not ring.reads_open
    assert KeyRing(write_key="w" * 20).reads_open
    assert Principal("x", "write").may("read") and not Principal("x", "read").may("write")
    with pytest.raises(ReIDError, match="same"):
        KeyRing(write_key="same-key", read_key="same-key")


def test_keys_file_stores_no_key_and_is_owner_only(capsys, tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    alice = _add(capsys, path, "alice", "read")
    bob = _add(capsys, path, "bob", "write")
    text = path.read_text()
    assert alice not in text and bob not in text
    assert alice.split("_", 2)[2] not in text  # not even the secret part (which may itself hold "_")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = KeyRing(keys_file=path)
    assert not ring.reads_open
    assert ring.identify(alice) == Principal("alice", "read")
    assert ring.identify(bob) == Principal("bob", "write")
    assert ring.identify(alice[:-1] + ("A" if alice[-1] != "A" else "B")) is None
    assert ring.identify(bob.replace(bob.split("_")[1], alice.split("_")[1])) is None  # id of another
    assert keys_main(["list", str(path)]) == 0
    listed = capsys.readouterr().out
    assert "alice\tread" in listed and alice not in listed


def test_reload_removes_a_key_and_a_bad_file_fails_closed(capsys, tmp_path: Path, caplog) -> None:
    path = tmp_path / "keys.txt"
    alice = _add(capsys, path, "alice", "read")
    bob = _add(capsys, path, "bob", "read")
    ring = KeyRing(keys_file=path, write_key="w" * 20)
    assert ring.identify(alice) is not None  # now cached
    assert keys_main(["remove", str(path), "alice"]) == 0
    assert ring.identify(alice) is not None  # the file is read on reload only
    assert ring.reload()
    assert ring.identify(alice) is None and ring.identify(bob) == Principal("bob", "read")
    path.write_text(path.read_text() + "garbage line\n")
    assert not ring.reload()
    assert "keys file not reloaded" in caplog.text and bob not in caplog.text
    assert ring.identify(bob) is None  # fail closed
    assert ring.identify("w" * 20) is not None  # the command-line key is not in the file


@pytest.mark.parametrize("line, message", [
    ("alice read 3f9a1c2e", "expected NAME SCOPE ID HASH"),
    ("alice admin 3f9a1c2e scrypt$16$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "scope"),
    ("alice read XYZ scrypt$16$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "id must be"),
    ("alice read 3f9a1c2e md5$abc", "hash must read"),
    ("alice read 3f9a1c2e scrypt$3$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "out of range"),
    ("read-key read 3f9a1c2e scrypt$16$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==", "reserved"),
])
def test_bad_lines_are_named(line: str, message: str) -> None:
    with pytest.raises(ReIDError, match=message) as err:
        parse_keys_file("# header\n\n" + line + "\n", "k.txt")
    assert "k.txt line 3" in str(err.value)


def test_duplicate_names_and_ids_are_refused() -> None:
    entry, _ = new_entry("alice", "read")
    other, _ = new_entry("bob", "read")
    with pytest.raises(ReIDError, match="appears twice"):
        parse_keys_file(f"{entry.line()}\n{entry.line().replace('alice', 'carol')}\n")
    with pytest.raises(ReIDError, match="appears twice"):
        parse_keys_file(f"{entry.line()}\n{other.line().replace('bob', 'alice')}\n")


def test_keys_command_errors_are_one_line(capsys, tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    _add(capsys, path, "alice", "read")
    assert keys_main(["add", str(path), "alice", "--scope", "read"]) == 2
    assert "exists" in capsys.readouterr().err
    assert keys_main(["remove", str(path), "nobody"]) == 2
    assert keys_main(["add", str(path), "bad name", "--scope", "read"]) == 2
    assert keys_main(["list", str(tmp_path / "missing.txt")]) == 2
    assert len(read_keys_file(path)) == 1


def test_a_missing_keys_file_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ReIDError, match="cannot read keys file"):
        KeyRing(keys_file=tmp_path / "nope.txt")
