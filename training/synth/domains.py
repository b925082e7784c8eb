"""Declarative descriptions of the two generated domains: who walks there and how cameras see them.

A :class:`DomainSpec` holds the identity statistics (clothing palettes, patterns, accessories,
body proportions) and one :class:`CameraStyle` per camera (exposure, colour cast, blur, noise,
JPEG quality, effective resolution, scene behind the person). ``market`` mimics Market-1501
(6 cameras, outdoor summer: bright, light and saturated clothes, green and grey surroundings);
``duke`` mimics DukeMTMC-reID (8 cameras, winter campus: dark clothes, coats, backpacks, brick,
concrete and snow, stronger casts). Colours are sRGB in [0, 1].
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np

from training.core.errors import ReIDError

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Palette:
    """A weighted set of named base colours; each identity jitters the colour it draws."""

    colours: tuple[tuple[str, RGB, float], ...]

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.colours)

    def probabilities(self) -> np.ndarray:
        """(n,) float64 summing to 1."""
        weights = np.array([w for _, _, w in self.colours], dtype=np.float64)
        return weights / weights.sum()


@dataclass(frozen=True)
class Choice:
    """A weighted categorical choice such as a garment pattern or a lower-body garment."""

    options: tuple[tuple[str, float], ...]

    def probabilities(self) -> np.ndarray:
        weights = np.array([w for _, w in self.options], dtype=np.float64)
        return weights / weights.sum()

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.options)


@dataclass(frozen=True)
class SceneStyle:
    """What one camera sees behind people: a wall/vegetation band above a ground plane.

    ``texture`` is one of ``foliage`` (soft blobs), ``brick`` (a mortar grid), ``pavement``
    (tiles), ``snow`` (bright speckled ground) or ``plain``; ``horizon`` is the fraction of the
    crop height where the ground starts.
    """

    top: RGB
    ground: RGB
    horizon: float
    texture: str
    texture_strength: float
    accent: RGB


@dataclass(frozen=True)
class CameraStyle:
    """How one camera records a person; every field is a property of the camera, not the person.

    ``gain`` multiplies intensity; ``white_balance`` multiplies R, G, B; ``saturation`` scales
    chroma around grey; ``black_level`` lifts shadows (haze, flare); ``gamma`` > 1 brightens mid
    tones; ``resolution`` is the effective sampling (1.0 = sharp, 0.5 = captured at half size and
    upscaled); ``blur`` is a Gaussian radius in output pixels at 128x64; ``noise`` is the sensor
    noise standard deviation in 8-bit levels; ``occluder_prob`` is the chance an object of the
    scene covers part of the person.
    """

    gain: float
    white_balance: RGB
    saturation: float
    black_level: float
    gamma: float
    resolution: float
    blur: float
    noise: float
    jpeg_quality: int
    scene: SceneStyle
    occluder_prob: float
    occluder_colour: RGB


@dataclass(frozen=True)
class DomainSpec:
    """Everything that makes one generated domain differ from another.

    Identity statistics: palettes per garment, pattern and garment choices, accessory rates and
    the range of body proportions. Camera statistics: one :class:`CameraStyle` per camera,
    camera ``j`` (1-based in file names) is ``cameras[j - 1]``.
    """

    name: str
    cameras: tuple[CameraStyle, ...]
    upper_palette: Palette
    lower_palette: Palette
    shoe_palette: Palette
    hair_palette: Palette
    skin_palette: Palette
    accessory_palette: Palette
    upper_pattern: Choice
    lower_pattern: Choice
    lower_garment: Choice
    long_sleeve_prob: float
    coat_prob: float
    scarf_prob: float
    backpack_prob: float
    bag_prob: float
    hat_prob: float
    long_hair_prob: float
    height_range: tuple[float, float]
    width_range: tuple[float, float]
    hip_range: tuple[float, float]
    naming: str

    @property
    def num_cameras(self) -> int:
        return len(self.cameras)

    @property
    def code(self) -> int:
        """A stable integer for the domain name, used as an RNG key."""
        return zlib.crc32(self.name.encode("utf-8"))

    def with_cameras(self, count: int) -> DomainSpec:
        """The same domain seen by ``count`` cameras.

        Fewer cameras keep the first ``count`` styles; more cameras add styles derived from the
        existing ones by a deterministic perturbation, so ``--cameras 10`` is reproducible.
        """
        if count < 2:
            raise ReIDError(f"cameras must be at least 2 (a query needs a match in another camera), got {count}")
        if count <= self.num_cameras:
            return dataclasses.replace(self, cameras=self.cameras[:count])
        extra = [
            _perturbed(self.cameras[k % self.num_cameras], np.random.default_rng([self.code, 7919, k]))
            for k in range(self.num_cameras, count)
        ]
        return dataclasses.replace(self, cameras=self.cameras + tuple(extra))


def _perturbed(base: CameraStyle, rng: np.random.Generator) -> CameraStyle:
    wb = np.clip(np.asarray(base.white_balance) * rng.uniform(0.9, 1.1, 3), 0.6, 1.4)
    scene = dataclasses.replace(
        base.scene,
        top=_clip_rgb(np.asarray(base.scene.top) * rng.uniform(0.8, 1.2, 3)),
        ground=_clip_rgb(np.asarray(base.scene.ground) * rng.uniform(0.8, 1.2, 3)),
        horizon=float(np.clip(base.scene.horizon + rng.uniform(-0.1, 0.1), 0.45, 0.85)),
    )
    return dataclasses.replace(
        base,
        gain=float(base.gain * rng.uniform(0.85, 1.15)),
        white_balance=_clip_rgb(wb, high=1.4),
        saturation=float(np.clip(base.saturation * rng.uniform(0.8, 1.2), 0.4, 1.4)),
        blur=float(max(0.0, base.blur + rng.uniform(-0.3, 0.4))),
        noise=float(max(0.0, base.noise + rng.uniform(-1.0, 2.0))),
        jpeg_quality=int(np.clip(base.jpeg_quality + rng.integers(-10, 6), 55, 95)),
        scene=scene,
    )


def _clip_rgb(values: np.ndarray, high: float = 1.0) -> RGB:
    r, g, b = (float(v) for v in np.clip(values, 0.0, high))
    return (r, g, b)


# --- Market-1501-like: a summer campus in front of a supermarket, six outdoor cameras. ---

_MARKET_CAMERAS = (
    # camera 1
    CameraStyle(
        gain=1.10, white_balance=(1.00, 1.04, 0.96), saturation=1.05, black_level=0.03, gamma=1.05,
        resolution=1.00, blur=0.3, noise=2.0, jpeg_quality=90,
        scene=SceneStyle(top=(0.45, 0.58, 0.38), ground=(0.62, 0.62, 0.60), horizon=0.62,
                         texture="foliage", texture_strength=0.35, accent=(0.25, 0.42, 0.22)),
        occluder_prob=0.05, occluder_colour=(0.35, 0.35, 0.38),
    ),
    # camera 2
    CameraStyle(
        gain=1.18, white_balance=(1.05, 1.00, 0.92), saturation=1.00, black_level=0.06, gamma=1.10,
        resolution=0.85, blur=0.5, noise=3.0, jpeg_quality=85,
        scene=SceneStyle(top=(0.74, 0.74, 0.72), ground=(0.58, 0.57, 0.55), horizon=0.58,
                         texture="pavement", texture_strength=0.25, accent=(0.50, 0.50, 0.50)),
        occluder_prob=0.08, occluder_colour=(0.60, 0.18, 0.15),
    ),
    # camera 3
    CameraStyle(
        gain=1.00, white_balance=(0.95, 1.02, 1.08), saturation=0.95, black_level=0.04, gamma=1.00,
        resolution=0.75, blur=0.6, noise=3.5, jpeg_quality=80,
        scene=SceneStyle(top=(0.40, 0.52, 0.42), ground=(0.50, 0.55, 0.48), horizon=0.66,
                         texture="foliage", texture_strength=0.45, accent=(0.30, 0.48, 0.30)),
        occluder_prob=0.05, occluder_colour=(0.30, 0.40, 0.30),
    ),
    # camera 4
    CameraStyle(
        gain=1.22, white_balance=(1.02, 1.02, 1.00), saturation=1.12, black_level=0.08, gamma=1.15,
        resolution=0.90, blur=0.4, noise=2.5, jpeg_quality=88,
        scene=SceneStyle(top=(0.80, 0.80, 0.78), ground=(0.70, 0.68, 0.64), horizon=0.55,
                         texture="plain", texture_strength=0.10, accent=(0.65, 0.65, 0.62)),
        occluder_prob=0.04, occluder_colour=(0.75, 0.75, 0.75),
    ),
    # camera 5
    CameraStyle(
        gain=1.05, white_balance=(0.98, 1.08, 0.96), saturation=1.00, black_level=0.05, gamma=1.05,
        resolution=0.70, blur=0.7, noise=4.0, jpeg_quality=78,
        scene=SceneStyle(top=(0.52, 0.62, 0.46), ground=(0.56, 0.56, 0.52), horizon=0.60,
                         texture="foliage", texture_strength=0.30, accent=(0.36, 0.50, 0.30)),
        occluder_prob=0.10, occluder_colour=(0.45, 0.40, 0.30),
    ),
    # camera 6
    CameraStyle(
        gain=1.14, white_balance=(1.06, 1.02, 0.98), saturation=1.08, black_level=0.04, gamma=1.08,
        resolution=0.95, blur=0.3, noise=2.5, jpeg_quality=92,
        scene=SceneStyle(top=(0.66, 0.66, 0.62), ground=(0.60, 0.60, 0.58), horizon=0.64,
                         texture="pavement", texture_strength=0.30, accent=(0.45, 0.45, 0.45)),
        occluder_prob=0.06, occluder_colour=(0.25, 0.30, 0.55),
    ),
)

MARKET = DomainSpec(
    name="market",
    cameras=_MARKET_CAMERAS,
    upper_palette=Palette((
        ("white", (0.92, 0.92, 0.90), 3.0), ("black", (0.10, 0.10, 0.11), 1.8),
        ("grey", (0.55, 0.55, 0.56), 1.3), ("red", (0.82, 0.14, 0.14), 1.5),
        ("pink", (0.95, 0.60, 0.72), 1.0), ("yellow", (0.95, 0.86, 0.22), 1.0),
        ("orange", (0.95, 0.52, 0.12), 0.6), ("light_blue", (0.55, 0.76, 0.95), 1.2),
        ("blue", (0.16, 0.32, 0.78), 1.0), ("green", (0.22, 0.66, 0.32), 0.8),
        ("purple", (0.56, 0.32, 0.72), 0.6), ("beige", (0.86, 0.78, 0.62), 0.6),
    )),
    lower_palette=Palette((
        ("jeans", (0.20, 0.30, 0.52), 2.5), ("black", (0.10, 0.10, 0.11), 2.5),
        ("grey", (0.52, 0.52, 0.54), 1.3), ("white", (0.90, 0.90, 0.88), 1.0),
        ("khaki", (0.72, 0.64, 0.46), 1.0), ("light_jeans", (0.46, 0.57, 0.74), 1.2),
        ("brown", (0.42, 0.30, 0.20), 0.4), ("red", (0.78, 0.16, 0.18), 0.3),
        ("pink", (0.92, 0.58, 0.68), 0.3),
    )),
    shoe_palette=Palette((
        ("white", (0.90, 0.90, 0.90), 2.0), ("black", (0.10, 0.10, 0.10), 2.0),
        ("grey", (0.50, 0.50, 0.52), 1.0), ("brown", (0.40, 0.28, 0.18), 0.6),
        ("red", (0.75, 0.15, 0.15), 0.3), ("blue", (0.20, 0.30, 0.70), 0.3),
    )),
    hair_palette=Palette((
        ("black", (0.07, 0.06, 0.06), 8.0), ("dark_brown", (0.20, 0.13, 0.09), 1.5),
        ("brown", (0.38, 0.24, 0.14), 0.4),
    )),
    skin_palette=Palette((("light", (0.93, 0.78, 0.66), 3.0), ("medium", (0.82, 0.64, 0.50), 2.0),
                          ("tan", (0.66, 0.48, 0.36), 0.5))),
    accessory_palette=Palette((
        ("black", (0.10, 0.10, 0.11), 3.0), ("grey", (0.50, 0.50, 0.52), 1.0),
        ("blue", (0.18, 0.30, 0.70), 1.0), ("red", (0.78, 0.15, 0.15), 0.8),
        ("pink", (0.92, 0.58, 0.70), 0.6), ("white", (0.90, 0.90, 0.88), 0.8),
        ("brown", (0.45, 0.32, 0.20), 0.6), ("yellow", (0.93, 0.82, 0.22), 0.4),
    )),
    upper_pattern=Choice((("plain", 5.0), ("stripes", 1.6), ("checks", 0.8), ("two_tone", 1.2),
                          ("logo", 1.2), ("open", 0.3))),
    lower_pattern=Choice((("plain", 8.0), ("side_stripe", 1.0), ("two_tone", 0.5))),
    lower_garment=Choice((("trousers", 5.5), ("shorts", 3.0), ("skirt", 1.5))),
    long_sleeve_prob=0.25,
    coat_prob=0.03,
    scarf_prob=0.0,
    backpack_prob=0.22,
    bag_prob=0.25,
    hat_prob=0.08,
    long_hair_prob=0.30,
    height_range=(0.86, 0.96),
    width_range=(0.85, 1.15),
    hip_range=(0.47, 0.54),
    naming="market",
)

# --- DukeMTMC-reID-like: a university campus in winter, eight cameras, darker and colder. ---

_DUKE_CAMERAS = (
    # camera 1
    CameraStyle(
        gain=0.90, white_balance=(0.92, 0.98, 1.12), saturation=0.85, black_level=0.05, gamma=1.00,
        resolution=0.80, blur=0.6, noise=4.0, jpeg_quality=82,
        scene=SceneStyle(top=(0.55, 0.34, 0.28), ground=(0.62, 0.62, 0.64), horizon=0.60,
                         texture="brick", texture_strength=0.45, accent=(0.72, 0.70, 0.66)),
        occluder_prob=0.10, occluder_colour=(0.20, 0.20, 0.22),
    ),
    # camera 2
    CameraStyle(
        gain=0.82, white_balance=(1.10, 1.00, 0.80), saturation=0.90, black_level=0.08, gamma=1.05,
        resolution=0.70, blur=0.8, noise=5.0, jpeg_quality=78,
        scene=SceneStyle(top=(0.46, 0.44, 0.42), ground=(0.86, 0.88, 0.90), horizon=0.58,
                         texture="snow", texture_strength=0.40, accent=(0.30, 0.28, 0.26)),
        occluder_prob=0.12, occluder_colour=(0.30, 0.24, 0.18),
    ),
    # camera 3
    CameraStyle(
        gain=0.95, white_balance=(0.95, 1.00, 1.05), saturation=0.75, black_level=0.10, gamma=1.00,
        resolution=0.65, blur=0.9, noise=5.5, jpeg_quality=75,
        scene=SceneStyle(top=(0.58, 0.58, 0.60), ground=(0.46, 0.46, 0.48), horizon=0.55,
                         texture="pavement", texture_strength=0.35, accent=(0.38, 0.38, 0.40)),
        occluder_prob=0.08, occluder_colour=(0.45, 0.45, 0.48),
    ),
    # camera 4
    CameraStyle(
        gain=0.78, white_balance=(1.05, 0.98, 0.88), saturation=0.95, black_level=0.04, gamma=1.10,
        resolution=0.75, blur=0.7, noise=6.0, jpeg_quality=80,
        scene=SceneStyle(top=(0.50, 0.30, 0.24), ground=(0.40, 0.38, 0.36), horizon=0.66,
                         texture="brick", texture_strength=0.50, accent=(0.62, 0.58, 0.52)),
        occluder_prob=0.15, occluder_colour=(0.15, 0.15, 0.15),
    ),
    # camera 5
    CameraStyle(
        gain=1.00, white_balance=(0.88, 0.96, 1.15), saturation=0.80, black_level=0.06, gamma=0.95,
        resolution=0.85, blur=0.5, noise=3.5, jpeg_quality=85,
        scene=SceneStyle(top=(0.36, 0.38, 0.36), ground=(0.88, 0.90, 0.94), horizon=0.62,
                         texture="snow", texture_strength=0.35, accent=(0.25, 0.30, 0.25)),
        occluder_prob=0.08, occluder_colour=(0.25, 0.22, 0.20),
    ),
    # camera 6
    CameraStyle(
        gain=0.86, white_balance=(1.00, 1.02, 0.95), saturation=0.70, black_level=0.12, gamma=1.00,
        resolution=0.60, blur=1.0, noise=6.0, jpeg_quality=72,
        scene=SceneStyle(top=(0.62, 0.60, 0.56), ground=(0.52, 0.50, 0.48), horizon=0.52,
                         texture="plain", texture_strength=0.15, accent=(0.50, 0.48, 0.44)),
        occluder_prob=0.10, occluder_colour=(0.55, 0.52, 0.48),
    ),
    # camera 7
    CameraStyle(
        gain=0.92, white_balance=(1.12, 0.96, 0.86), saturation=1.00, black_level=0.05, gamma=1.05,
        resolution=0.80, blur=0.6, noise=4.5, jpeg_quality=80,
        scene=SceneStyle(top=(0.44, 0.26, 0.22), ground=(0.58, 0.56, 0.54), horizon=0.60,
                         texture="brick", texture_strength=0.40, accent=(0.70, 0.66, 0.60)),
        occluder_prob=0.12, occluder_colour=(0.22, 0.20, 0.20),
    ),
    # camera 8
    CameraStyle(
        gain=0.80, white_balance=(0.90, 0.94, 1.10), saturation=0.85, black_level=0.07, gamma=1.00,
        resolution=0.70, blur=0.8, noise=5.0, jpeg_quality=76,
        scene=SceneStyle(top=(0.30, 0.32, 0.34), ground=(0.72, 0.74, 0.78), horizon=0.64,
                         texture="snow", texture_strength=0.30, accent=(0.20, 0.22, 0.24)),
        occluder_prob=0.10, occluder_colour=(0.18, 0.18, 0.20),
    ),
)

DUKE = DomainSpec(
    name="duke",
    cameras=_DUKE_CAMERAS,
    upper_palette=Palette((
        ("black", (0.08, 0.08, 0.09), 4.0), ("dark_grey", (0.26, 0.26, 0.28), 2.0),
        ("navy", (0.12, 0.15, 0.32), 1.6), ("dark_green", (0.15, 0.26, 0.18), 0.8),
        ("brown", (0.40, 0.28, 0.18), 1.0), ("dark_red", (0.46, 0.10, 0.12), 0.9),
        ("grey", (0.52, 0.52, 0.54), 1.0), ("white", (0.88, 0.88, 0.86), 0.6),
        ("red", (0.72, 0.14, 0.14), 0.5), ("beige", (0.76, 0.68, 0.54), 0.5),
        ("blue", (0.20, 0.30, 0.62), 0.6), ("plum", (0.32, 0.16, 0.30), 0.3),
    )),
    lower_palette=Palette((
        ("black", (0.08, 0.08, 0.09), 3.0), ("dark_jeans", (0.12, 0.16, 0.28), 3.0),
        ("grey", (0.42, 0.42, 0.44), 1.2), ("khaki", (0.62, 0.55, 0.40), 0.6),
        ("brown", (0.34, 0.24, 0.16), 0.5), ("light_jeans", (0.40, 0.50, 0.66), 0.5),
    )),
    shoe_palette=Palette((
        ("black", (0.08, 0.08, 0.08), 3.0), ("brown", (0.34, 0.22, 0.14), 1.5),
        ("grey", (0.45, 0.45, 0.47), 0.8), ("white", (0.85, 0.85, 0.85), 0.8),
        ("tan_boots", (0.60, 0.45, 0.28), 0.6),
    )),
    hair_palette=Palette((
        ("black", (0.07, 0.06, 0.06), 3.0), ("dark_brown", (0.20, 0.13, 0.09), 2.5),
        ("brown", (0.40, 0.26, 0.15), 1.5), ("blond", (0.78, 0.64, 0.40), 1.0),
        ("grey", (0.60, 0.60, 0.60), 0.3),
    )),
    skin_palette=Palette((("light", (0.95, 0.80, 0.70), 3.0), ("medium", (0.80, 0.62, 0.48), 1.5),
                          ("tan", (0.62, 0.44, 0.32), 1.0), ("dark", (0.40, 0.27, 0.20), 1.0))),
    accessory_palette=Palette((
        ("black", (0.08, 0.08, 0.09), 4.0), ("grey", (0.45, 0.45, 0.47), 1.2),
        ("navy", (0.14, 0.18, 0.36), 1.2), ("red", (0.65, 0.14, 0.14), 0.8),
        ("dark_green", (0.18, 0.30, 0.20), 0.6), ("brown", (0.40, 0.28, 0.18), 0.8),
        ("orange", (0.85, 0.45, 0.12), 0.3),
    )),
    upper_pattern=Choice((("plain", 7.0), ("stripes", 0.6), ("checks", 0.6), ("two_tone", 1.2),
                          ("logo", 0.6), ("open", 1.6))),
    lower_pattern=Choice((("plain", 12.0), ("side_stripe", 0.4), ("two_tone", 0.3))),
    lower_garment=Choice((("trousers", 9.2), ("shorts", 0.3), ("skirt", 0.5))),
    long_sleeve_prob=0.95,
    coat_prob=0.45,
    scarf_prob=0.18,
    backpack_prob=0.45,
    bag_prob=0.18,
    hat_prob=0.18,
    long_hair_prob=0.30,
    height_range=(0.84, 0.95),
    width_range=(0.95, 1.25),
    hip_range=(0.48, 0.55),
    naming="duke",
)

DOMAINS: dict[str, DomainSpec] = {MARKET.name: MARKET, DUKE.name: DUKE}


def get_domain(name: str) -> DomainSpec:
    """The built-in :class:`DomainSpec` called ``name`` (``market`` or ``duke``)."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise ReIDError(f"unknown domain {name!r}; expected one of {', '.join(sorted(DOMAINS))}") from None
