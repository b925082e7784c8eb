"""Target-domain images for the StarGAN: camera labels, [-1, 1] tensors, the flip augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from training.core.datasets import UnlabelledSample
from training.core.errors import ReIDError
from training.transforms import read_rgb, to_tensor


def count_cameras(samples: Sequence[UnlabelledSample]) -> int:
    """C = 1 + the largest camid, after checking there are >= 2 cameras and each has images.

    Every camera is a StarGAN domain indexed by its camid, so a camera without images would be
    a domain the classifier never sees; ReIDError names it.
    """
    if not samples:
        raise ReIDError("no training images: the StarGAN needs the target domain's training images")
    seen = {s.camid for s in samples}
    num_cameras = 1 + max(seen)
    if len(seen) < 2:
        raise ReIDError(
            f"all {len(samples)} training images come from camera c{num_cameras}: camera-style "
            "transfer needs images from at least 2 cameras"
        )
    missing = [f"c{c + 1}" for c in range(num_cameras) if c not in seen]
    if missing:
        raise ReIDError(
            f"camera{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'have' if len(missing) > 1 else 'has'} no training images (cameras must be numbered "
            f"c1..c{num_cameras} without gaps; each camera is one StarGAN domain)"
        )
    return num_cameras


def to_gan_range(image: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1] (the generator's tanh range)."""
    return image * 2.0 - 1.0


def to_uint8(images: Tensor) -> Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8 on the CPU."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


class CameraImage(NamedTuple):
    image: Tensor  # (3, H, W) float32 in [-1, 1]
    camid: int  # 0-based
    index: int  # position in the sample list
    original_height: int
    original_width: int


class CameraImages(Dataset[CameraImage]):
    """Images resized (bilinear) to ``size`` = (H, W), in [-1, 1]; ``flip`` mirrors half of
    them at random (the only augmentation: a crop would move the person, whose geometry the
    translation must keep)."""

    def __init__(self, samples: Sequence[UnlabelledSample], size: tuple[int, int], *, flip: bool) -> None:
        self.samples = list(samples)
        self.size = size
        self.flip = flip

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> CameraImage:
        sample = self.samples[index]
        picture = read_rgb(sample.path)
        resized = picture.resize((self.size[1], self.size[0]), resample=Image.Resampling.BILINEAR)
        image = to_gan_range(to_tensor(resized))
        if self.flip and torch.rand(()) < 0.5:
            image = TF.hflip(image)
        return CameraImage(image, sample.camid, index, picture.height, picture.width)
