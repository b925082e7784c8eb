"""Search features of a trained model for a list of image files, and what they retrieve.

Preprocessing is the serving runtime's own: :func:`training.core.imageio.decode_image` (through
:func:`training.transforms.read_rgb`), then
:func:`training.core.imageio.resize_to_input` (bilinear, divide by 255) through
:func:`training.transforms.eval_transform`; mean/std normalisation happens inside the model.
Features from here and from an exported model therefore see the same pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.core.datasets import ReIDDataset
from training.core.evaluation import EvalResult
from training.core.rerank import ExpansionParams, RerankParams, evaluate_reranked
from training.model import ReIDModel, embedding_dim, search_embedding
from training.transforms import eval_transform, read_rgb

__all__ = ["extract_features", "evaluate_model", "metrics_record"]


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str | os.PathLike[str]], height: int, width: int) -> None:
        self.paths = list(paths)
        self.transform = eval_transform(height, width)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(read_rgb(self.paths[index]))


def extract_features(
    model: ReIDModel,
    paths: Sequence[str | os.PathLike[str]],
    *,
    embedding: str = "global",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """(len(paths), D) float32 search embeddings, rows in the order of ``paths``.

    ``embedding`` is a :func:`training.model.search_embedding` kind: ``"global"`` (POOL-5,
    D = 2048 for resnet50) or ``"global+local"`` (unit norm, D = 2048 + 1536). The model runs in
    eval mode on ``device`` in float32 and is returned to its previous train/eval mode after.
    Raises :class:`training.core.errors.ReIDError` for an unreadable image or an embedding kind the
    model cannot produce.
    """
    config = model.config
    dim = embedding_dim(config, embedding)
    if not paths:
        return np.zeros((0, dim), dtype=np.float32)
    loader = DataLoader(_ImageFiles(paths, config.height, config.width), batch_size=batch_size, num_workers=workers)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for images in tqdm(loader, desc="features", unit="batch", disable=not progress):
                outputs = model(images.to(device))
                chunks.append(search_embedding(outputs, embedding).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks)


def evaluate_model(
    model: ReIDModel,
    dataset: ReIDDataset,
    *,
    embedding: str = "global",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = False,
    rerank: RerankParams | None = None,
    aqe: ExpansionParams | None = None,
) -> EvalResult:
    """Market-1501 protocol metrics of ``model`` on ``dataset``'s query/gallery split, optionally
    after alpha query expansion and k-reciprocal re-ranking
    (:func:`training.core.rerank.evaluate_reranked`)."""
    kwargs = dict(embedding=embedding, batch_size=batch_size, device=device, workers=workers, progress=progress)
    qf = extract_features(model, [s.path for s in dataset.query], **kwargs)
    gf = extract_features(model, [s.path for s in dataset.gallery], **kwargs)
    return evaluate_reranked(
        qf, gf,
        np.array([s.pid for s in dataset.query]), np.array([s.pid for s in dataset.gallery]),
        np.array([s.camid for s in dataset.query]), np.array([s.camid for s in dataset.gallery]),
        rerank=rerank, aqe=aqe,
    )


def metrics_record(result: EvalResult) -> dict[str, float | int]:
    """The headline numbers as a JSON-able dict: fractions in [0, 1] and query counts."""
    return {
        "mAP": result.mAP, "rank1": float(result.cmc[0]), "rank5": float(result.cmc[4]),
        "rank10": float(result.cmc[9]), "mINP": result.mINP,
        "num_queries": result.num_queries, "num_valid_queries": result.num_valid_queries,
    }
