"""What the argument parsers of every ``reid-*`` command share.

* :class:`ArgumentParser`: a bad or missing argument raises :class:`ReIDError`, so
  :func:`training.core.errors.run_cli` prints it as the one line ``<prog>: error: <message>``
  (exit 2) like every other user error, without argparse's usage dump. Parse inside the
  ``run_cli`` body.
* :func:`positive_int`: the ``type=`` of every count that must be at least 1 (threads,
  workers, batch sizes, k, ...).
* :func:`add_device_argument`: ``--device auto|cpu|cuda`` (:mod:`training.core.devices`).
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from training.core.devices import DEVICES
from training.core.errors import ReIDError

__all__ = ["ArgumentParser", "positive_int", "add_device_argument"]


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one :class:`ReIDError` line (subparsers too)."""

    def error(self, message: str) -> NoReturn:
        raise ReIDError(message)


def positive_int(text: str) -> int:
    """argparse ``type=`` for a whole number >= 1; the message names the bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_device_argument(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    """Add ``--device auto|cpu|cuda``; ``what`` says what runs there, for the help text."""
    parser.add_argument("--device", choices=DEVICES, default=default,
                        help=f"where {what} runs: auto = CUDA when available, else the CPU; cuda without "
                             "a GPU is an error (default: %(default)s)")
