"""Initial weights for the ResNet trunk: ImageNet from torchvision's cache, a file, or none.

No network is assumed: ``"imagenet"`` uses the file torchvision would have downloaded, if it
is already in the cache, and only then tries the download.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from training.checkpoint import read_torch_payload
from training.core.errors import ReIDError

log = logging.getLogger(__name__)

_IMAGENET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
}

# Blocks per stage and block type identify the torchvision ResNet variant.
_ARCHS = {
    ((2, 2, 2, 2), BasicBlock): "resnet18",
    ((3, 4, 6, 3), BasicBlock): "resnet34",
    ((3, 4, 6, 3), Bottleneck): "resnet50",
}

_FIX_HINT = (
    "pass --pretrained PATH to a torchvision ResNet state dict, or --pretrained none to train "
    "the backbone from random weights (expect much lower accuracy)"
)


def imagenet_checkpoint_path(arch: str) -> Path:
    """Where torchvision caches the IMAGENET1K_V1 weights of ``arch``, e.g.
    ``$TORCH_HOME/hub/checkpoints/resnet50-0676ba61.pth``."""
    if arch not in _IMAGENET_WEIGHTS:
        raise ReIDError(f"no ImageNet weights known for {arch!r}; expected one of {sorted(_IMAGENET_WEIGHTS)}")
    filename = _IMAGENET_WEIGHTS[arch].url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_backbone_weights(model_or_backbone: nn.Module, spec: str | Path) -> None:
    """Initialise the ResNet trunk in place.

    ``model_or_backbone`` is a :class:`training.model.ReIDModel` (its ``backbone`` is used),
    the trunk itself, or a torchvision ResNet. ``spec`` is ``"imagenet"``, ``"none"`` or a
    path to a torchvision ResNet state dict (optionally wrapped as ``{"state_dict": ...}``).
    ``fc.*`` keys are ignored; any other missing or unexpected key or shape mismatch raises
    :class:`ReIDError` naming the file.
    """
    backbone = getattr(model_or_backbone, "backbone", model_or_backbone)
    arch = _infer_arch(backbone)
    spec_str = str(spec)
    if spec_str == "none":
        log.info("backbone %s starts from random weights (--pretrained none)", arch)
        return
    if spec_str == "imagenet":
        state_dict, source = _imagenet_state_dict(arch)
    else:
        path = Path(spec_str).expanduser()
        state_dict, source = _read_state_dict(path), str(path)
    _load_checked(backbone, state_dict, source)
    log.info("backbone %s initialised from %s", arch, source)


def _infer_arch(backbone: nn.Module) -> str:
    try:
        layers = [getattr(backbone, f"layer{i}") for i in range(1, 5)]
    except AttributeError:
        raise ReIDError(
            f"cannot load ResNet weights into {type(backbone).__name__}: it has no layer1..layer4"
        ) from None
    key = (tuple(len(layer) for layer in layers), type(layers[0][0]))
    if key not in _ARCHS:
        raise ReIDError(f"unrecognised ResNet layout {key[0]} of {key[1].__name__}; expected resnet18/34/50")
    return _ARCHS[key]


def _imagenet_state_dict(arch: str) -> tuple[dict[str, Tensor], str]:
    path = imagenet_checkpoint_path(arch)
    if path.is_file():
        return _read_state_dict(path), str(path)
    url = _IMAGENET_WEIGHTS[arch].url
    log.info("ImageNet weights for %s not found at %s; trying to download %s", arch, path, url)
    try:
        state_dict = torch.hub.load_state_dict_from_url(
            url, model_dir=str(path.parent), progress=False, check_hash=True, weights_only=True
        )
    except Exception as exc:  # no network, proxy, hash mismatch: all end the same way for the user
        raise ReIDError(
            f"ImageNet weights for {arch} are not in torchvision's cache (looked for {path}) and the "
            f"download from {url} failed ({type(exc).__name__}: {exc}). Copy that file to {path} "
            f"(or set TORCH_HOME), or {_FIX_HINT}"
        ) from None
    return state_dict, url


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ReIDError(f"pretrained weights file {path} does not exist; {_FIX_HINT}")
    try:
        obj = read_torch_payload(path, what="torch state dict")
    except ReIDError as exc:  # torch's own message can run to several lines; this one is one
        raise ReIDError(f"{exc}; {_FIX_HINT}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ReIDError(f"{path} does not hold a state dict (a mapping of names to tensors); {_FIX_HINT}")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _load_checked(backbone: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    expected = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    given = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    # Old checkpoints predate BatchNorm's counter; BatchNorm fills it in itself.
    missing = sorted(k for k in expected if k not in given and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in given if k not in expected)
    mismatched = [
        f"{k}: file {tuple(given[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:3]})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (first: {mismatched[:3]})")
    if problems:
        raise ReIDError(
            f"{source} does not match the {_infer_arch(backbone)} backbone: {'; '.join(problems)}. "
            f"Expected a torchvision ResNet state dict of the same depth; {_FIX_HINT}"
        )
    backbone.load_state_dict(given, strict=False)
