"""A tiny contract-satisfying ONNX model, built with onnx.helper (no torch), for tests.

The graph normalises with ImageNet mean/std inside, like a real export, and has the three
contract outputs: ``global_feat`` (mean over pixels -> matmul), ``local_feat`` (row means ->
matmul) and ``embedding`` (both -> matmul). :func:`numpy_oracle` evaluates the same graph in
numpy, so tests can check the runtime (and everything built on it) against exact values.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.contract import ModelContract

HEIGHT, WIDTH = 8, 4
GLOBAL_DIM, LOCAL_DIM, EMBED_DIM = 6, 5, 4
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)


class TinyWeights:
    """Weights of the tiny stand-in model, shared by the ONNX graph and the numpy oracle.

    Different seeds give different weights and so different fingerprints.
    """

    def __init__(self, seed: int = 0, embed_dim: int = EMBED_DIM, height: int = HEIGHT,
                 width: int = WIDTH) -> None:
        rng = np.random.default_rng(seed)
        self.height, self.width = height, width
        self.w_global = rng.standard_normal((3, GLOBAL_DIM)).astype(np.float32)
        self.w_local = rng.standard_normal((3 * height, LOCAL_DIM)).astype(np.float32)
        self.w_embed = rng.standard_normal((GLOBAL_DIM + LOCAL_DIM, embed_dim)).astype(np.float32)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for w in (self.w_global, self.w_local, self.w_embed):
            digest.update(w.tobytes())
        return digest.hexdigest()


def numpy_oracle(images: np.ndarray, w: TinyWeights) -> dict[str, np.ndarray]:
    """The tiny graph in numpy: (N, 3, H, W) in [0, 1] -> the three named outputs."""
    x = (images.astype(np.float64) - MEAN) / STD  # normalisation lives in the graph
    global_feat = x.mean(axis=(2, 3)) @ w.w_global  # (N, 6)
    local_feat = x.mean(axis=3).reshape(len(x), -1) @ w.w_local  # (N, 5) from H rows
    embedding = np.concatenate([global_feat, local_feat], axis=1) @ w.w_embed  # (N, D)
    return {"global_feat": global_feat, "local_feat": local_feat, "embedding": embedding}


def make_contract(w: TinyWeights, **overrides: object) -> ModelContract:
    values: dict[str, object] = dict(
        input_height=w.height,
        input_width=w.width,
        embedding_dim=w.w_embed.shape[1],
        embedding_kind="global+local",
        fingerprint=w.fingerprint(),
        producer_version="test",
        train_config={"arch": "tiny"},
    )
    values.update(overrides)
    return ModelContract(**values)  # type: ignore[arg-type]


def write_model(
    path: Path,
    w: TinyWeights,
    metadata: dict[str, str] | None,
    *,
    batch_dim: str | int = "N",
    input_name: str = "images",
) -> Path:
    """Write the tiny graph as ONNX (opset 17) with ``metadata`` as its metadata_props."""

    def tensor(name: str, shape: list[str | int]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    const = [
        numpy_helper.from_array(MEAN, "mean"),
        numpy_helper.from_array(STD, "std"),
        numpy_helper.from_array(w.w_global, "w_global"),
        numpy_helper.from_array(w.w_local, "w_local"),
        numpy_helper.from_array(w.w_embed, "w_embed"),
    ]
    nodes = [
        helper.make_node("Sub", [input_name, "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["x"]),
        helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w_global"], ["global_feat"]),
        helper.make_node("ReduceMean", ["x"], ["rows"], axes=[3], keepdims=0),
        helper.make_node("Flatten", ["rows"], ["rows_flat"], axis=1),
        helper.make_node("MatMul", ["rows_flat", "w_local"], ["local_feat"]),
        helper.make_node("Concat", ["global_feat", "local_feat"], ["both"], axis=1),
        helper.make_node("MatMul", ["both", "w_embed"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_reid",
        [tensor(input_name, [batch_dim, 3, w.height, w.width])],
        [
            tensor("global_feat", [batch_dim, GLOBAL_DIM]),
            tensor("local_feat", [batch_dim, LOCAL_DIM]),
            tensor("embedding", [batch_dim, w.w_embed.shape[1]]),
        ],
        initializer=const,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_tiny_model(path: Path, seed: int = 0, embed_dim: int = EMBED_DIM, height: int = HEIGHT,
                     width: int = WIDTH) -> Path:
    """A ready-to-use tiny model file with a valid contract; ``seed`` picks the weights."""
    w = TinyWeights(seed, embed_dim, height, width)
    return write_model(path, w, make_contract(w).to_metadata())
