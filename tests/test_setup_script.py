"""scripts/setup.sh: one line per step, pip's missing-index-folder notices filtered out, every
other pip message kept, and pip's exit status kept. pip is a stub here: nothing is installed."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Answers `python -m pip ...` like pip on a machine whose configuration lists local indexes
# without a folder per package, and `python -c ...` as a venv with torch installed.
STUB_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "  WARNING: Location 'file:///opt/pypi-more/simple/wheel/' is ignored: it is neither a file nor a directory." >&2
  echo "WARNING: Location 'file:///opt/pypi-more/simple/tqdm/' is ignored: it is neither a file nor a directory."
  echo "WARNING: a warning worth reading ($*)" >&2
  case " $* " in *" -e "*) exit "${STUB_PIP_STATUS:-0}";; esac
  exit 0
fi
if [ "$1" = "-c" ]; then
  case "$2" in *__version__*) echo "2.14.1";; esac
  exit 0
fi
exit 1
"""


def _run_setup(tmp_path: Path, pip_status: int) -> subprocess.CompletedProcess[str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(STUB_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "VENV": str(venv), "STUB_PIP_STATUS": str(pip_status)}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_setup_prints_one_line_per_step_and_only_useful_pip_output(tmp_path: Path) -> None:
    done = _run_setup(tmp_path, pip_status=0)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"setup: using the existing virtual environment {tmp_path / 'venv'}",
        "setup: upgrading pip",
        "setup: torch 2.14.1 is already installed",
        "setup: installing the project (editable, extras train,cpu,serve,client,dev,milvus)",
        f"setup: {tmp_path / 'venv'} is ready",
    ]
    assert "is ignored" not in done.stdout + done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING: a warning worth reading")]
    assert len(warnings) == 2  # one per pip call: upgrading pip, installing the project
    assert "--quiet" in warnings[1] and ".[train,cpu,serve,client,dev,milvus]" in warnings[1]


@pytest.mark.parametrize("status", [1, 3])
def test_a_failed_pip_step_names_itself_and_keeps_pips_exit_status(tmp_path: Path, status: int) -> None:
    done = _run_setup(tmp_path, pip_status=status)
    assert done.returncode == status
    assert f"setup: installing the project (editable, extras train,cpu,serve,client,dev,milvus) failed (pip exit status {status})" in done.stderr
    assert "is ready" not in done.stdout
