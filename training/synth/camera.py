"""What a camera adds around and on top of the person: the scene behind, an occluder in front,
and the imaging chain (exposure, colour, optics, sensor noise).

Every function that draws randomness takes the camera's stream and draws the same number of
values whatever the content, so one key gives one background with or without a person.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from training.synth.canvas import DEFAULT_SIZE, pixel_grid
from training.synth.domains import CameraStyle, SceneStyle

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, cells: tuple[int, int], h: int, w: int) -> np.ndarray:
    """(h, w) float32 in about [0, 1]: a coarse random grid bicubically upsampled."""
    grid = rng.random(cells, dtype=np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC))


def draw_scene(scene: SceneStyle, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32: a wall/vegetation band above a ground plane, with the camera's texture.

    Every call draws the same number of values from ``rng`` regardless of texture."""
    y, x = pixel_grid(h, w)
    horizon = scene.horizon + float(rng.uniform(-0.06, 0.06))
    shift_x, shift_y = rng.uniform(0.0, 1.0, 2)
    tone = float(rng.uniform(0.9, 1.1))
    coarse = _smooth_noise(rng, (5, 3), h, w)
    fine = _smooth_noise(rng, (24, 12), h, w)
    grain = rng.random((h, w), dtype=np.float32)

    yy = y / h
    xx = x / w
    ground = 1.0 / (1.0 + np.exp(-(yy - horizon) / 0.015))  # (h, 1) soft edge at the horizon
    top = np.asarray(scene.top, dtype=np.float32) * tone
    bottom = np.asarray(scene.ground, dtype=np.float32) * tone
    accent = np.asarray(scene.accent, dtype=np.float32)
    strength = scene.texture_strength
    upper_mix = np.zeros((h, w), dtype=np.float32)
    lower_mix = np.zeros((h, w), dtype=np.float32)
    if scene.texture == "foliage":
        upper_mix = strength * np.clip(1.6 * (0.6 * coarse + 0.4 * fine) - 0.3, 0.0, 1.0)
        lower_mix = 0.3 * strength * coarse
    elif scene.texture == "brick":
        row = (yy * 22.0 + shift_y) % 1.0
        col = (xx * 5.0 + shift_x + 0.5 * np.floor(yy * 22.0 + shift_y)) % 1.0
        mortar = (row < 0.14) | (col < 0.07)
        upper_mix = np.where(mortar, strength, 0.15 * strength * fine)
        lower_mix = 0.2 * strength * coarse
    elif scene.texture == "pavement":
        tiles = ((xx * 4.0 + shift_x) % 1.0 < 0.05) | (((yy - horizon) * 9.0 + shift_y) % 1.0 < 0.06)
        lower_mix = np.where(tiles, strength, 0.2 * strength * fine)
        upper_mix = 0.5 * strength * coarse
    elif scene.texture == "snow":
        upper_mix = strength * np.clip(1.8 * (0.5 * coarse + 0.5 * fine) - 0.4, 0.0, 1.0)
        lower_mix = 0.5 * strength * (grain > 0.97) + 0.2 * strength * fine
    else:  # plain
        upper_mix = 0.3 * strength * coarse
        lower_mix = 0.3 * strength * fine
    upper = top + (accent - top) * upper_mix[..., None]
    lower = bottom + (accent - bottom) * lower_mix[..., None]
    canvas = upper + (lower - upper) * ground[..., None]
    canvas = canvas * (0.94 + 0.12 * grain[..., None])
    return canvas.astype(np.float32)


def draw_occluder(
    camera: CameraStyle, rng: np.random.Generator, h: int, w: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """A pole or a low object (bench, bicycle, car bonnet) in front of the person, or None."""
    present, is_pole, a, b = rng.random(4)
    if present >= camera.occluder_prob:
        return None
    y, x = pixel_grid(h, w)
    colour = np.asarray(camera.occluder_colour, dtype=np.float32)
    if is_pole < 0.5:
        centre, half = (0.1 + 0.8 * a) * w, (0.04 + 0.05 * b) * w
        mask = np.broadcast_to(np.abs(x - centre) < half, (h, w))
    else:
        top = (0.72 + 0.15 * a) * h
        left = b < 0.5
        edge = (0.35 + 0.4 * a) * w
        mask = (y > top) & ((x < edge) if left else (x > w - edge))
    return np.ascontiguousarray(mask), colour


def expose(canvas: np.ndarray, camera: CameraStyle, gain: float) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> (H, W, 3) uint8 after gain, white balance, saturation,
    black level and gamma."""
    x = canvas * (gain * np.asarray(camera.white_balance, dtype=np.float32))
    grey = (x[..., 0:1] * _LUMA[0] + x[..., 1:2] * _LUMA[1]) + x[..., 2:3] * _LUMA[2]
    x = grey + camera.saturation * (x - grey)
    x = camera.black_level + (1.0 - camera.black_level) * x
    x = np.clip(x, 0.0, 1.0) ** (1.0 / camera.gamma)
    return (x * 255.0 + 0.5).astype(np.uint8)


def optics(image: np.ndarray, camera: CameraStyle, height: int, width: int) -> np.ndarray:
    """Effective resolution (down then up again) and lens/motion blur, via PIL."""
    pil = Image.fromarray(image)
    if camera.resolution < 0.999:
        small = (max(4, round(width * camera.resolution)), max(8, round(height * camera.resolution)))
        pil = pil.resize(small, Image.Resampling.BILINEAR, reducing_gap=None).resize(
            (width, height), Image.Resampling.BILINEAR
        )
    radius = camera.blur * height / DEFAULT_SIZE[0]
    if radius > 0.05:
        pil = pil.filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(pil)


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise in 8-bit levels: mostly luminance, some per-channel chroma."""
    height, width, _ = image.shape
    luma = rng.standard_normal((height, width, 1), dtype=np.float32)
    chroma = rng.standard_normal((height, width, 3), dtype=np.float32)
    noisy = image.astype(np.float32) + sigma * (0.8 * luma + 0.6 * chroma)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
