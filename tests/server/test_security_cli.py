"""reid-serve's access, audit, retention and TLS flags: parsed into settings, and every bad
value one line before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnx_models import write_tiny_model
from server.cli import build_parser, main, settings_from_args


def test_security_flags_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_READ_KEY", "read-from-env")
    args = build_parser().parse_args([
        "--model", "m.onnx", "--gallery", "g", "--keys-file", "k.txt", "--audit-log", "a.jsonl",
        "--audit-fsync", "always", "--retain-days", "30", "--rate-limit", "2.5", "--rate-burst", "4",
        "--cors-origin", "https://a.example", "--cors-origin", "https://b.example",
        "--ssl-certfile", "c.pem", "--ssl-keyfile", "k.pem"])
    s = settings_from_args(args)
    assert s.read_key is not None and s.read_key.get_secret_value() == "read-from-env"
    assert "read-from-env" not in repr(s)
    assert (s.keys_file, s.audit_path, s.audit_fsync) == (Path("k.txt"), Path("a.jsonl"), "always")
    assert (s.retain_days, s.rate_limit, s.rate_burst) == (30.0, 2.5, 4)
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert settings_from_args(build_parser().parse_args(["--model", "m", "--gallery", "g"])).audit_path == \
        Path("g/audit/audit.jsonl")


@pytest.mark.parametrize("extra, message", [
    (["--ssl-certfile", "c.pem"], "ssl_keyfile"),
    (["--retain-days", "0"], "retain_days"),
    (["--rate-limit", "-1"], "rate_limit"),
    (["--audit-max-bytes", "10"], "audit_max_bytes"),
])
def test_bad_security_settings_are_one_line(extra: list[str], message: str, capsys) -> None:
    assert main(["--model", "m.onnx", "--gallery", "g", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reid-serve: error: bad settings") and message in err and len(err.splitlines()) == 1


def test_unusable_keys_or_tls_files_are_one_line_before_loading(tmp_path: Path, capsys) -> None:
    model = write_tiny_model(tmp_path / "m.onnx", seed=1)
    base = ["--model", str(model), "--gallery", str(tmp_path / "g"), "--create", "--port", "0"]
    bad_keys = tmp_path / "keys.txt"
    bad_keys.write_text("alice read nothex scrypt$16$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==\n")
    for extra, message in ((["--keys-file", str(tmp_path / "missing.txt")], "cannot read keys file"),
                           (["--keys-file", str(bad_keys)], "line 1: id must be"),
                           (["--ssl-certfile", str(tmp_path / "c.pem"), "--ssl-keyfile", str(tmp_path / "k.pem")],
                            "no such TLS certificate")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "g").exists()  # refused before the gallery was created
