"""``reid-search``: search the service with a crop from the command line, or manage its gallery.

    reid-search query.jpg --url http://127.0.0.1:8000 --k 5 --exclude-cameras 2
    reid-search add a.jpg b.jpg --pid 7 --camera 3          (key: --api-key or REID_API_KEY)
    reid-search query.jpg --url https://reid.example:8443 --cacert ca.pem   (HTTPS, own CA)
    reid-search remove 42          reid-search remove --pid 7
    reid-search stats              reid-search health

Cameras are numbered as in file names (``c1`` is camera 1), typed as ``3`` or ``c3``; lists as
``1 3`` or ``1,3``. ``reid-index`` takes and shows the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from clients.client import Item, ReIDClient, ReIDClientError, SearchResult

PROG = "reid-search"
COMMANDS = ("add", "remove", "stats", "health")


def _camera(text: str) -> int:
    """A camera number as in file names: ``c3`` or ``3`` -> 3."""
    digits = text.strip()
    digits = digits[1:] if digits[:1] in ("c", "C") else digits
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"expected camera numbers >= 1 like 1,3 or c1 c3 — got {text!r}")
    return int(digits)


def _cameras(text: str) -> list[int]:
    """``1,c3`` -> [1, 3]; one argument of a space- or comma-separated list."""
    return [_camera(c) for c in text.split(",") if c.strip()]


def _camera_list(groups: list[list[int]] | None) -> list[int] | None:
    return None if groups is None else [c for group in groups for c in group]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:  # also false for nan; httpx rejects a negative timeout only mid-request
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("REID_URL", "http://127.0.0.1:8000"),
                   help="service address (default: $REID_URL or http://127.0.0.1:8000)")
    p.add_argument("--timeout", type=_seconds, default=30.0, help="seconds per request (default 30)")
    p.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    p.add_argument("--api-key", default=os.environ.get("REID_API_KEY"),
                   help="key sent as X-API-Key: a read key for searches when the server protects reads, "
                        "a write key for add and remove (default: $REID_API_KEY)")
    p.add_argument("--cacert", type=Path, default=None,
                   help="CA certificate (PEM) to trust for an https:// server with its own certificate")


def _search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Find the gallery identities nearest to a person crop. Other commands: "
                               + ", ".join(COMMANDS) + f" (see '{PROG} COMMAND --help').")
    p.add_argument("image", type=Path, nargs="+",
                   help="query crop (JPEG, PNG, BMP or WEBP); several crops of one person are one query "
                        "(their mean embedding)")
    p.add_argument("--k", type=int, default=5, help="identities to rank (default 5)")
    p.add_argument("--per-identity", type=int, default=3, help="crops shown per identity (default 3)")
    p.add_argument("--items", type=int, default=10, help="nearest items to fetch (default 10)")
    p.add_argument("--cameras", type=_cameras, nargs="+",
                   help="keep only these cameras, numbered as in file names (c1 is 1), e.g. 1 3 or 1,3")
    p.add_argument("--exclude-cameras", type=_cameras, nargs="+",
                   help="drop these cameras, numbered as in file names, e.g. 2")
    p.add_argument("--time-from", type=float, help="earliest timestamp")
    p.add_argument("--time-to", type=float, help="latest timestamp")
    p.add_argument("--max-distance", type=float, help="drop matches farther than this (Euclidean, also with --rerank)")
    p.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking of the nearest items (the server's shortlist, or --rerank-size)")
    p.add_argument("--rerank-size", type=int, help="with --rerank: nearest items to re-rank")
    _common(p)
    return p


def _command_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} {command}")
    if command == "add":
        p.description = "Add crops to the gallery in one transaction (needs the API key)."
        p.add_argument("images", type=Path, nargs="+", help="crops to add")
        p.add_argument("--pid", type=int, help="identity of every crop")
        p.add_argument("--camera", type=_camera, help="camera number of every crop, as in file names (3 or c3)")
        p.add_argument("--timestamp", type=float, help="time or frame number of every crop")
    elif command == "remove":
        p.description = "Remove one item by id, or every item of an identity (needs the API key)."
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("item_id", type=int, nargs="?", help="gallery item id")
        which.add_argument("--pid", type=int, help="remove every item of this identity")
    elif command == "stats":
        p.description = "Gallery size, identities, cameras, model fingerprint."
    else:
        p.description = "Is the service alive and ready?"
    _common(p)
    return p


def format_search(result: SearchResult) -> str:
    """A ranked table: one line per identity with its nearest crops."""
    t = result.timings
    lines = [f"{len(result.identities)} identities from a gallery of {result.gallery_size} "
             f"({t.total_ms:.1f} ms: decode {t.decode_ms:.1f}, embed {t.embed_ms:.1f}, "
             f"search {t.search_ms:.1f})"]
    if result.crops > 1:
        lines.append(f"query: the mean embedding of {result.crops} crops")
    if result.rerank is not None:
        r = result.rerank
        lines.append(f"re-ranked: k-reciprocal k1={r.k1} k2={r.k2} lambda={r.lambda_value:g} on the "
                     f"{r.shortlist} nearest items (distances shown are Euclidean)")
    if result.identities:
        lines.append(f"{'rank':>4}  {'pid':>8}  {'distance':>9}  items (id@camera:distance)")
        for rank, identity in enumerate(result.identities, 1):
            items = ", ".join(_item_cell(i) for i in identity.items)
            lines.append(f"{rank:>4}  {identity.pid:>8}  {identity.distance:>9.4f}  {items}")
    elif result.matches:
        lines.append("no labelled identity; nearest items:")
        lines.append(f"{'rank':>4}  {'id':>8}  {'distance':>9}  camera  time")
        for rank, item in enumerate(result.matches, 1):
            lines.append(f"{rank:>4}  {item.id:>8}  {item.distance or 0:>9.4f}  {_camera_name(item.camera):>6}  "
                         f"{_opt(item.timestamp)}")
    return "\n".join(lines)


def _item_cell(item: Item) -> str:
    return f"{item.id}@{_camera_name(item.camera)}:{item.distance or 0:.4f}"


def _camera_name(camera: int | None) -> str:
    return "-" if camera is None else f"c{camera}"


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


def _run(argv: list[str]) -> int:
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = (_command_parser(command).parse_args(argv[1:]) if command
            else _search_parser().parse_args(argv))
    verify: str | bool = str(args.cacert) if args.cacert is not None else True
    with ReIDClient(args.url, api_key=args.api_key, timeout=args.timeout, verify=verify) as client:
        if command is None:
            result = client.search(args.image, k=args.items, k_identities=args.k,
                                   items_per_identity=args.per_identity, cameras=_camera_list(args.cameras),
                                   exclude_cameras=_camera_list(args.exclude_cameras), time_from=args.time_from,
                                   time_to=args.time_to, max_distance=args.max_distance,
                                   rerank=args.rerank, rerank_size=args.rerank_size)
            print(json.dumps(asdict(result), indent=2) if args.json else format_search(result))
        elif command == "add":
            added = client.add(args.images, pid=args.pid, camera=args.camera, timestamp=args.timestamp)
            if args.json:
                _print_json(asdict(added))
            else:
                print(f"added {len(added.items)} item(s): ids {', '.join(str(i.id) for i in added.items)}; "
                      f"gallery now holds {added.gallery_size}")
        elif command == "remove":
            removed = client.remove(args.item_id) if args.pid is None else client.remove_identity(args.pid)
            if args.json:
                _print_json(asdict(removed))
            else:
                print(f"removed {removed.removed} item(s); gallery now holds {removed.gallery_size}")
        elif command == "stats":
            stats = client.stats()
            if args.json:
                _print_json(asdict(stats))
            else:
                cams = ", ".join(f"{'?' if c is None else _camera_name(c)}: {n}"
                                 for c, n in stats.per_camera.items()) or "-"
                print(f"{stats.count} items, {stats.identities} identities, {stats.unlabelled} unlabelled\n"
                      f"per camera: {cams}\n{stats.dim}-d {stats.index_type} index on {stats.device}, "
                      f"model {stats.fingerprint[:16]}, {stats.on_disk_bytes / 1e6:.1f} MB on disk\n"
                      f"backend {stats.backend} {stats.address}")
        else:
            health = client.health()
            if args.json:
                _print_json(asdict(health))
            else:
                print(f"alive: {health.alive}, ready: {health.ready}")
            return 0 if health.ready else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(argv)
    except ReIDClientError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
