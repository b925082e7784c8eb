"""StarGAN generator and discriminator for camera-style transfer (Choi et al. 2018, "StarGAN:
Unified Generative Adversarial Networks for Multi-Domain Image-to-Image Translation").

Each camera of the target domain is one StarGAN domain. The generator sees the image with the
target camera's one-hot tiled onto it as extra channels; the discriminator is a PatchGAN whose
trunk also feeds an auxiliary camera classifier. Images are (B, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from training.core.errors import ReIDError


@dataclass(frozen=True)
class StarGANConfig:
    """Shapes of the two networks. Defaults are StarGAN's, at the ReID crop size 256x128.

    ``num_cameras``: C, one domain per camera (camid 0..C-1 indexes the one-hot).
    ``g_width`` / ``d_width``: channels of the first convolution (StarGAN: 64 both).
    ``g_res_blocks``: residual blocks at 1/4 resolution (StarGAN: 6).
    ``d_downsamples``: stride-2 convolutions of the discriminator (StarGAN: 6); the image
    height and width must be divisible by 2**d_downsamples.
    """

    num_cameras: int
    image_size: tuple[int, int] = (256, 128)
    g_width: int = 64
    g_res_blocks: int = 6
    d_width: int = 64
    d_downsamples: int = 6

    def validate(self) -> None:
        """Raise ReIDError naming the first value the networks cannot be built with."""
        height, width = self.image_size
        if self.num_cameras < 2:
            raise ReIDError(f"a camera-style StarGAN needs at least 2 cameras, got {self.num_cameras}")
        if self.g_width < 1 or self.d_width < 1 or self.g_res_blocks < 0 or self.d_downsamples < 1:
            raise ReIDError(
                "widths must be >= 1, residual blocks >= 0 and discriminator downsamples >= 1, got "
                f"g_width={self.g_width}, d_width={self.d_width}, g_res_blocks={self.g_res_blocks}, "
                f"d_downsamples={self.d_downsamples}"
            )
        # The generator halves the size twice, the discriminator d_downsamples times.
        step = 2 ** max(2, self.d_downsamples)
        if height % step or width % step:
            raise ReIDError(
                f"image size {height}x{width} must be a multiple of {step} in both sides "
                f"(the discriminator halves it {self.d_downsamples} times, the generator twice)"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StarGANConfig:
        return cls(**{**data, "image_size": tuple(int(v) for v in data["image_size"])})


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    # Statistics of the image itself in training and at generation time alike (no running
    # averages), so a translated image does not depend on train/eval mode.
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


class ResidualBlock(nn.Module):
    """conv3x3-IN-ReLU-conv3x3-IN plus the input (StarGAN's bottleneck block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _instance_norm(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            _instance_norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def tile_camera(images: Tensor, cameras: Tensor, num_cameras: int) -> Tensor:
    """Concatenate the one-hot of ``cameras`` (B,) int64 onto ``images`` (B, 3, H, W) as C
    constant planes -> (B, 3 + C, H, W)."""
    onehot = nn.functional.one_hot(cameras, num_cameras).to(images.dtype)  # (B, C)
    planes = onehot[:, :, None, None].expand(-1, -1, images.shape[2], images.shape[3])
    return torch.cat([images, planes], dim=1)


class Generator(nn.Module):
    """Image + target camera -> the image as that camera would record it, same size, in [-1, 1].

    7x7 conv, two stride-2 downsamples, residual blocks, two stride-2 upsamples, 7x7 conv, tanh;
    instance norm after every convolution but the last.
    """

    def __init__(self, config: StarGANConfig) -> None:
        super().__init__()
        config.validate()
        self.num_cameras = config.num_cameras
        self.image_size = config.image_size  # (H, W) it was trained at
        width = config.g_width
        layers: list[nn.Module] = [
            nn.Conv2d(3 + config.num_cameras, width, 7, padding=3, bias=False),
            _instance_norm(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(2):  # (H, W) -> (H/4, W/4)
            layers += [nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False), _instance_norm(2 * width), nn.ReLU(inplace=True)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(config.g_res_blocks)]
        for _ in range(2):  # back to (H, W)
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False),
                _instance_norm(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.Conv2d(width, 3, 7, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, images: Tensor, cameras: Tensor) -> Tensor:
        """images (B, 3, H, W) in [-1, 1], cameras (B,) int64 target camids -> (B, 3, H, W)."""
        return self.main(tile_camera(images, cameras, self.num_cameras))


class DiscriminatorOutput(NamedTuple):
    patch: Tensor  # (B, 1, H / 2**n, W / 2**n) realness scores (WGAN critic), one per patch
    logits: Tensor  # (B, C) camera logits


class Discriminator(nn.Module):
    """PatchGAN critic with an auxiliary camera classifier; no normalisation (WGAN-GP's
    gradient penalty is per sample, which batch norm would break).

    Trunk: n stride-2 4x4 convs with LeakyReLU(0.01), channels doubling from ``d_width``.
    Heads on the (H / 2**n, W / 2**n) map: a 3x3 conv to one score per patch, and a conv that
    covers the whole map to C camera logits.
    """

    def __init__(self, config: StarGANConfig) -> None:
        super().__init__()
        config.validate()
        layers: list[nn.Module] = []
        in_channels, width = 3, config.d_width
        for _ in range(config.d_downsamples):
            layers += [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            in_channels, width = width, width * 2
        self.main = nn.Sequential(*layers)
        step = 2**config.d_downsamples
        map_size = (config.image_size[0] // step, config.image_size[1] // step)
        self.patch = nn.Conv2d(in_channels, 1, 3, padding=1, bias=False)
        self.classify = nn.Conv2d(in_channels, config.num_cameras, map_size, bias=False)

    def forward(self, images: Tensor) -> DiscriminatorOutput:
        """images (B, 3, H, W) in [-1, 1] -> patch scores and camera logits (B, C)."""
        features = self.main(images)
        return DiscriminatorOutput(patch=self.patch(features), logits=self.classify(features).flatten(1))
