"""The pixel canvas shared by the person and the camera: crop size, pixel-centre grids,
supersampling, and the label map a person is painted into.

People are painted at ``SUPERSAMPLE`` times the output size and box-filtered down (anti-aliased
edges); the scene and the imaging chain work at output size.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from training.synth.domains import RGB

SUPERSAMPLE = 2
DEFAULT_SIZE = (128, 64)  # (height, width), Market-1501's crop size


@lru_cache(maxsize=8)
def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: y (h, 1) and x (1, w), float32. Cached; never mutated."""
    y = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
    x = (np.arange(w, dtype=np.float32) + 0.5)[None, :]
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def box_down(x: np.ndarray) -> np.ndarray:
    """Average SUPERSAMPLE x SUPERSAMPLE blocks: (h*s, w*s, ...) -> (h, w, ...)."""
    s = SUPERSAMPLE
    total = sum(x[i::s, j::s] for i in range(s) for j in range(s))
    return total * np.float32(1.0 / (s * s))


class Fill(NamedTuple):
    """A garment's colours: ``second`` where ``second_where`` holds (a pattern), else ``first``."""

    first: RGB
    second: RGB
    second_where: np.ndarray | None


class BodyCanvas:
    """Paints body parts back to front in body coordinates: ``v`` runs 0 (top of head) to 1
    (soles), ``u`` is horizontal offset in the same unit (person heights), mirrored on flip."""

    def __init__(self, u: np.ndarray, v: np.ndarray) -> None:
        self.u = u
        self.v = v
        # Painting writes small integers into a label map; colours are looked up once at the end.
        self.labels = np.zeros(u.shape, dtype=np.uint8)
        self.palette: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]  # label 0: nothing

    def _label(self, colour: RGB, shade: float) -> int:
        self.palette.append((colour[0] * shade, colour[1] * shade, colour[2] * shade))
        return len(self.palette) - 1

    def paint(self, where: np.ndarray, fill: RGB | Fill, shade: float = 1.0) -> None:
        if not isinstance(fill, Fill):
            fill = Fill(fill, fill, None)
        self.labels[where] = self._label(fill.first, shade)
        if fill.second_where is not None:
            self.labels[where & fill.second_where] = self._label(fill.second, shade)

    def colours(self) -> np.ndarray:
        """(h, w, 3) float32 colours, black where nothing was painted."""
        return np.asarray(self.palette, dtype=np.float32)[self.labels]

    def ellipse(self, uc: float, vc: float, ru: float, rv: float) -> np.ndarray:
        return ((self.u - uc) / ru) ** 2 + ((self.v - vc) / rv) ** 2 <= 1.0

    def box(self, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        return (self.u >= u0) & (self.u <= u1) & (self.v >= v0) & (self.v <= v1)

    def trapezoid(self, v0: float, v1: float, half0: float, half1: float, uc: float = 0.0) -> np.ndarray:
        t = np.clip((self.v - v0) / (v1 - v0), 0.0, 1.0)
        half = half0 + (half1 - half0) * t
        return (self.v >= v0) & (self.v <= v1) & (np.abs(self.u - uc) <= half)

    def capsule(self, a: tuple[float, float], b: tuple[float, float], radius: float) -> tuple[np.ndarray, np.ndarray]:
        """Mask of a rounded segment from a to b, and t in [0, 1], the position along it."""
        du, dv = b[0] - a[0], b[1] - a[1]
        t = np.clip(((self.u - a[0]) * du + (self.v - a[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
        dist2 = (self.u - a[0] - t * du) ** 2 + (self.v - a[1] - t * dv) ** 2
        return dist2 <= radius * radius, t
