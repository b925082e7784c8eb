"""The service's configuration: one typed object, read from flags and ``REID_*`` variables.

Parsed once at the edge (``reid-serve`` or a test) and passed down; nothing in ``server/``
reads the environment anywhere else. Precedence: explicit values (command-line flags) over
``REID_*`` environment variables over the defaults below.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from training.core.devices import Device


class Settings(BaseSettings):
    """Everything ``reid-serve`` can be told. Each field ``x`` is also read from ``REID_X``."""

    model_config = SettingsConfigDict(env_prefix="REID_", extra="forbid", frozen=True)

    model: Path = Field(description="exported ONNX model (reid-export)")
    gallery: Path = Field(description="gallery folder (index.gallery)")
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
    micro_batching: bool = Field(True, description="embed concurrent searches together")
    max_batch: int = Field(16, ge=1, description="largest micro-batch")
    max_wait_ms: float = Field(2.0, ge=0.0, le=1000.0, description="how long a batch waits to fill")
    workers: int | None = Field(
        None, ge=1, description="threads for decoding, search and writes (default: usable cores)"
    )
    onnx_threads: int | None = Field(None, ge=1, description="ONNX Runtime intra-op threads")
    faiss_threads: int | None = Field(None, ge=1, description="FAISS OpenMP threads")
    providers: str = Field("auto", description="ONNX Runtime providers: auto, cpu, cuda, tensorrt")
    device: Device = Field("cpu", description="where the FAISS gallery searches: auto, cpu or cuda "
                                              "(training.core.devices; cuda without a GPU is refused)")
    image_roots: tuple[Path, ...] = Field(
        (), description="folders whose files GET /gallery/{id}/image may serve (bulk-indexed items)"
    )
    log_level: str = "info"
