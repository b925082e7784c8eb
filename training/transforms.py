"""Image transforms of the training recipe (METHOD.md, "Training recipe").

Every training-side image read goes through :func:`read_rgb`, which is the serving decoder
:func:`training.core.imageio.decode_image` (EXIF orientation, 16-bit rescale, alpha onto
white, palette and CMYK to RGB), so a file gives the same pixels in training, ``reid-eval``,
``reid-index`` and the server.

Images leave these transforms as float32 RGB tensors in [0, 1], shape (3, H, W): the model
normalises inside its graph, so the exported ONNX file and the runtime never normalise twice.
The test-time transform *is* the runtime's resize (:func:`training.core.imageio.resize_to_input`),
so accuracy measured in training is the accuracy served.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from training.core.errors import ReIDError
from training.core.imageio import ImageDecodeError, decode_image, resize_to_input

# Aspect ratio of the random crop in the paper is height/width in [2, 3]; torchvision's
# RandomResizedCrop takes width/height.
_CROP_SCALE = (0.64, 1.0)
_CROP_RATIO = (1.0 / 3.0, 1.0 / 2.0)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> float32 tensor (3, H, W) in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def eval_transform(height: int, width: int) -> Callable[[Image.Image], torch.Tensor]:
    """RGB image -> float32 (3, height, width) in [0, 1]: the runtime's bilinear resize, as a tensor.

    A ``partial`` of a module-level function, so DataLoader workers can pickle it.
    """
    return functools.partial(_runtime_resize, height=height, width=width)


def _runtime_resize(image: Image.Image, *, height: int, width: int) -> torch.Tensor:
    return torch.from_numpy(resize_to_input(image, height, width, "bilinear"))


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


def read_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """:func:`training.core.imageio.decode_image` for DataLoader workers: an 8-bit RGB image.

    A bad file raises a plain :class:`ReIDError` naming it: the loader re-creates a worker's
    exception in the main process from its message alone, which ``ImageDecodeError`` (it needs
    a reason) does not survive.
    """
    try:
        return decode_image(path)
    except ImageDecodeError as exc:
        raise ReIDError(str(exc)) from None
