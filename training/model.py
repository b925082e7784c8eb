"""The dual-branch ReID model: a ResNet trunk shared up to POOL-5, a global head and a BiLSTM
local head over horizontal stripes (head -> feet).

The model takes float32 RGB in [0, 1], shape (B, 3, H, W), and normalises inside (registered
buffers), so an exported graph carries its own normalisation. Every call, in train and eval
mode alike, returns one :class:`ReIDOutputs`. See docs/model.md for shapes and choices.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from training.core.errors import ReIDError

BACKBONES = ("resnet18", "resnet34", "resnet50")
POOLINGS = ("avg+max", "avg", "max")
EMBEDDING_KINDS = ("global", "global+local", "local")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Channels of layer4 for each supported trunk.
_BACKBONE_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model; stored in checkpoints via :meth:`to_dict`."""

    num_classes: int  # source identities (classifier width); no default: it comes from the data
    backbone: str = "resnet50"
    last_stride: int = 2  # stride of layer4; 2 gives an 8x4 map at 256x128 (HHL), 1 gives 16x8
    height: int = 256
    width: int = 128
    embed_dim: int = 128  # triplet embedding
    fc_dim: int = 2048  # "FC-2048" of both heads
    lstm_hidden: int = 256  # per direction
    num_stripes: int = 3
    dropout: float = 0.5
    pooling: str = "avg+max"
    use_local: bool = True
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ReIDError(f"backbone {self.backbone!r} is not supported; expected one of {BACKBONES}")
        if self.last_stride not in (1, 2):
            raise ReIDError(f"last_stride must be 1 or 2, got {self.last_stride}")
        if self.pooling not in POOLINGS:
            raise ReIDError(f"pooling {self.pooling!r} is not supported; expected one of {POOLINGS}")
        for name in ("num_classes", "embed_dim", "fc_dim", "lstm_hidden", "num_stripes"):
            if int(getattr(self, name)) < 1:
                raise ReIDError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.height < 32 or self.width < 32:
            raise ReIDError(f"input size must be at least 32x32, got {self.height}x{self.width}")
        if self.use_local and self.feature_map_size[0] < self.num_stripes:
            raise ReIDError(
                f"{self.num_stripes} stripes need a feature map at least {self.num_stripes} rows high; "
                f"height {self.height} with last_stride {self.last_stride} gives "
                f"{self.feature_map_size[0]} rows"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ReIDError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("pixel_mean", "pixel_std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ReIDError(f"{name} needs 3 values (R, G, B), got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if min(self.pixel_std) <= 0:
            raise ReIDError(f"pixel_std must be positive, got {self.pixel_std!r}")

    @property
    def feature_channels(self) -> int:
        """C of the POOL-5 feature: 2048 for resnet50, 512 for resnet18/34."""
        return _BACKBONE_CHANNELS[self.backbone]

    @property
    def feature_map_size(self) -> tuple[int, int]:
        """(h, w) of the layer4 map for the configured input size."""
        stride = 16 * self.last_stride
        return math.ceil(self.height / stride), math.ceil(self.width / stride)

    @property
    def local_dim(self) -> int:
        """Width of ``local_feat``: 2 * lstm_hidden * num_stripes, or 0 without the local branch."""
        return 2 * self.lstm_hidden * self.num_stripes if self.use_local else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ReIDError(f"unknown model config keys {unknown}; expected a subset of {sorted(known)}")
        if "num_classes" not in data:
            raise ReIDError("model config has no num_classes (the number of source identities)")
        values = dict(data)
        for name in ("pixel_mean", "pixel_std"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


class ReIDOutputs(NamedTuple):
    """What every forward returns (train and eval alike).

    Without the local branch the three ``local_*`` fields are empty (B, 0) tensors.
    """

    global_feat: Tensor  # (B, C) POOL-5, the paper's test feature
    local_feat: Tensor  # (B, 2 * lstm_hidden * num_stripes) flattened BiLSTM outputs
    global_embed: Tensor  # (B, embed_dim) triplet embedding
    local_embed: Tensor  # (B, embed_dim)
    global_logits: Tensor  # (B, num_classes) source identities
    local_logits: Tensor  # (B, num_classes)


class HeadOutputs(NamedTuple):
    embed: Tensor  # (B, embed_dim)
    logits: Tensor  # (B, num_classes)


class StripePool(nn.Module):
    """Pool a feature map into ``num_stripes`` horizontal stripes (head -> feet).

    Stripe i covers rows [floor(i*h/S), ceil((i+1)*h/S)), the same bins as
    ``adaptive_*_pool2d(x, (S, 1))``; so with 8 rows and 3 stripes the bins are rows 0-2, 2-5
    and 5-7 (neighbours share a row). Written with slices and reductions rather than adaptive
    pooling because ONNX has no adaptive max pooling and non-dividing bins do not export.
    ``mode`` is "avg", "max" or their sum "avg+max".
    """

    def __init__(self, num_stripes: int, mode: str = "avg+max") -> None:
        super().__init__()
        if mode not in POOLINGS:
            raise ReIDError(f"pooling {mode!r} is not supported; expected one of {POOLINGS}")
        self.num_stripes = num_stripes
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, S, C)."""
        height = x.shape[2]  # static for a fixed input size, so the slices are constants
        stripes = []
        for i in range(self.num_stripes):
            start = (i * height) // self.num_stripes
            end = -((-(i + 1) * height) // self.num_stripes)  # ceil division
            rows = x[:, :, start:end]  # (B, C, rows, w)
            if self.mode == "avg":
                pooled = rows.mean(dim=(2, 3))
            elif self.mode == "max":
                pooled = rows.amax(dim=(2, 3))
            else:
                pooled = rows.mean(dim=(2, 3)) + rows.amax(dim=(2, 3))
            stripes.append(pooled)  # (B, C)
        return torch.stack(stripes, dim=1)


class EmbeddingHead(nn.Module):
    """FC-fc_dim + BN + ReLU, then a linear triplet embedding and dropout -> FC-#ID.

    Both outputs read the same FC-fc_dim activation: the embedding directly, the classifier
    through dropout.
    """

    def __init__(self, in_dim: int, fc_dim: int, embed_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, fc_dim, bias=False)  # BN right after makes a bias redundant
        self.bn = nn.BatchNorm1d(fc_dim)
        # No bias: triplet distances are blind to a shared shift, so it would never learn.
        self.embed = nn.Linear(fc_dim, embed_dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(fc_dim, num_classes)
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out")
        # The embedding keeps nn.Linear's default init: with a BN'd input its outputs have
        # norms of a few units, the scale at which a 0.5 triplet margin is meaningful.
        # Small classifier weights keep early logits near uniform (common ReID practice).
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> HeadOutputs:
        """(B, in_dim) -> embed (B, embed_dim), logits (B, num_classes)."""
        hidden = F.relu(self.bn(self.fc(x)))  # (B, fc_dim)
        return HeadOutputs(self.embed(hidden), self.classifier(self.dropout(hidden)))


def build_backbone(name: str, last_stride: int = 2) -> nn.Sequential:
    """A torchvision ResNet without avgpool and fc: (B, 3, H, W) -> (B, C, H/(16*last_stride), W/(16*last_stride)).

    Submodule names match torchvision's (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so a
    torchvision state dict without ``fc.*`` loads into it directly.
    """
    if name not in BACKBONES:
        raise ReIDError(f"backbone {name!r} is not supported; expected one of {BACKBONES}")
    resnet = getattr(torchvision.models, name)(weights=None)
    if last_stride == 1:
        # The first block of layer4 carries the stride, in its 3x3 conv and in its shortcut.
        for module in resnet.layer4[0].modules():
            if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                module.stride = (1, 1)
    elif last_stride != 2:
        raise ReIDError(f"last_stride must be 1 or 2, got {last_stride}")
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict((n, getattr(resnet, n)) for n in names))


class ReIDModel(nn.Module):
    """Dual-branch ReID network (global POOL-5 head + BiLSTM over stripes)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.feature_channels
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1))
        self.backbone = build_backbone(config.backbone, config.last_stride)
        self.global_pool = StripePool(1, config.pooling)
        self.global_head = EmbeddingHead(
            channels, config.fc_dim, config.embed_dim, config.num_classes, config.dropout
        )
        if config.use_local:
            self.stripe_pool = StripePool(config.num_stripes, config.pooling)
            self.lstm = nn.LSTM(
                input_size=channels, hidden_size=config.lstm_hidden, batch_first=True, bidirectional=True
            )
            self.local_head = EmbeddingHead(
                config.local_dim, config.fc_dim, config.embed_dim, config.num_classes, config.dropout
            )

    def forward(self, images: Tensor) -> ReIDOutputs:
        """images: float32 RGB in [0, 1], (B, 3, H, W) -> :class:`ReIDOutputs`."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = (images - self.pixel_mean) / self.pixel_std
        fmap = self.backbone(x)  # (B, C, h, w)
        global_feat = self.global_pool(fmap).flatten(1)  # (B, C) POOL-5
        global_out = self.global_head(global_feat)
        if not self.config.use_local:
            empty = global_feat.new_zeros((global_feat.shape[0], 0))  # (B, 0)
            return ReIDOutputs(global_feat, empty, global_out.embed, empty, global_out.logits, empty)
        stripes = self.stripe_pool(fmap)  # (B, S, C) head->feet stripes
        seq, _ = self.lstm(stripes)  # (B, S, 2 * hidden)
        local_feat = seq.flatten(1)  # (B, S * 2 * hidden)
        local_out = self.local_head(local_feat)
        return ReIDOutputs(
            global_feat, local_feat, global_out.embed, local_out.embed, global_out.logits, local_out.logits
        )


def search_embedding(outputs: ReIDOutputs, kind: str = "global") -> Tensor:
    """The retrieval vector for each image, compared with Euclidean distance.

    - ``"global"``: raw POOL-5 ``global_feat`` (B, C), the paper's test feature.
    - ``"global+local"``: L2-normalised ``global_feat`` and L2-normalised ``local_feat``
      concatenated and scaled by 1/sqrt(2), so each part weighs the same and the result has
      unit norm: (B, C + local_dim).
    - ``"local"``: L2-normalised ``local_feat`` (B, local_dim).
    """
    if kind == "global":
        return outputs.global_feat
    if kind not in EMBEDDING_KINDS:
        raise ReIDError(f"embedding kind {kind!r} is not supported; expected one of {EMBEDDING_KINDS}")
    if outputs.local_feat.shape[1] == 0:
        raise ReIDError(f"embedding kind {kind!r} needs the local branch, but the model has use_local=False")
    local = F.normalize(outputs.local_feat, dim=1)
    if kind == "local":
        return local
    glob = F.normalize(outputs.global_feat, dim=1)
    return torch.cat([glob, local], dim=1) * (1.0 / math.sqrt(2.0))


def embedding_dim(config: ModelConfig, kind: str = "global") -> int:
    """Width of :func:`search_embedding` for a model built from ``config``."""
    if kind not in EMBEDDING_KINDS:
        raise ReIDError(f"embedding kind {kind!r} is not supported; expected one of {EMBEDDING_KINDS}")
    if kind != "global" and not config.use_local:
        raise ReIDError(f"embedding kind {kind!r} needs the local branch, but the config has use_local=False")
    return {
        "global": config.feature_channels,
        "local": config.local_dim,
        "global+local": config.feature_channels + config.local_dim,
    }[kind]
