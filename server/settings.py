"""The service's configuration: one typed object, read from flags and ``REID_*`` variables.

Parsed once at the edge (``reid-serve`` or a test) and passed down; nothing in ``server/``
reads the environment anywhere else. Precedence: explicit values (command-line flags) over
``REID_*`` environment variables over the defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from index.address import parse_address, side_folder
from index.audit import default_audit_path
from server.threads import Pipeline
from training.core.devices import Device


class Settings(BaseSettings):
    """Everything ``reid-serve`` can be told. Each field ``x`` is also read from ``REID_X``."""

    model_config = SettingsConfigDict(env_prefix="REID_", extra="forbid", frozen=True)

    model: Path = Field(description="exported ONNX model (reid-export)")
    # A str stays a str: Path() would fold the "//" of a milvus:// address.
    gallery: str | Path = Field(description="gallery address: a folder (FAISS), a FILE.db (embedded Milvus "
                                            "Lite) or milvus://HOST:PORT/COLLECTION (Milvus server, token "
                                            "from REID_MILVUS_TOKEN); see index.address")
    create_gallery: bool = Field(
        False, description="create the gallery from the model's fingerprint and dim if it is missing"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = Field(
        None, description="key for POST/DELETE /gallery (header X-API-Key); unset: writes refused"
    )
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="request body limit")
    max_pixels: int = Field(40_000_000, ge=1, description="decoded image limit (width x height)")
    max_add_files: int = Field(64, ge=1, description="crops per POST /gallery")
    max_k: int = Field(100, ge=1, description="largest k / k_identities a search may ask for")
    max_items_per_identity: int = Field(20, ge=1)
    max_query_crops: int = Field(16, ge=1, description="crops of one person one /search may fuse")
    rerank_size: int = Field(100, ge=1, description="shortlist a rerank=true search re-ranks (N)")
    max_rerank_size: int = Field(500, ge=1, description="largest rerank_size a request may ask for")
    rerank_k1: int = Field(20, ge=1, description="k-reciprocal neighbours of a re-ranked search")
    rerank_k2: int = Field(6, ge=1, description="local query expansion of a re-ranked search")
    rerank_lambda: float = Field(0.3, ge=0.0, le=1.0, description="weight of the original distance after re-ranking")
    micro_batching: bool = Field(True, description="embed concurrent searches together")
    max_batch: int = Field(16, ge=1, description="largest micro-batch")
    max_wait_ms: float = Field(2.0, ge=0.0, le=1000.0, description="how long a batch waits to fill")
    workers: int | None = Field(
        None, ge=1, description="threads for decoding, search and writes (default: usable cores)"
    )
    onnx_threads: int | None = Field(None, ge=1, description="ONNX Runtime intra-op threads")
    onnx_spin: bool = Field(
        False, description="idle ONNX Runtime threads busy-wait: a lone query is faster, but under load "
                           "they take CPU from decoding and HTTP"
    )
    embed_lanes: int | None = Field(
        None, ge=1, description="micro-batches embedded at once (default: usable cores on a CPU, 1 on a GPU)"
    )
    lane_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime threads of a micro-batch that starts while another is in the "
                                "model, run on a second session of the model (CPU default 1; equal to "
                                "onnx_threads: one session for all)"
    )
    pipeline: Pipeline = Field(
        "auto", description="micro-batching: 'lanes' (each embedding lane decodes, embeds and searches its "
                            "batch), 'stages' (a thread pool per stage), or 'auto': lanes on a CPU, stages on a GPU"
    )
    faiss_threads: int | None = Field(None, ge=1, description="FAISS OpenMP threads")
    gc_threshold: int = Field(
        10_000, ge=0, description="reid-serve: Python's gen-0 garbage-collection threshold, with what was loaded "
                                  "at start frozen out of collections (0: Python's defaults, nothing frozen)"
    )
    providers: str = Field("auto", description="ONNX Runtime providers: auto, cpu, cuda, tensorrt")
    device: Device = Field("cpu", description="where the FAISS gallery searches: auto, cpu or cuda "
                                              "(training.core.devices; cuda without a GPU is refused)")
    image_roots: tuple[Path, ...] = Field(
        (), description="folders whose files GET /gallery/{id}/image may serve (bulk-indexed items)"
    )
    log_level: str = "info"

    # -- who may look, what is recorded, how long items are kept (docs/security.md) --------
    read_key: SecretStr | None = Field(
        None, description="key for /search, /gallery/stats and item images (header X-API-Key); "
                          "unset and no keys_file: reads are open"
    )
    keys_file: Path | None = Field(None, description="named read/write keys, stored as hashes (reid-keys)")
    audit_log: Path | None = Field(None, description="audit log (default: <gallery>/audit/audit.jsonl)")
    audit_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="audit log size before it rotates")
    audit_backups: int = Field(20, ge=1, description="rotated audit logs kept")
    audit_fsync: Literal["always", "interval", "never"] = Field(
        "interval", description="when audit lines are forced to disk (kill -9 loses none either way)"
    )
    retain_days: float | None = Field(None, gt=0, description="prune items older than this while serving")
    retain_check_minutes: float = Field(60.0, gt=0, description="how often retention pruning runs")
    rate_limit: float | None = Field(
        None, gt=0, description="searches and image views per second per key (or client address); unset: no limit"
    )
    rate_burst: int = Field(20, ge=1, description="requests a caller may make at once before the rate applies")
    cors_origins: tuple[str, ...] = Field((), description="origins other pages may call the API from (none)")
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM) to serve HTTPS")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM)")

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("give both ssl_certfile and ssl_keyfile, or neither")
        return self

    @property
    def audit_path(self) -> Path:
        """The audit log this server appends to."""
        if self.audit_log is not None:
            return self.audit_log
        return default_audit_path(side_folder(parse_address(self.gallery)))
