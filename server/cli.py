"""``reid-serve``: run the search service (FastAPI on uvicorn) over a model and a gallery.

Every flag also has a ``REID_*`` environment variable (see docs/server.md); flags win.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from training.core.devices import DEVICES
from training.core.errors import ReIDError, run_cli

if TYPE_CHECKING:
    from server.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reid-serve",
        description="Serve person re-identification search over HTTP: POST /search with a crop, "
                    "a web page at /, gallery writes behind an API key, Prometheus /metrics.",
    )
    p.add_argument("--model", type=Path, help="exported ONNX model (REID_MODEL)")
    p.add_argument("--gallery", help="gallery: a folder (FAISS), a FILE.db (embedded Milvus Lite) or "
                                     "milvus://HOST:PORT/COLLECTION (Milvus server, token from "
                                     "REID_MILVUS_TOKEN) (REID_GALLERY)")
    p.add_argument("--create", dest="create_gallery", action="store_true", default=None,
                   help="create an empty gallery for this model if none exists (REID_CREATE_GALLERY)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; REID_HOST)")
    p.add_argument("--port", type=int, help="port (default 8000; REID_PORT)")
    p.add_argument("--api-key", help="key for gallery writes; prefer the REID_API_KEY variable, "
                                     "which other users cannot see in the process list")
    p.add_argument("--max-upload-bytes", type=int, help="request body limit (default 10 MiB)")
    p.add_argument("--max-k", type=int, help="largest k a search may ask for (default 100)")
    p.add_argument("--no-micro-batching", dest="micro_batching", action="store_false", default=None,
                   help="embed each search on its own (for comparison)")
    p.add_argument("--max-batch", type=int, help="largest micro-batch (default 16)")
    p.add_argument("--max-wait-ms", type=float, help="how long a micro-batch waits to fill (default 2)")
    p.add_argument("--workers", type=int, help="request threads (default: usable cores)")
    p.add_argument("--onnx-threads", type=int, help="ONNX Runtime intra-op threads (default: see docs)")
    p.add_argument("--onnx-spin", action="store_true", default=None,
                   help="let idle ONNX Runtime threads busy-wait (lower latency for one client, more CPU)")
    p.add_argument("--embed-lanes", type=int, help="micro-batches embedded at once (default: see docs)")
    p.add_argument("--lane-threads", type=int,
                   help="ONNX Runtime threads of a micro-batch that overlaps another, on a second session "
                        "of the model (CPU default 1; equal to --onnx-threads: one session)")
    p.add_argument("--pipeline", choices=["auto", "lanes", "stages"],
                   help="micro-batching layout: lanes (each lane decodes, embeds and searches its batch), "
                        "stages (a thread pool per stage), auto (default: lanes on a CPU, stages on a GPU)")
    p.add_argument("--faiss-threads", type=int, help="FAISS threads (default: cores // workers)")
    p.add_argument("--gc-threshold", type=int,
                   help="Python's gen-0 garbage-collection threshold while serving, with everything loaded "
                        "at start frozen out of collections (default 10000; 0: Python's defaults)")
    p.add_argument("--providers", help="ONNX Runtime providers: auto (default), cpu, cuda, tensorrt")
    p.add_argument("--faiss-device", "--device", dest="device", choices=DEVICES,
                   help="where the FAISS gallery searches: auto (a GPU when faiss sees one, else the CPU "
                        "with one log line), cpu (default) or cuda (refused without a GPU) (REID_DEVICE)")
    p.add_argument("--image-root", dest="image_roots", type=Path, action="append",
                   help="folder whose images GET /gallery/{id}/image may serve for bulk-indexed items "
                        "(repeatable)")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    r = p.add_argument_group("re-ranking and multi-crop queries (docs/server.md)")
    r.add_argument("--rerank-size", type=int, help="N: nearest items a rerank=true search re-ranks (default 100)")
    r.add_argument("--max-rerank-size", type=int, help="largest rerank_size a request may ask for (default 500)")
    r.add_argument("--rerank-k1", type=int, help="k-reciprocal neighbours k1 (default 20, the paper's)")
    r.add_argument("--rerank-k2", type=int, help="local query expansion k2 (default 6)")
    r.add_argument("--rerank-lambda", type=float,
                   help="weight of the original distance in the re-ranked one, 0..1 (default 0.3)")
    r.add_argument("--max-query-crops", type=int, help="crops of one person one /search may fuse (default 16)")
    g = p.add_argument_group("access, audit and retention (docs/security.md)")
    g.add_argument("--read-key", help="key for searches, stats and images; prefer REID_READ_KEY. With "
                                      "neither this nor --keys-file, reads are open")
    g.add_argument("--keys-file", type=Path, help="named read/write keys stored as hashes, made with "
                                                  "reid-keys; re-read on SIGHUP (REID_KEYS_FILE)")
    g.add_argument("--audit-log", type=Path, help="audit log (default GALLERY/audit/audit.jsonl; REID_AUDIT_LOG)")
    g.add_argument("--audit-max-bytes", type=int, help="size at which the audit log rotates (default 64 MiB)")
    g.add_argument("--audit-fsync", choices=["always", "interval", "never"],
                   help="when audit lines are forced to disk (default interval: within a second)")
    g.add_argument("--retain-days", type=float, help="prune items older than this many days while serving")
    g.add_argument("--retain-check-minutes", type=float, help="how often to prune (default 60)")
    g.add_argument("--rate-limit", type=float, help="searches and image views per second per key, or per "
                                                    "client address when reads are open (default: no limit)")
    g.add_argument("--rate-burst", type=int, help="requests allowed at once before the rate applies (default 20)")
    g.add_argument("--cors-origin", dest="cors_origins", action="append",
                   help="an origin whose pages may call this API, e.g. https://ops.example.org (repeatable; "
                        "default none)")
    g.add_argument("--ssl-certfile", type=Path, help="TLS certificate (PEM): serve HTTPS")
    g.add_argument("--ssl-keyfile", type=Path, help="TLS private key (PEM)")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from flags (given ones only) over REID_* variables; one-line error if invalid."""
    from server.settings import Settings  # lazily: --help stays fast

    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ReIDError(f"bad settings ({problems}); flags and REID_* variables are listed in --help") from None


def check_security_files(settings: Settings) -> None:
    """Refuse in one line, before the model loads, a keys file or TLS files that cannot be used."""
    from server.security import keyring_for

    keyring_for(settings)
    for tls_file in (settings.ssl_certfile, settings.ssl_keyfile):
        if tls_file is not None and not tls_file.is_file():
            raise ReIDError(f"{tls_file}: no such TLS certificate or key file")


def check_bindable(host: str, port: int) -> None:
    """Refuse in one line an address uvicorn could not listen on (port in use, unknown host):
    uvicorn would only find out after loading the model and gallery, and exit 3 in a log."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except OSError as exc:
        raise ReIDError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def settle_garbage_collector(threshold: int) -> None:
    """Keep Python's cyclic garbage collector off the request path of a long-running server.

    What is loaded before serving (the model's sessions, the gallery, the app) lives as long as
    the process: after one collection it is frozen out of the collector's scans (``gc.freeze``),
    so a full collection no longer walks it. Requests free their objects by reference counting,
    so a gen-0 threshold of thousands instead of Python's 700 stops collections from running
    every few requests. Measured under 48 clients (small model): 0.17 ms of collection per
    request with Python's defaults, 0.07 frozen, about 0.001 frozen with a threshold of 10000
    (docs/server.md). ``threshold`` 0 leaves Python's defaults and freezes nothing.
    """
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        import uvicorn

        from server.app import create_app
        from server.metrics import Metrics
        from server.service import SearchService

        settings = settings_from_args(args)
        logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
        check_bindable(settings.host, settings.port)
        check_security_files(settings)
        # Opened here, once, before listening: a missing model, a gallery of another model or a
        # folder where none can be made is one line, not a traceback in uvicorn's startup.
        service = SearchService.open(settings, Metrics())
        scheme = "https" if settings.ssl_certfile is not None else "http"
        print(f"reid-serve: {scheme}://{settings.host}:{settings.port}/ (model {settings.model}, "
              f"gallery {settings.gallery}, pid {os.getpid()})", flush=True)
        app = create_app(settings, service)
        settle_garbage_collector(settings.gc_threshold)
        # One process: the gallery is locked by the process that opens it.
        uvicorn.run(app, host=settings.host, port=settings.port,
                    log_level=settings.log_level, workers=1, timeout_graceful_shutdown=10,
                    ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile)
        return 0

    return run_cli("reid-serve", body)
