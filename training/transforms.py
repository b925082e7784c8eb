"""Image transforms of the training recipe (METHOD.md, "Training recipe").

Images leave these transforms as float32 RGB tensors in [0, 1], shape (3, H, W): the model
normalises inside its graph, so the exported ONNX file and the runtime never normalise twice.
The test-time path is "decode, convert to RGB, bilinear resize", the same steps the serving
runtime applies, so accuracy measured in training is the accuracy served.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

# Aspect ratio of the random crop in the paper is height/width in [2, 3]; torchvision's
# RandomResizedCrop takes width/height.
_CROP_SCALE = (0.64, 1.0)
_CROP_RATIO = (1.0 / 3.0, 1.0 / 2.0)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> float32 tensor (3, H, W) in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def eval_transform(height: int, width: int) -> T.Compose:
    """Resize only (bilinear), as at test time in the paper and in the serving runtime."""
    return T.Compose([T.Resize((height, width), interpolation=T.InterpolationMode.BILINEAR), to_tensor])


def train_transform(height: int, width: int, flip_p: float = 0.5) -> T.Compose:
    """Resize, random resized crop (area 0.64-1.0, height/width 2-3) back to size, h-flip."""
    return T.Compose(
        [
            T.Resize((height, width), interpolation=T.InterpolationMode.BILINEAR),
            T.RandomResizedCrop((height, width), scale=_CROP_SCALE, ratio=_CROP_RATIO),
            T.RandomHorizontalFlip(p=flip_p),
            to_tensor,
        ]
    )


def read_rgb(path: str | Path) -> Image.Image:
    """Open an image file as RGB, raising a clear error that names the file."""
    from training.core.errors import ReIDError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ReIDError(f"cannot read image {path}: {exc}") from exc
