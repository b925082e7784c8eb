"""Fixtures of the service tests: a tiny ONNX model, generated crops, an app over a temp gallery."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from onnx_models import write_tiny_model
from server.app import create_app
from server.settings import Settings
from service_data import API_KEY, crop_bytes


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx", seed=3, embed_dim=8,
                            height=16, width=8)


@pytest.fixture
def make_settings(tmp_path: Path, model_path: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = dict(model=model_path, gallery=tmp_path / "gallery",
                                         create_gallery=True, api_key=API_KEY, workers=2,
                                         max_upload_bytes=64 * 1024, max_k=50, max_wait_ms=2.0)
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as c:
        yield c


@pytest.fixture
def crop() -> Callable[..., bytes]:
    return crop_bytes


def png(data: bytes) -> tuple[str, io.BytesIO, str]:
    return ("crop.png", io.BytesIO(data), "image/png")
