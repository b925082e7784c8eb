"""``reid-keys``: add, remove and list the named keys of a ``reid-serve --keys-file``.

    reid-keys add keys.txt alice --scope read     # prints alice's key once; the file keeps a hash
    reid-keys remove keys.txt alice
    reid-keys list keys.txt

The file is rewritten atomically with owner-only permissions; a running server picks the
change up on SIGHUP (``kill -HUP <pid>``). The format is described in :mod:`server.auth`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from server.auth import SCOPES, KeyEntry, new_entry, read_keys_file
from training.core.cliargs import ArgumentParser
from training.core.errors import ReIDError, run_cli
from training.core.fileio import atomic_write_bytes

PROG = "reid-keys"
_HEADER = ("# reid-serve keys file: NAME SCOPE ID HASH, one key a line. Keys themselves are never\n"
           "# stored here; make entries with `reid-keys add`, then `kill -HUP` the server.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Manage the named API keys of reid-serve --keys-file.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("add", help="make a key, store its hash, print the key once")
    p.add_argument("file", type=Path, metavar="FILE", help="keys file (created if missing)")
    p.add_argument("name", metavar="NAME", help="who holds the key (recorded in the audit log)")
    p.add_argument("--scope", choices=SCOPES, required=True, help="read: search and view; write: also add and delete")
    p = sub.add_parser("remove", help="remove a key (takes effect at the server's next SIGHUP)")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("name", metavar="NAME")
    p = sub.add_parser("list", help="names, scopes and ids (never keys)")
    p.add_argument("file", type=Path, metavar="FILE")
    return parser


def write_keys_file(path: Path, entries: list[KeyEntry]) -> None:
    """Replace ``path`` with ``entries`` atomically, readable by its owner only."""
    atomic_write_bytes(path, (_HEADER + "".join(e.line() + "\n" for e in entries)).encode())
    os.chmod(path, 0o600)


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        path: Path = args.file
        entries = read_keys_file(path) if args.command != "add" or path.exists() else []
        if args.command == "list":
            for e in entries:
                print(f"{e.name}\t{e.scope}\t{e.key_id}")
            return 0
        if args.command == "remove":
            kept = [e for e in entries if e.name != args.name]
            if len(kept) == len(entries):
                raise ReIDError(f"{path}: no key named {args.name!r}")
            write_keys_file(path, kept)
            print(f"removed {args.name}; send SIGHUP to reid-serve to apply", file=sys.stderr)
            return 0
        if any(e.name == args.name for e in entries):
            raise ReIDError(f"{path}: a key named {args.name!r} exists; remove it first to replace it")
        entry, key = new_entry(args.name, args.scope, {e.key_id for e in entries})
        write_keys_file(path, [*entries, entry])
        print(f"added {args.name} ({args.scope}); the key is shown once, store it now; "
              "send SIGHUP to reid-serve to apply", file=sys.stderr)
        print(key)
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
