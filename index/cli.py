"""``reid-index``: build, update, inspect, search and evaluate a gallery from the shell.

A thin layer over :mod:`index.bulk`, :mod:`index.sources`, :mod:`index.evaluation` and
:class:`index.protocol.GalleryBackend` (whichever backend the gallery address names); see
docs/indexing.md. Cameras on the command line and in
tables are numbered as in file names (``c1`` = camera 1), as they are stored in the gallery.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from export.runtime import Embedder, providers_for_device
from training.core.cores import usable_cores
from index.audit import AuditLog, default_audit_path
from index.bulk import DECODE_MODES, REPORT_NAME, embed_files, index_images
from index.evaluation import evaluate_gallery
from index.faiss_index import AUTO, INDEX_TYPES
from index.address import TOKEN_ENV
from index.gallery import DEFAULT_CHECKPOINT_EVERY
from index.manifest import IndexSpec
from index.copy import copy_vectors, reembed
from index.opening import ModelIdentity, open_existing, open_or_create, open_or_create_for
from index.records import Match
from index.retention import prune
from index.shortlist import DEFAULT_SIZE, ShortlistParams, fuse_crops, search_reranked
from index.sources import TIMESTAMP_SOURCES, SourceImage, discover, iter_sources
from training.core.datasets import load_dataset, parse_reid_name
from training.core.cliargs import ArgumentParser, add_device_argument, positive_int
from training.core.errors import ReIDError, run_cli
from training.core.rerank import add_rerank_arguments, describe_rerank, rerank_options, rerank_record

PROG = "reid-index"
GALLERY_HELP = (f"a folder (FAISS), a FILE.db (embedded Milvus Lite) or milvus://HOST:PORT/COLLECTION "
                f"(a Milvus server; token from ${TOKEN_ENV})")


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of days, got {text!r}")
    return value


def _camera(text: str) -> int:
    """A camera number as written in file names: ``c3`` or ``3`` -> 3."""
    digits = text[1:] if text[:1] in "cC" else text
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"expected a camera number >= 1 such as 3 or c3, got {text!r}")
    return int(digits)


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="exported ONNX model (reid-export)")
    add_device_argument(parser, "cpu", "ONNX Runtime and the FAISS search")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per ONNX Runtime call (default: %(default)s)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="decode threads (default: every core for burst, a quarter of them for overlap)")
    parser.add_argument("--decode", choices=DECODE_MODES, default="overlap",
                        help="overlap: decode the next batch while this one is embedded; burst: decode "
                             "each batch between inference calls (can help when other jobs crowd the "
                             "cores) (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="ONNX Runtime intra-op threads (default: every usable core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _spec_args(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--index-type", choices=INDEX_TYPES, default=default,
                        help="flat (exact), ivf_flat, ivf_pq, ivf_sq8, or auto (exact while small, then "
                             "IVF-SQ8 retrained as the gallery grows; docs/gallery.md); for a new gallery "
                             "(default: flat)")
    parser.add_argument("--nlist", type=positive_int, default=IndexSpec.nlist, help="IVF lists (default: %(default)s)")
    parser.add_argument("--nprobe", type=positive_int, default=IndexSpec.nprobe, help="IVF lists searched (default: %(default)s)")
    parser.add_argument("--m", type=positive_int, default=IndexSpec.m, help="IVF-PQ sub-quantisers, must divide the dimension (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Bulk-index person crops into a gallery (a FAISS folder or Milvus), "
                                            "and search, inspect or evaluate it. See docs/indexing.md.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="index folders of crops (resumable)",
                       description="Index every crop in SRC folders into GALLERY (created if missing). A SRC "
                                   "holds crops named like Market-1501/DukeMTMC-reID (pid and camera from the "
                                   "name) or one subfolder per camera (c1/, c2/, ...). Re-running adds only what "
                                   f"is missing; unreadable files are skipped and listed in GALLERY/{REPORT_NAME}.")
    _model_args(p)
    p.add_argument("--out", required=True, help=f"gallery to build or extend: {GALLERY_HELP}")
    p.add_argument("sources", nargs="+", type=Path, metavar="SRC", help="folders of crops")
    _spec_args(p, None)
    p.add_argument("--timestamp", choices=TIMESTAMP_SOURCES, default="frame",
                   help="frame number from the file name, file mtime, or none (default: %(default)s)")
    p.add_argument("--keep-junk", action="store_true", help="also index junk boxes (pid -1), skipped by default")
    p.add_argument("--checkpoint-every", type=positive_int, default=DEFAULT_CHECKPOINT_EVERY,
                   help="save the FAISS snapshot after this many added items (default: %(default)s)")

    p = sub.add_parser("add", help="index a few crop files", description="Add crop files to an existing gallery.")
    _model_args(p)
    p.add_argument("--gallery", required=True, help=GALLERY_HELP)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--pid", type=int, default=None, help="identity for every file (default: from the name, if any)")
    p.add_argument("--camera", type=_camera, default=None, help="camera number for every file (default: from the name)")
    p.add_argument("--timestamp", type=float, default=None, help="timestamp for every file (default: frame in the name)")

    p = sub.add_parser("remove", help="remove items by id, identity or camera")
    p.add_argument("--gallery", required=True, help=GALLERY_HELP)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--id", type=int, nargs="+", dest="ids", help="gallery ids")
    what.add_argument("--pid", type=int, help="every item of this identity")
    what.add_argument("--camera", type=_camera, help="every item of this camera (number as in c3)")

    p = sub.add_parser("prune", help="remove items older than a number of days (retention)",
                       description="Remove every item older than --older-than days, by its capture timestamp "
                                   "when that is a Unix time, else by when it was added, and delete the crops "
                                   "the server stored for them; the removal is written to the audit log.")
    p.add_argument("gallery", metavar="GALLERY", help=GALLERY_HELP)
    p.add_argument("--older-than", required=True, type=_days, metavar="DAYS",
                   help="retention in days (fractions allowed)")
    p.add_argument("--by-added", action="store_true",
                   help="age by the time items were added, ignoring capture timestamps")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, change nothing")
    p.add_argument("--audit-log", type=Path, default=None,
                   help="audit log to append to (default: GALLERY/audit/audit.jsonl, as reid-serve)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("stats", help="counts, cameras, model and size of a gallery")
    p.add_argument("gallery", metavar="GALLERY", help=GALLERY_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("search", help="rank gallery items (or identities) for one crop, or several crops of one person")
    _model_args(p)
    p.add_argument("--gallery", required=True, help=GALLERY_HELP)
    p.add_argument("image", type=Path, metavar="IMAGE", nargs="+",
                   help="query crop; several crops of one person are one query (their mean embedding)")
    p.add_argument("--k", type=positive_int, default=10, help="results (identities with --identities) (default: %(default)s)")
    p.add_argument("--cameras", type=_camera, nargs="+", default=None, help="only these cameras")
    p.add_argument("--exclude-cameras", type=_camera, nargs="+", default=None, help="not these cameras")
    p.add_argument("--max-distance", type=float, default=None, help="drop results farther than this (Euclidean)")
    p.add_argument("--identities", action="store_true", help="rank identities by their best match")
    p.add_argument("--per-identity", type=positive_int, default=3, help="items shown per identity (default: %(default)s)")
    p.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) of the --rerank-size nearest items; "
                        "--max-distance still cuts the Euclidean distance")
    p.add_argument("--rerank-size", type=positive_int, default=None,
                   help=f"with --rerank: nearest items re-ranked (default: {DEFAULT_SIZE})")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("eval", help="Market-1501 mAP/CMC/mINP of a gallery built from a data set",
                       description="Index DATA/bounding_box_test (into a temporary gallery, or into --gallery, "
                                   "reusing it if it exists), embed DATA/query, search every query against the "
                                   "whole gallery and score it under the Market-1501 protocol.")
    _model_args(p)
    p.add_argument("--data", required=True, type=Path, help="data set root in Market-1501/DukeMTMC-reID layout")
    p.add_argument("--gallery", default=None,
                   help=f"gallery to build or reuse (default: a temporary folder): {GALLERY_HELP}")
    _spec_args(p, None)
    p.add_argument("--json", action="store_true", help="print JSON")
    add_rerank_arguments(p)

    p = sub.add_parser("copy", help="copy a gallery to another backend, or re-embed it with a new model",
                       description="Copy every item of SRC (vectors and metadata) into DST, created for SRC's "
                                   "model if missing: a folder to Milvus or back. Resumable: a re-run skips "
                                   "content DST already holds. With --model, embed each item again from its "
                                   "stored image instead (DST is for that model); items whose image cannot be "
                                   f"read are listed in DST's {REPORT_NAME}.")
    p.add_argument("src", metavar="SRC", help=GALLERY_HELP)
    p.add_argument("dst", metavar="DST", help=GALLERY_HELP)
    p.add_argument("--model", type=Path, default=None, help="re-embed with this exported ONNX model")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="images per ONNX Runtime call with --model (default: %(default)s)")
    p.add_argument("--workers", type=positive_int, default=None, help="decode threads with --model")
    p.add_argument("--threads", type=positive_int, default=None, help="ONNX Runtime intra-op threads with --model")
    add_device_argument(p, "cpu", "ONNX Runtime (with --model)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _spec_args(p, None)
    return parser


# -- commands -------------------------------------------------------------------------------


def _embedder(args: argparse.Namespace) -> Embedder:
    return Embedder(args.model, providers=providers_for_device(args.device), batch_size=args.batch_size,
                    intra_op_threads=args.threads or usable_cores())


def _spec(args: argparse.Namespace) -> IndexSpec | None:
    if args.index_type is None:
        return None
    return IndexSpec(index_type=args.index_type, nlist=args.nlist, nprobe=args.nprobe, m=args.m)


def _build(args: argparse.Namespace) -> int:
    folders = discover(args.sources)  # layout errors before the model loads
    embedder = _embedder(args)
    with open_or_create(args.out, embedder, _spec(args), device=args.device,
                        checkpoint_every=args.checkpoint_every) as gallery:
        report = index_images(
            gallery, embedder, iter_sources(folders, keep_junk=args.keep_junk, timestamp=args.timestamp),
            batch_size=args.batch_size, workers=args.workers, decode=args.decode,
            report_path=gallery.path / REPORT_NAME,
            progress=not args.quiet, total=sum(f.count for f in folders),
        )
        print(report.summary())
        print(f"gallery {gallery.address}: {len(gallery)} items")
    return 0


def _add(args: argparse.Namespace) -> int:
    embedder = _embedder(args)
    images = []
    for path in args.files:
        try:
            name = parse_reid_name(path)
            pid, camera, frame = name.pid, name.camera, float(name.frame)
        except ReIDError:
            pid, camera, frame = None, None, None
        images.append(SourceImage(
            path,
            args.pid if args.pid is not None else pid,
            args.camera if args.camera is not None else camera,
            args.timestamp if args.timestamp is not None else frame,
        ))
    with open_or_create(args.gallery, embedder, create=False, device=args.device) as gallery:
        report = index_images(gallery, embedder, images, batch_size=args.batch_size, workers=args.workers,
                              decode=args.decode, progress=not args.quiet, total=len(images))
    for skipped in report.failures:
        print(f"{PROG}: skipped {skipped.message}", file=sys.stderr)
    print(report.summary())
    return 1 if report.failed else 0


def _remove(args: argparse.Namespace) -> int:
    with open_existing(args.gallery) as gallery:
        if args.ids is not None:
            removed = gallery.remove(args.ids)
        elif args.pid is not None:
            removed = gallery.remove_identity(args.pid)
        else:
            removed = gallery.remove_camera(args.camera)
        print(f"removed {removed} item(s); gallery {gallery.address} now holds {len(gallery)}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    with open_existing(args.gallery) as gallery:
        if args.dry_run:
            result = prune(gallery, args.older_than, by_added=args.by_added, dry_run=True)
        else:
            with AuditLog(args.audit_log or default_audit_path(gallery.path), fsync="always") as audit:
                result = prune(gallery, args.older_than, by_added=args.by_added, audit=audit, actor=PROG)
        left = len(gallery)
    if args.json:
        print(json.dumps({**asdict(result), "gallery_size": left}))
        return 0
    when = datetime.fromtimestamp(result.cutoff, UTC).isoformat(timespec="seconds")
    verb = "would remove" if result.dry_run else "removed"
    print(f"{verb} {len(result.removed_ids)} item(s) older than {args.older_than:g} day(s) (before {when}); "
          f"deleted {result.crops_deleted} stored crop(s); gallery {args.gallery} holds {left}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    with open_existing(args.gallery) as gallery:
        stats = gallery.stats()
        spec = gallery.spec
    if args.json:
        out = asdict(stats)
        out["per_camera"] = {("unknown" if c is None else str(c)): n for c, n in stats.per_camera.items()}
        out["spec"] = asdict(spec)
        print(json.dumps(out, indent=2))
        return 0
    cams = ", ".join(f"{_camera_name(c) if c is not None else '?'}: {n}"
                     for c, n in sorted(stats.per_camera.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
    if stats.active_index == stats.index_type:
        index = stats.index_type
    elif stats.index_type == AUTO:
        index = f"auto (searching {stats.active_index} at this size)"
    else:
        index = f"{stats.index_type} (searching {stats.active_index} until trained)"
    rows = [
        ("backend", _backend_name(stats.backend) + f" {stats.address}"),
        ("items", str(stats.count)),
        ("identities", f"{stats.identities} ({stats.unlabelled} items without one)"),
        ("per camera", cams or "-"),
        ("dim", str(stats.dim)),
        ("model", stats.fingerprint),
        ("index", index),
        ("device", stats.device),
        ("on disk", _human_bytes(stats.on_disk_bytes)),
    ]
    for name, value in rows:
        print(f"{name:<11} {value}")
    return 0


def _copy(args: argparse.Namespace) -> int:
    with open_existing(args.src) as src:
        if args.model is not None:
            embedder = _embedder(args)
            with open_or_create(args.dst, embedder, _spec(args)) as dst:
                report = reembed(src, dst, embedder, batch_size=args.batch_size, workers=args.workers,
                                 report_path=dst.path / REPORT_NAME, progress=not args.quiet)
                print(report.summary())
                print(f"gallery {dst.address}: {len(dst)} items")
            return 1 if report.failed else 0
        model = ModelIdentity(src.dim, src.fingerprint, src.extra)
        with open_or_create_for(args.dst, model, _spec(args)) as dst:
            copied = copy_vectors(src, dst, progress=not args.quiet)
            print(copied.summary())
            print(f"gallery {dst.address}: {len(dst)} items")
    return 0


def _search(args: argparse.Namespace) -> int:
    embedder = _embedder(args)
    with open_or_create(args.gallery, embedder, create=False, device=args.device) as gallery:
        xq = fuse_crops(embedder.embed(args.image))[None]
        filters = dict(cameras=args.cameras, exclude_cameras=args.exclude_cameras, max_distance=args.max_distance)
        if args.rerank_size is not None and not args.rerank:
            raise ReIDError("--rerank-size only applies with --rerank")
        if args.rerank:
            found = search_reranked(gallery, xq[0], ShortlistParams(args.rerank_size or DEFAULT_SIZE), k=args.k,
                                    k_identities=args.k if args.identities else 0,
                                    items_per_identity=args.per_identity, **filters)
            if args.identities:
                _print_identities(found.identities, args.json)
            else:
                _print_matches(found.matches, args.json)
        elif args.identities:
            people = gallery.search_identities(xq, args.k, items_per_identity=args.per_identity, **filters)[0]
            _print_identities(people, args.json)
        else:
            result = gallery.search(xq, args.k, **filters)
            _print_matches(result.matches[0], args.json)
    return 0


def _eval(args: argparse.Namespace) -> int:
    rerank, aqe = rerank_options(args)
    data = load_dataset(args.data)
    embedder = _embedder(args)
    folder = args.gallery
    scratch = None
    if folder is None:
        scratch = Path(tempfile.mkdtemp(prefix="reid-index-eval-"))
        folder = scratch / "gallery"
    try:
        with open_or_create(folder, embedder, _spec(args), device=args.device, checkpoint_every=None) as gallery:
            images = [_labelled_image(s.path) for s in data.gallery]
            index_images(gallery, embedder, images, batch_size=args.batch_size, workers=args.workers,
                         decode=args.decode, progress=not args.quiet, total=len(images))
            qf = embed_files(embedder, [s.path for s in data.query], workers=args.workers, decode=args.decode,
                             progress=not args.quiet)
            result = evaluate_gallery(gallery, qf, np.array([s.pid for s in data.query]),
                                      np.array([parse_reid_name(s.path).camera for s in data.query]),
                                      progress=not args.quiet, rerank=rerank, aqe=aqe)
            n_gallery, index_type = len(gallery), gallery.spec.index_type
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps({
            "mAP": result.mAP, "rank1": float(result.cmc[0]), "rank5": float(result.cmc[4]),
            "rank10": float(result.cmc[9]), "mINP": result.mINP, "num_queries": result.num_queries,
            "num_valid_queries": result.num_valid_queries, "num_gallery": n_gallery, "index_type": index_type,
            **rerank_record(rerank, aqe),
        }))
    else:
        print(f"{data.root}: {result.num_queries} queries, {n_gallery} gallery items, {index_type} index"
              f"{describe_rerank(rerank, aqe)}")
        print(result.summary())
    return 0


# -- output helpers -------------------------------------------------------------------------


def _labelled_image(path: Path) -> SourceImage:
    """A data set crop with its file-name labels (the gallery stores file-name cameras)."""
    name = parse_reid_name(path)
    return SourceImage(path, name.pid, name.camera, float(name.frame))


def _backend_name(backend: str) -> str:
    return {"faiss": "FAISS folder", "milvus-lite": "Milvus Lite file", "milvus": "Milvus server"}.get(backend, backend)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _camera_name(camera: int | None) -> str:
    return "-" if camera is None else f"c{camera}"


def _optional(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value))
    return str(value)


def _item_json(match: Match) -> dict[str, object]:
    extra = {} if match.reranked_distance is None else {"reranked_distance": match.reranked_distance}
    return {"distance": match.distance, **extra, **asdict(match.item)}


def _print_matches(matches: Sequence[Match], as_json: bool) -> None:
    """Ranked items; the distance shown is Euclidean (after --rerank too, where the order is the
    re-ranked one and ``reranked`` is the k-reciprocal distance)."""
    if as_json:
        print(json.dumps([_item_json(m) for m in matches], indent=2))
        return
    reranked = any(m.reranked_distance is not None for m in matches)
    print(f"{'rank':>4}  {'distance':>9}  " + (f"{'reranked':>9}  " if reranked else "")
          + f"{'id':>7}  {'pid':>5}  {'camera':>6}  {'time':>9}  path")
    for rank, m in enumerate(matches, 1):
        item = m.item
        print(f"{rank:>4}  {m.distance:>9.4f}  " + (f"{m.reranked_distance:>9.4f}  " if reranked else "")
              + f"{item.id:>7}  {_optional(item.pid):>5}  "
              f"{_camera_name(item.camera):>6}  {_optional(item.timestamp):>9}  {item.path or '-'}")
    if not matches:
        print("(no gallery item passes the filters)")


def _print_identities(people: Sequence, as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"pid": p.pid, "distance": p.distance,
                           "items": [_item_json(m) for m in p.items]} for p in people], indent=2))
        return
    print(f"{'rank':>4}  {'pid':>5}  {'distance':>9}  items (id camera distance)")
    for rank, person in enumerate(people, 1):
        items = ", ".join(f"{m.item.id} {_camera_name(m.item.camera)} {m.distance:.4f}" for m in person.items)
        print(f"{rank:>4}  {person.pid:>5}  {person.distance:>9.4f}  {items}")
    if not people:
        print("(no labelled gallery item passes the filters)")


_COMMANDS = {"build": _build, "add": _add, "remove": _remove, "prune": _prune, "stats": _stats,
             "search": _search, "eval": _eval, "copy": _copy}


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
