"""The one-line error convention shared by every reid-* command."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.cli import synth
from training.core.errors import ReIDError, run_cli


def test_user_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise ReIDError("folder x does not exist; expected a Market-1501 root")

    assert run_cli("reid-x", body) == 2
    assert capsys.readouterr().err == "reid-x: error: folder x does not exist; expected a Market-1501 root\n"


def test_filesystem_errors_are_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert synth.main(["--out", str(blocker / "sub"), "--ids", "4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("reid-synth: error:") and str(blocker / "sub") in err


def test_bugs_keep_their_traceback() -> None:
    def body() -> int:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        run_cli("reid-x", body)
