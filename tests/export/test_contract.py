"""The metadata contract: what an exported model promises, written and read back."""

from __future__ import annotations

import hashlib
import json

import pytest

import re
from pathlib import Path

from export.contract import (
    FORMAT_VERSION,
    PREFIX,
    PRECISION_KEY,
    SOURCE_FINGERPRINT_KEY,
    ModelContract,
    file_metadata,
    metadata_key,
)
from training.core.errors import ReIDError

FINGERPRINT = hashlib.sha256(b"weights").hexdigest()


def make_contract(**overrides: object) -> ModelContract:
    values: dict[str, object] = dict(
        input_height=256,
        input_width=128,
        embedding_dim=2048,
        embedding_kind="global",
        fingerprint=FINGERPRINT,
        producer_version="reid-uda 0.1.0",
        train_config={"epochs": 30, "lr": 3e-4},
    )
    values.update(overrides)
    return ModelContract(**values)  # type: ignore[arg-type]


def test_round_trip_through_string_metadata() -> None:
    contract = make_contract()
    metadata = contract.to_metadata()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    assert all(k.startswith(PREFIX) for k in metadata)
    assert metadata["reid.embedding_dim"] == "2048"
    assert metadata["reid.input_height"] == "256"
    assert metadata["reid.channel_order"] == "RGB"
    assert metadata["reid.format_version"] == str(FORMAT_VERSION)
    assert json.loads(metadata["reid.output_names"]) == ["global_feat", "local_feat", "embedding"]
    back = ModelContract.from_metadata(metadata, source="m.onnx")
    assert back == contract
    assert back.train_config_dict == {"epochs": 30, "lr": 3e-4}
    assert back.input_size == (256, 128)


def test_train_config_accepts_text_or_mapping_alike() -> None:
    assert make_contract(train_config='{"lr": 1, "epochs": 2}') == make_contract(
        train_config={"epochs": 2, "lr": 1}
    )


def test_unrelated_metadata_is_ignored() -> None:
    metadata = make_contract().to_metadata() | {"author": "someone"}
    assert ModelContract.from_metadata(metadata) == make_contract()


def test_file_without_our_metadata_is_named() -> None:
    with pytest.raises(ReIDError, match=r"model\.onnx.*not a ReID model.*reid\.format_version"):
        ModelContract.from_metadata({"author": "someone"}, source="model.onnx")


@pytest.mark.parametrize("key", ["reid.embedding_dim", "reid.input_width", "reid.fingerprint"])
def test_missing_key_is_named(key: str) -> None:
    metadata = make_contract().to_metadata()
    del metadata[key]
    with pytest.raises(ReIDError) as err:
        ModelContract.from_metadata(metadata, source="m.onnx")
    assert str(err.value).startswith("m.onnx: ")
    assert key in str(err.value) and "missing" in str(err.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("reid.embedding_dim", "many"),
        ("reid.embedding_dim", "0"),
        ("reid.input_height", "-3"),
        ("reid.channel_order", "BGR"),
        ("reid.input_range", "0-255"),
        ("reid.layout", "NHWC"),
        ("reid.normalization", "none"),
        ("reid.embedding_kind", "local"),
        ("reid.resize_interpolation", "area"),
        ("reid.fingerprint", "abc"),
        ("reid.output_names", "embedding"),
        ("reid.embedding_output", "pool5"),
        ("reid.train_config", "{not json"),
        ("reid.train_config", "[1, 2]"),
    ],
)
def test_invalid_value_is_named(key: str, value: str) -> None:
    metadata = make_contract().to_metadata() | {key: value}
    with pytest.raises(ReIDError) as err:
        ModelContract.from_metadata(metadata, source="m.onnx")
    assert str(err.value).startswith("m.onnx: ")
    assert key in str(err.value)


def test_newer_format_is_refused_with_upgrade_hint() -> None:
    metadata = make_contract().to_metadata() | {"reid.format_version": str(FORMAT_VERSION + 1)}
    with pytest.raises(ReIDError, match=r"m\.onnx.*newer.*upgrade"):
        ModelContract.from_metadata(metadata, source="m.onnx")


def test_contract_is_frozen() -> None:
    contract = make_contract()
    with pytest.raises(AttributeError):
        contract.embedding_dim = 3  # type: ignore[misc]


def test_file_metadata_adds_precision_and_source_fingerprint() -> None:
    contract = make_contract()
    assert file_metadata(contract, "float32") == {**contract.to_metadata(), PRECISION_KEY: "float32"}
    derived = file_metadata(contract, "int8-qdq", source_fingerprint=FINGERPRINT)
    assert derived[PRECISION_KEY] == "int8-qdq" and derived[SOURCE_FINGERPRINT_KEY] == FINGERPRINT
    with pytest.raises(ValueError, match="precision"):
        file_metadata(contract, "fp16")
    assert metadata_key("embedding_dim") == "reid.embedding_dim"
    with pytest.raises(ValueError, match="not a model contract field"):
        metadata_key("embeding_dim")


def test_no_module_but_the_contract_spells_a_metadata_key() -> None:
    """Every ``reid.<key>`` string lives in export/contract.py; others import the constants."""
    root = Path(__file__).resolve().parents[2]
    spelled = re.compile(r"""["'`]""" + re.escape(PREFIX) + r"[a-z_]+")
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for package in ("training", "export", "index", "server", "clients")
        for path in sorted((root / package).rglob("*.py"))
        if path != root / "export" / "contract.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line) or re.search(r"\b" + re.escape(PREFIX) + r"[a-z_]+=", line)
    ]
    assert offenders == []
