"""User-facing errors and the one-line error convention shared by every ``reid-*`` command."""

from __future__ import annotations

import sys
from collections.abc import Callable


class ReIDError(Exception):
    """An error the user can fix (bad path, wrong layout, bad value).

    Commands print it as one line, ``<prog>: error: <message>``, and exit with status 2;
    the message must say what was wrong and what was expected.
    """


class BackendUnavailable(ReIDError):
    """A store or search backend that a gallery needs cannot serve right now (busy, locked,
    closing or unreachable); the same call may succeed later. The service answers it with 503."""


def run_cli(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command body; turn :class:`ReIDError` into one line on stderr and exit 2.

    An ``OSError`` that escapes (permission denied, not a directory, disk full) is also a
    condition of the user's machine, not a bug: one line naming the file, exit 1. Ctrl-C exits
    130 without a traceback. Anything else is a bug and keeps its traceback.
    """
    try:
        return int(body() or 0)
    except ReIDError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{prog}: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
