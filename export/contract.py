"""The metadata contract an exported ONNX model carries from training to serving.

Everything the serving side needs to turn a crop into a vector (input name and size, channel
order, value range, resize filter, which output is the search embedding and how wide it is)
travels inside the ONNX file as string metadata under the ``reid.`` prefix. The exporter
writes :meth:`ModelContract.to_metadata`; the runtime reads it back with
:meth:`ModelContract.from_metadata` and never repeats these constants.

Torch-free: the serving install imports this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from training.core.imageio import INTERPOLATIONS
from training.core.errors import ReIDError

#: The contract version this code writes and the newest one it reads. Bump it when a key
#: changes meaning or a required key is added; readers refuse newer files instead of
#: silently misreading them.
FORMAT_VERSION = 1

#: Every contract key starts with this, so our keys never collide with other metadata.
PREFIX = "reid."

#: Keys written beside the contract fields: the runtime ignores them, tools read them.
#: ``precision`` is what numbers the graph computes in (:data:`PRECISIONS`); a file derived from
#: another (the int8 one) names the fingerprint of its fp32 source under ``source_fingerprint``.
PRECISION_KEY = PREFIX + "precision"
SOURCE_FINGERPRINT_KEY = PREFIX + "source_fingerprint"
FLOAT32 = "float32"
INT8_QDQ = "int8-qdq"
PRECISIONS: tuple[str, ...] = (FLOAT32, INT8_QDQ)

EmbeddingKind = Literal["global", "global+local"]
EMBEDDING_KINDS: tuple[str, ...] = ("global", "global+local")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Fields that are ints in Python and decimal strings in the file.
_INT_FIELDS = ("format_version", "input_height", "input_width", "embedding_dim")
# The preprocessing facts the runtime implements exactly one way: a file that asks for
# anything else must be refused rather than fed the wrong pixels.
_FIXED_VALUES = {
    "channel_order": "RGB",
    "input_dtype": "float32",
    "input_range": "0-1",
    "layout": "NCHW",
    "normalization": "in_graph",
}


@dataclass(frozen=True)
class ModelContract:
    """What a ReID ONNX model promises about its input and output.

    The model takes ``input_name``: float32, NCHW, RGB, values in [0, 1], shape
    ``(N, 3, input_height, input_width)`` with a dynamic N. ImageNet mean/std normalisation
    happens inside the graph (``normalization == "in_graph"``), so callers must not
    normalise. Crops are resized to (input_height, input_width) with
    ``resize_interpolation``. Output ``embedding_output`` is the (N, embedding_dim) float32
    search vector; ``output_names`` lists every graph output (global feature, local feature,
    embedding) for parity checks.

    ``train_config`` is the training configuration as canonical JSON text (a mapping passed
    in is serialised with sorted keys). ``fingerprint`` is the sha256 hex digest of the
    weights, so an index can tell whether it was built by the same model.
    """

    input_height: int
    input_width: int
    embedding_dim: int
    embedding_kind: EmbeddingKind
    fingerprint: str
    producer_version: str
    train_config: str | Mapping[str, Any] = "{}"
    input_name: str = "images"
    embedding_output: str = "embedding"
    output_names: tuple[str, ...] = ("global_feat", "local_feat", "embedding")
    resize_interpolation: str = "bilinear"
    channel_order: str = "RGB"
    input_dtype: str = "float32"
    input_range: str = "0-1"
    layout: str = "NCHW"
    normalization: str = "in_graph"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # Normalise first so every later check sees canonical values.
        config = _parse_train_config(self.train_config)
        object.__setattr__(self, "train_config", json.dumps(config, sort_keys=True))
        object.__setattr__(self, "output_names", tuple(self.output_names))
        object.__setattr__(self, "fingerprint", str(self.fingerprint).lower())
        self._validate()

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the model input."""
        return (self.input_height, self.input_width)

    @property
    def train_config_dict(self) -> dict[str, Any]:
        """The training configuration as a fresh dict (safe to mutate)."""
        return json.loads(self.train_config)

    def to_metadata(self) -> dict[str, str]:
        """Every field as ``{"reid.<field>": str}``, ready for ONNX ``metadata_props``.

        Ints are decimal strings, ``output_names`` is a JSON list, ``train_config`` is JSON.
        """
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "output_names":
                text = json.dumps(list(value))
            else:
                text = str(value)
            out[PREFIX + f.name] = text
        return out

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, str], source: str = "<metadata>"
    ) -> ModelContract:
        """Read a contract back from ONNX metadata; ``source`` names the file in errors.

        Raises:
            ReIDError: the metadata is not from a ReID export (no ``reid.format_version``),
                was written by a newer format, or a key is missing or invalid. The message
                names ``source`` and the key.
        """
        version_key = PREFIX + "format_version"
        if version_key not in metadata:
            raise ReIDError(
                f"{source}: not a ReID model export: metadata key {version_key!r} is missing "
                f"(found keys: {sorted(metadata) or 'none'}); export the model with the "
                "project's ONNX exporter"
            )
        version = _parse_int(metadata[version_key], version_key, source)
        if version > FORMAT_VERSION:
            raise ReIDError(
                f"{source}: model contract format {version} is newer than this runtime reads "
                f"(up to {FORMAT_VERSION}); upgrade the serving install"
            )
        if version < 1:
            raise ReIDError(f"{source}: invalid {version_key}={version}; expected >= 1")

        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            key = PREFIX + f.name
            if key not in metadata:
                raise ReIDError(f"{source}: model metadata key {key!r} is missing")
            raw = metadata[key]
            if f.name in _INT_FIELDS:
                kwargs[f.name] = _parse_int(raw, key, source)
            elif f.name == "output_names":
                kwargs[f.name] = _parse_name_list(raw, key, source)
            else:
                kwargs[f.name] = raw
        try:
            return cls(**kwargs)
        except ReIDError as exc:
            raise ReIDError(f"{source}: {exc}") from None

    def _validate(self) -> None:
        for name, expected in _FIXED_VALUES.items():
            got = getattr(self, name)
            if got != expected:
                raise ReIDError(
                    f"invalid model metadata {PREFIX}{name}={got!r}; this runtime only "
                    f"supports {expected!r}"
                )
        for name in ("input_height", "input_width", "embedding_dim", "format_version"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ReIDError(
                    f"invalid model metadata {PREFIX}{name}={value!r}; expected a positive integer"
                )
        if self.format_version > FORMAT_VERSION:
            raise ReIDError(
                f"invalid model metadata {PREFIX}format_version={self.format_version}; "
                f"this code reads up to {FORMAT_VERSION}"
            )
        if self.embedding_kind not in EMBEDDING_KINDS:
            raise ReIDError(
                f"invalid model metadata {PREFIX}embedding_kind={self.embedding_kind!r}; "
                f"expected one of {list(EMBEDDING_KINDS)}"
            )
        if self.resize_interpolation not in INTERPOLATIONS:
            raise ReIDError(
                f"invalid model metadata {PREFIX}resize_interpolation="
                f"{self.resize_interpolation!r}; expected one of {list(INTERPOLATIONS)}"
            )
        if not _SHA256_HEX.fullmatch(self.fingerprint):
            raise ReIDError(
                f"invalid model metadata {PREFIX}fingerprint={self.fingerprint!r}; expected "
                "64 hex digits (sha256 of the weights)"
            )
        if not self.input_name:
            raise ReIDError(f"invalid model metadata {PREFIX}input_name: empty")
        if not self.output_names or any(not n for n in self.output_names):
            raise ReIDError(
                f"invalid model metadata {PREFIX}output_names={list(self.output_names)!r}; "
                "expected a non-empty list of names"
            )
        if len(set(self.output_names)) != len(self.output_names):
            raise ReIDError(
                f"invalid model metadata {PREFIX}output_names={list(self.output_names)!r}; "
                "names repeat"
            )
        if self.embedding_output not in self.output_names:
            raise ReIDError(
                f"invalid model metadata {PREFIX}embedding_output={self.embedding_output!r}; "
                f"it must be one of {PREFIX}output_names={list(self.output_names)!r}"
            )


def metadata_key(field: str) -> str:
    """The metadata key of a :class:`ModelContract` field: ``"reid.<field>"``.

    Raises ``ValueError`` for a name that is not a contract field, so a typo fails loudly.
    """
    if field not in {f.name for f in fields(ModelContract)}:
        raise ValueError(f"{field!r} is not a model contract field")
    return PREFIX + field


def file_metadata(contract: ModelContract, precision: str,
                  source_fingerprint: str | None = None) -> dict[str, str]:
    """Everything an exported file carries: the contract, its precision and, for a file derived
    from another model file, that file's fingerprint."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    metadata = {**contract.to_metadata(), PRECISION_KEY: precision}
    if source_fingerprint is not None:
        metadata[SOURCE_FINGERPRINT_KEY] = source_fingerprint
    return metadata


def _parse_int(raw: str, key: str, source: str) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ReIDError(f"{source}: model metadata {key}={raw!r} is not an integer") from None


def _parse_name_list(raw: str, key: str, source: str) -> tuple[str, ...]:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReIDError(
            f"{source}: model metadata {key}={raw!r} is not a JSON list of output names"
        )
    return tuple(value)


def _parse_train_config(value: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        config = dict(value)
        try:
            json.dumps(config)
        except (TypeError, ValueError) as exc:
            raise ReIDError(f"train_config is not JSON-serialisable: {exc}") from None
        return config
    try:
        config = json.loads(value)
    except (TypeError, ValueError):
        raise ReIDError(
            f"invalid model metadata {PREFIX}train_config: not JSON text ({str(value)[:80]!r})"
        ) from None
    if not isinstance(config, dict):
        raise ReIDError(
            f"invalid model metadata {PREFIX}train_config: expected a JSON object, "
            f"got {type(config).__name__}"
        )
    return config
