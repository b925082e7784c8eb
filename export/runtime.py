"""How a crop becomes a vector at serving time: ONNX Runtime over the exported model.

:class:`Embedder` opens a model written by the project's exporter, reads its
:class:`~export.contract.ModelContract` from the file's metadata (input size, resize filter,
embedding output and width), checks the graph agrees, and turns images or ready-made
batches into float32 embeddings. Decoding goes through :mod:`training.core.imageio`, the one
decoder every caller shares.

Torch-free: the serving install imports this module.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
import onnxruntime as ort

from export.contract import ModelContract, metadata_key
from training.core.cores import usable_cores
from training.core.devices import choose_device
from training.core.errors import ReIDError
from training.core.imageio import DEFAULT_MAX_PIXELS, ImageSource, load_input

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

#: Order tried by ``providers="auto"``: fastest first, CPU always last as the fallback.
AUTO_PROVIDER_ORDER = (TENSORRT, CUDA, CPU)

_SHORT_NAMES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}

#: A provider name, or ``(name, options)`` as onnxruntime accepts (e.g. ``("CUDAExecutionProvider",
#: {"device_id": 1})``). Short names "tensorrt", "cuda", "cpu" are accepted too.
ProviderSpec = Union[str, tuple[str, Mapping[str, Any]]]


def providers_for_device(device: str, available: Sequence[str] | None = None) -> str | list[str]:
    """ONNX Runtime providers for a device of the project's vocabulary (``auto|cpu|cuda``).

    ``auto`` is ``providers="auto"`` (TensorRT, CUDA, CPU as available); ``cpu`` the CPU only;
    ``cuda`` the CUDA provider, and a ReIDError when this onnxruntime build lacks it.
    ``available`` defaults to ``onnxruntime.get_available_providers()``.
    """
    available = ort.get_available_providers() if available is None else available
    chosen = choose_device(device, CUDA in available, who="onnxruntime")
    return "auto" if device == "auto" else [chosen]


class InputSize(NamedTuple):
    """Model input size in pixels."""

    height: int
    width: int


def resolve_providers(
    requested: str | Sequence[ProviderSpec], available: Sequence[str]
) -> tuple[list[ProviderSpec], list[str]]:
    """Choose the providers to ask onnxruntime for.

    Returns ``(providers, missing)``: the specs to pass to ``InferenceSession`` (CPU always
    appended as the last resort) and the requested names this onnxruntime build lacks.
    ``"auto"`` means TensorRT, then CUDA, then CPU, keeping those available.
    """
    if isinstance(requested, str):
        if requested != "auto":
            requested = [requested]
        else:
            return [p for p in AUTO_PROVIDER_ORDER if p in available], []
    chosen: list[ProviderSpec] = []
    missing: list[str] = []
    for spec in requested:
        name, options = (spec, None) if isinstance(spec, str) else (spec[0], spec[1])
        name = _SHORT_NAMES.get(name.lower(), name)
        if name not in available:
            missing.append(name)
            continue
        chosen.append(name if options is None else (name, dict(options)))
    if CPU not in [_provider_name(p) for p in chosen]:
        chosen.append(CPU)
    return chosen, missing


class Embedder:
    """Embeds person crops with an exported ReID ONNX model.

    Args:
        model_path: the ``.onnx`` file written by the project's exporter.
        providers: ``"auto"`` (TensorRT, then CUDA, then CPU, as available) or an explicit
            list of provider names / ``(name, options)`` pairs. CPU is always kept as the
            last fallback. A requested provider that is missing, or that the session
            silently drops, is reported in one WARNING log line.
        intra_op_threads: threads one inference may use. Default: every core this process
            may run on (:func:`usable_cores`). A server running R request
            threads concurrently should pass about ``cores // R`` so R x threads does not
            oversubscribe the CPU.
        inter_op_threads: threads running independent graph nodes in parallel; 1 (the
            graph is a chain, parallel nodes would only add contention).
        batch_size: images per ONNX Runtime call; larger inputs are split, so memory is
            bounded by this however many images are passed.
        max_pixels: decode limit passed to :func:`training.core.imageio.decode_image`.
        spin: let idle intra-op threads busy-wait for the next parallel section (ONNX
            Runtime's default: lowest latency when nothing else runs). A server whose other
            threads decode, search and parse HTTP on the same cores should pass False: the
            spinning takes their CPU (reid-serve measured 3-5 ms of CPU per request).
        report: log which providers run the model and on how many threads (one INFO line, and a
            WARNING for a requested provider that is missing); False for a second session of
            a model already reported.

    Raises:
        ReIDError: the file is missing, not ONNX, not one of our exports (metadata), or its
            graph disagrees with its metadata; the message names the file.

    ``session.run`` is thread-safe, so one Embedder may serve several request threads.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        providers: str | Sequence[ProviderSpec] = "auto",
        intra_op_threads: int | None = None,
        inter_op_threads: int = 1,
        batch_size: int = 32,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        spin: bool = True,
        report: bool = True,
    ) -> None:
        self._path = Path(model_path)
        for name, value in (
            ("inter_op_threads", inter_op_threads),
            ("batch_size", batch_size),
            ("max_pixels", max_pixels),
        ):
            _check_positive(name, value)
        if intra_op_threads is not None:
            _check_positive("intra_op_threads", intra_op_threads)
        self._batch_size = batch_size
        self._max_pixels = max_pixels
        intra = intra_op_threads if intra_op_threads is not None else usable_cores()

        _check_model_file(self._path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        # Errors only: our own log line reports the provider; ORT's warnings about node
        # placement would repeat it less clearly.
        options.log_severity_level = 3

        available = ort.get_available_providers()
        chosen, missing = resolve_providers(providers, available)
        # onnxruntime's pybind errors (InvalidProtobuf, Fail, ...) share no narrower base.
        try:
            self._session = ort.InferenceSession(str(self._path), options, providers=chosen)
        except Exception as exc:  # noqa: BLE001
            raise ReIDError(
                f"{self._path}: cannot load as an ONNX model ({_first_line(exc)}); expected a "
                "model written by the project's ONNX exporter"
            ) from None

        metadata = self._session.get_modelmeta().custom_metadata_map
        self._contract = ModelContract.from_metadata(metadata, source=str(self._path))
        self._check_graph()
        if report:
            self._log_providers(chosen, missing, available, intra, inter_op_threads)

    # ----------------------------------------------------------------- properties
    @property
    def contract(self) -> ModelContract:
        """The model's metadata contract, as read from the file."""
        return self._contract

    @property
    def embedding_dim(self) -> int:
        """D, the width of every vector :meth:`embed` returns."""
        return self._contract.embedding_dim

    @property
    def input_size(self) -> InputSize:
        """(height, width) images are resized to before the model."""
        return InputSize(self._contract.input_height, self._contract.input_width)

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses, preferred first."""
        return list(self._session.get_providers())

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the model weights (from the contract): ties an index to its model."""
        return self._contract.fingerprint

    @property
    def model_path(self) -> Path:
        return self._path

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def intra_op_threads(self) -> int:
        return self._session.get_session_options().intra_op_num_threads

    # ----------------------------------------------------------------- inference
    def preprocess(self, image: ImageSource, name: str | None = None) -> np.ndarray:
        """Decode and resize one image for this model: float32 (3, H, W) in [0, 1].

        Safe to call from worker threads or processes to parallelise decoding in bulk
        indexing; feed the stacked results to :meth:`embed_arrays`.

        Raises:
            training.core.imageio.ImageDecodeError: the image cannot be decoded (see its ``reason``).
        """
        c = self._contract
        return load_input(
            image, c.input_height, c.input_width, c.resize_interpolation,
            max_pixels=self._max_pixels, name=name,
        )

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Embed preprocessed images: (N, 3, H, W) float in [0, 1] -> (N, D) float32.

        The result is C-contiguous; N = 0 gives shape (0, D). Inputs larger than
        ``batch_size`` are run in chunks. Do not normalise with mean/std first: the model
        does that, and values outside [0, 1] are refused to catch double normalisation.

        Raises:
            ValueError: wrong shape, a non-float dtype, or values outside [0, 1].
        """
        return self.run(batch, outputs=(self._contract.embedding_output,))[
            self._contract.embedding_output
        ]

    def embed(self, images: Iterable[ImageSource]) -> np.ndarray:
        """Decode, resize and embed images: -> (N, D) float32, C-contiguous, in input order.

        ``images`` may be any iterable (paths, bytes, file objects, PIL images, (H, W, 3)
        uint8 arrays), including a generator; it is consumed ``batch_size`` at a time.

        Raises:
            training.core.imageio.ImageDecodeError: an image cannot be decoded; names the image.
        """
        chunks = list(self.iter_embed(images))
        if not chunks:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks, axis=0))

    def iter_embed(self, images: Iterable[ImageSource]) -> Iterator[np.ndarray]:
        """Like :meth:`embed`, but yields one (b, D) float32 array per batch of ≤ batch_size.

        Memory stays flat however long ``images`` is.
        """
        iterator = iter(images)
        while True:
            group = list(itertools.islice(iterator, self._batch_size))
            if not group:
                return
            yield self.embed_arrays(np.stack([self.preprocess(img) for img in group]))

    def run(
        self, batch: np.ndarray, outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the graph on (N, 3, H, W) inputs and return the named outputs.

        ``outputs`` defaults to every name in the contract's ``output_names`` (e.g.
        global_feat, local_feat, embedding); each value is a float32 C-contiguous array
        with N rows, concatenated over ``batch_size`` chunks. Used for parity checks
        against the training framework.

        Raises:
            ValueError: bad input (see :meth:`embed_arrays`) or an unknown output name.
        """
        names = list(outputs) if outputs is not None else list(self._contract.output_names)
        graph_outputs = {o.name for o in self._session.get_outputs()}
        unknown = [n for n in names if n not in graph_outputs]
        if unknown:
            raise ValueError(f"unknown output(s) {unknown}; the model has {sorted(graph_outputs)}")
        batch = self._check_batch(batch)
        n = batch.shape[0]
        if n == 0:
            return {name: self._empty_output(name) for name in names}
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for start in range(0, n, self._batch_size):
            chunk = batch[start:start + self._batch_size]
            results = self._session.run(names, {self._contract.input_name: chunk})
            for name, value in zip(names, results):
                parts[name].append(value)
        out = {
            name: np.ascontiguousarray(np.concatenate(values, axis=0), dtype=np.float32)
            for name, values in parts.items()
        }
        embedding = out.get(self._contract.embedding_output)
        if embedding is not None and embedding.shape != (n, self.embedding_dim):
            # The graph's output width was symbolic at load time; catch a mismatch here.
            raise ReIDError(
                f"{self._path}: output {self._contract.embedding_output!r} has shape "
                f"{embedding.shape}, but the metadata promises (N, {self.embedding_dim})"
            )
        return out

    def __repr__(self) -> str:
        h, w = self.input_size
        return (
            f"Embedder({str(self._path)!r}, input={h}x{w}, dim={self.embedding_dim}, "
            f"providers={self.providers}, fingerprint={self.fingerprint[:12]})"
        )

    # ----------------------------------------------------------------- internals
    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        if not isinstance(batch, np.ndarray):
            raise ValueError(f"batch must be a numpy array, got {type(batch).__name__}")
        h, w = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, h, w):
            raise ValueError(f"batch must have shape (N, 3, {h}, {w}), got {batch.shape}")
        if not np.issubdtype(batch.dtype, np.floating):
            raise ValueError(
                f"batch must hold floats in [0, 1], got dtype {batch.dtype} (divide uint8 "
                "pixels by 255, or use embed() on the images)"
            )
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.size:
            lo, hi = float(batch.min()), float(batch.max())
            if not (lo >= 0.0 and hi <= 1.0):
                raise ValueError(
                    f"batch values must be in [0, 1], got min {lo:.4g} max {hi:.4g}; the model "
                    "normalises with ImageNet mean/std itself, so pass raw pixels / 255"
                )
        return batch

    def _empty_output(self, name: str) -> np.ndarray:
        if name == self._contract.embedding_output:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        shape = next(o.shape for o in self._session.get_outputs() if o.name == name)
        tail = [d if isinstance(d, int) else 0 for d in shape[1:]]
        return np.zeros((0, *tail), dtype=np.float32)

    def _check_graph(self) -> None:
        c, path = self._contract, self._path
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != [c.input_name]:
            raise ReIDError(
                f"{path}: graph inputs are {[i.name for i in inputs]}, but the metadata "
                f"promises one input {c.input_name!r}"
            )
        node = inputs[0]
        if node.type != "tensor(float)":
            raise ReIDError(
                f"{path}: input {c.input_name!r} is {node.type}, expected tensor(float)"
            )
        shape = list(node.shape)
        expected = ["N", 3, c.input_height, c.input_width]
        if len(shape) != 4 or shape[1:] != expected[1:]:
            raise ReIDError(
                f"{path}: input {c.input_name!r} has shape {shape}, but the metadata promises "
                f"{expected} (N, RGB, {metadata_key('input_height')}, {metadata_key('input_width')})"
            )
        if isinstance(shape[0], int):
            raise ReIDError(
                f"{path}: input {c.input_name!r} has a fixed batch size {shape[0]}; re-export "
                "with a dynamic batch axis"
            )
        outputs = {o.name: o for o in self._session.get_outputs()}
        missing = [n for n in c.output_names if n not in outputs]
        if missing:
            raise ReIDError(
                f"{path}: graph has no output(s) {missing} named in {metadata_key('output_names')}; "
                f"outputs are {sorted(outputs)}"
            )
        emb = outputs[c.embedding_output]
        if emb.type != "tensor(float)":
            raise ReIDError(
                f"{path}: output {c.embedding_output!r} is {emb.type}, expected tensor(float)"
            )
        emb_shape = list(emb.shape)
        width_known = len(emb_shape) == 2 and isinstance(emb_shape[1], int)
        if len(emb_shape) != 2 or (width_known and emb_shape[1] != c.embedding_dim):
            raise ReIDError(
                f"{path}: output {c.embedding_output!r} has shape {emb_shape}, but "
                f"{metadata_key('embedding_dim')}={c.embedding_dim} promises [N, {c.embedding_dim}]"
            )

    def _log_providers(
        self,
        chosen: list[ProviderSpec],
        missing: list[str],
        available: Sequence[str],
        intra: int,
        inter: int,
    ) -> None:
        got = self.providers
        active = got[0] if got else "none"
        requested_names = [_provider_name(p) for p in chosen]
        dropped = [p for p in requested_names if p not in got]
        where = (
            f"{self._path}: running on {active} "
            f"(intra_op_threads={intra}, inter_op_threads={inter})"
        )
        if missing:
            log.warning(
                "%s; requested %s not available in this onnxruntime build (available: %s)",
                where, ", ".join(missing), ", ".join(available),
            )
        elif dropped:
            log.warning(
                "%s; requested %s could not be initialised and the session fell back "
                "(check the CUDA/cuDNN/TensorRT libraries match this onnxruntime build)",
                where, ", ".join(dropped),
            )
        else:
            log.info("%s", where)


def _provider_name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ReIDError(f"{name} must be a positive integer, got {value!r}")


def _check_model_file(path: Path) -> None:
    if not path.exists():
        raise ReIDError(f"{path}: model file not found; expected an exported .onnx file")
    if not path.is_file():
        raise ReIDError(f"{path}: not a file; expected an exported .onnx file")
    if path.stat().st_size == 0:
        raise ReIDError(f"{path}: model file is empty (0 bytes); re-run the export")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
