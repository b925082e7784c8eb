"""Drawing a generated pedestrian crop: person layout, scene, then the camera's imaging chain.

Three independent sources decide an image, each from its own random stream:

* the identity (clothes, accessories, build), keyed by ``(seed, domain, pid)``;
* the instance pose (view, stride, arm swing, flip, placement, lighting), keyed by
  ``(seed, domain, pid, instance)``;
* the camera (scene behind the person, occluder, exposure jitter, sensor noise) together with
  the camera's fixed :class:`CameraStyle`, keyed by ``(seed, domain, pid, camid, instance)``.

Rendering the same ``(identity, instance)`` under every camera therefore gives the exact
camera-style oracle: the same person in the same pose, placed at the same pixels, seen by each
camera. Shapes are drawn at twice the output size and box-filtered down (anti-aliasing); all
drawing is whole-array numpy; PIL does resampling and blur.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter

from training.synth.domains import RGB, CameraStyle, DomainSpec, SceneStyle
from training.synth.identity import Identity, make_identity
from training.synth.seeding import Stream, rng_for

SUPERSAMPLE = 2
DEFAULT_SIZE = (128, 64)  # (height, width), Market-1501's crop size

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Pose:
    """One instance's geometry and lighting; independent of the camera.

    ``view``: front | back | side. ``stride`` and ``arm_swing`` in [-1, 1]. ``scale`` multiplies
    the identity's height; ``center_x`` (fraction of crop width) and ``top`` (fraction of crop
    height, where the head starts) place the person. ``light`` multiplies scene brightness and
    ``light_side`` in [-1, 1] shades one side of the body.
    """

    view: str
    flip: bool
    stride: float
    arm_swing: float
    scale: float
    center_x: float
    top: float
    light: float
    light_side: float


class RenderedPerson(NamedTuple):
    """``image``: (H, W, 3) uint8 RGB. ``mask``: (H, W) bool, the pixels where the person was
    drawn (before any occluder of the scene). ``jpeg_quality``: the camera's JPEG quality, to be
    used when the image is saved (the returned pixels are not yet JPEG-compressed)."""

    image: np.ndarray
    mask: np.ndarray
    jpeg_quality: int


def sample_pose(rng: np.random.Generator) -> Pose:
    """A walking pose with Market-like placement (head near the top, feet near the bottom)."""
    return Pose(
        view=str(rng.choice(("front", "back", "side"), p=(0.35, 0.35, 0.30))),
        flip=bool(rng.random() < 0.5),
        stride=float(rng.uniform(-1.0, 1.0)),
        arm_swing=float(rng.uniform(-1.0, 1.0)),
        scale=float(rng.uniform(0.94, 1.04)),
        center_x=float(0.5 + np.clip(rng.normal(0.0, 0.04), -0.1, 0.1)),
        top=float(rng.uniform(0.0, 0.06)),
        light=float(np.exp(rng.normal(0.0, 0.08))),
        light_side=float(rng.uniform(-0.6, 0.6)),
    )


def render_person(
    spec: DomainSpec,
    identity: Identity,
    camid: int,
    instance: int,
    *,
    seed: int,
    size: tuple[int, int] = DEFAULT_SIZE,
) -> RenderedPerson:
    """``identity`` in its ``instance``-th pose, seen by camera ``camid`` (1-based) of ``spec``.

    Deterministic in ``(seed, spec.name, identity.pid, camid, instance, size)``.
    """
    _check_camid(spec, camid)
    pose = sample_pose(rng_for(seed, spec.code, Stream.POSE, identity.pid, instance))
    camera_rng = rng_for(seed, spec.code, Stream.CAMERA, identity.pid, camid, instance)
    return render_scene(spec.cameras[camid - 1], identity, pose, camera_rng, size)


def render_camstyle(
    spec: DomainSpec, identity: Identity, instance: int, *, seed: int, size: tuple[int, int] = DEFAULT_SIZE
) -> list[RenderedPerson]:
    """The camera-style oracle: the same person and pose under cameras 1..C of ``spec``.

    Element ``j - 1`` is camera ``j``; the element for the camera an image was taken with is
    identical to that image's :func:`render_person`. The masks are identical across cameras.
    """
    return [
        render_person(spec, identity, camid, instance, seed=seed, size=size)
        for camid in range(1, spec.num_cameras + 1)
    ]


def render_distractor(
    spec: DomainSpec, camid: int, index: int, *, seed: int, size: tuple[int, int] = DEFAULT_SIZE
) -> RenderedPerson:
    """A false detection (pid 0 in Market's layout): an empty piece of the scene or a person who
    belongs to no identity, often cut by the crop border."""
    _check_camid(spec, camid)
    rng = rng_for(seed, spec.code, Stream.DISTRACTOR, index, camid)
    camera = spec.cameras[camid - 1]
    if rng.random() < 0.5:
        return render_scene(camera, None, None, rng, size)
    stranger = make_identity(spec, seed, index, stream=Stream.DISTRACTOR)
    pose = sample_pose(rng)
    pose = _replace_placement(
        pose,
        scale=float(rng.uniform(0.7, 1.3)),
        center_x=float(rng.choice((rng.uniform(-0.1, 0.25), rng.uniform(0.75, 1.1)))),
        top=float(rng.uniform(-0.2, 0.3)),
    )
    return render_scene(camera, stranger, pose, rng, size)


def render_junk(
    spec: DomainSpec, identity: Identity, camid: int, index: int, *, seed: int,
    size: tuple[int, int] = DEFAULT_SIZE,
) -> RenderedPerson:
    """A badly cropped fragment of ``identity`` (pid -1 in Market's layout): a zoomed-in part of
    the body (head and shoulders, torso, or legs) that a detector boxed wrongly."""
    _check_camid(spec, camid)
    rng = rng_for(seed, spec.code, Stream.JUNK, identity.pid, camid, index)
    pose = sample_pose(rng)
    scale = float(rng.uniform(1.8, 3.0))
    # Which body fraction sits at the crop's top: 0 = head, ~0.35 = torso, ~0.6 = legs.
    part = float(rng.choice((0.0, 0.3, 0.55))) + float(rng.uniform(-0.05, 0.05))
    pose = _replace_placement(
        pose, scale=scale, center_x=float(0.5 + rng.uniform(-0.25, 0.25)), top=-part * scale * identity.height
    )
    return render_scene(spec.cameras[camid - 1], identity, pose, rng, size)


def render_scene(
    camera: CameraStyle,
    identity: Identity | None,
    pose: Pose | None,
    camera_rng: np.random.Generator,
    size: tuple[int, int] = DEFAULT_SIZE,
) -> RenderedPerson:
    """The imaging chain: scene, person (if any), occluder, exposure, colour, optics, noise.

    ``camera_rng`` is consumed in a fixed order whatever the content, so a person and an empty
    scene drawn with equal keys share the same background.
    """
    height, width = _check_size(size)
    canvas = _scene(camera.scene, camera_rng, height, width)
    occluder = _occluder(camera, camera_rng, height, width)
    gain = camera.gain * float(np.exp(camera_rng.normal(0.0, 0.04)))
    mask = np.zeros((height, width), dtype=bool)
    light = 1.0
    if identity is not None and pose is not None:
        # The person is drawn supersampled and box-filtered: colour premultiplied by coverage.
        person, coverage = _draw_person(identity, pose, height, width)
        canvas = person + (1.0 - coverage[..., None]) * canvas
        mask = coverage >= 0.5
        light = pose.light
    if occluder is not None:
        occ_mask, occ_colour = occluder
        canvas[occ_mask] = occ_colour
    canvas = _expose(canvas, camera, gain * light)
    image = _optics(canvas, camera, height, width)
    image = _add_noise(image, camera.noise, camera_rng)
    return RenderedPerson(image=image, mask=mask, jpeg_quality=camera.jpeg_quality)


# ----------------------------------------------------------------------------------------------
# Camera imaging chain


def _expose(canvas: np.ndarray, camera: CameraStyle, gain: float) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> (H, W, 3) uint8 after gain, white balance, saturation,
    black level and gamma."""
    x = canvas * (gain * np.asarray(camera.white_balance, dtype=np.float32))
    grey = (x[..., 0:1] * _LUMA[0] + x[..., 1:2] * _LUMA[1]) + x[..., 2:3] * _LUMA[2]
    x = grey + camera.saturation * (x - grey)
    x = camera.black_level + (1.0 - camera.black_level) * x
    x = np.clip(x, 0.0, 1.0) ** (1.0 / camera.gamma)
    return (x * 255.0 + 0.5).astype(np.uint8)


def _optics(image: np.ndarray, camera: CameraStyle, height: int, width: int) -> np.ndarray:
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


def _add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise in 8-bit levels: mostly luminance, some per-channel chroma."""
    height, width, _ = image.shape
    luma = rng.standard_normal((height, width, 1), dtype=np.float32)
    chroma = rng.standard_normal((height, width, 3), dtype=np.float32)
    noisy = image.astype(np.float32) + sigma * (0.8 * luma + 0.6 * chroma)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Scene


def _smooth_noise(rng: np.random.Generator, cells: tuple[int, int], h: int, w: int) -> np.ndarray:
    """(h, w) float32 in about [0, 1]: a coarse random grid bicubically upsampled."""
    grid = rng.random(cells, dtype=np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC))


def _scene(scene: SceneStyle, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32: a wall/vegetation band above a ground plane, with the camera's texture.

    Every call draws the same number of values from ``rng`` regardless of texture."""
    y, x = _grid(h, w)
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


def _occluder(
    camera: CameraStyle, rng: np.random.Generator, h: int, w: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """A pole or a low object (bench, bicycle, car bonnet) in front of the person, or None."""
    present, is_pole, a, b = rng.random(4)
    if present >= camera.occluder_prob:
        return None
    y, x = _grid(h, w)
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


# ----------------------------------------------------------------------------------------------
# Person


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: y (h, 1) and x (1, w), float32. Cached; never mutated."""
    y = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
    x = (np.arange(w, dtype=np.float32) + 0.5)[None, :]
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def _replace_placement(pose: Pose, *, scale: float, center_x: float, top: float) -> Pose:
    return Pose(pose.view, pose.flip, pose.stride, pose.arm_swing, scale, center_x, top, pose.light, pose.light_side)


class _Canvas:
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

    def paint(self, where: np.ndarray, fill: RGB | _Fill, shade: float = 1.0) -> None:
        if not isinstance(fill, _Fill):
            fill = _Fill(fill, fill, None)
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


class _Fill(NamedTuple):
    """A garment's colours: ``second`` where ``second_where`` holds (a pattern), else ``first``."""

    first: RGB
    second: RGB
    second_where: np.ndarray | None


def _draw_person(identity: Identity, pose: Pose, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The person at output size: (H, W, 3) float32 colour premultiplied by coverage, and
    (H, W) float32 coverage in [0, 1] (fraction of supersamples inside the person)."""
    hs, ws = height * SUPERSAMPLE, width * SUPERSAMPLE
    y, x = _grid(hs, ws)
    person_h = identity.height * pose.scale * hs
    v = (y - pose.top * hs) / person_h
    u = (x - pose.center_x * ws) / person_h
    if pose.flip:
        u = -u
    # Work on the person's bounding box only; the rest of the canvas stays empty.
    rows = np.flatnonzero((v[:, 0] >= -0.02) & (v[:, 0] <= 1.02))
    cols = np.flatnonzero(np.abs(u[0]) <= 0.3)
    rgb = np.zeros((height, width, 3), dtype=np.float32)
    coverage = np.zeros((height, width), dtype=np.float32)
    if rows.size == 0 or cols.size == 0:
        return rgb, coverage
    # Bounding box in whole output pixels, so it box-filters on its own.
    s = SUPERSAMPLE
    r0, r1 = rows[0] // s * s, -(-(rows[-1] + 1) // s) * s
    c0, c1 = cols.min() // s * s, -(-(cols.max() + 1) // s) * s
    canvas = _Canvas(np.broadcast_to(u[:, c0:c1], (r1 - r0, c1 - c0)), np.broadcast_to(v[r0:r1], (r1 - r0, c1 - c0)))
    _paint_body(canvas, identity, pose)
    half_width = 0.13 * identity.width
    shade = 1.0 - 0.25 * np.clip(canvas.u / half_width, -1.5, 1.5) ** 2 + 0.35 * pose.light_side * canvas.u / half_width
    colours = canvas.colours() * np.clip(shade, 0.45, 1.25)[..., None]
    rgb[r0 // s : r1 // s, c0 // s : c1 // s] = _box_down(colours)
    coverage[r0 // s : r1 // s, c0 // s : c1 // s] = _box_down((canvas.labels > 0).astype(np.float32))
    return rgb, coverage


def _box_down(x: np.ndarray) -> np.ndarray:
    """Average SUPERSAMPLE x SUPERSAMPLE blocks: (h*s, w*s, ...) -> (h, w, ...)."""
    s = SUPERSAMPLE
    total = sum(x[i::s, j::s] for i in range(s) for j in range(s))
    return total * np.float32(1.0 / (s * s))


def _upper_colour(canvas: _Canvas, identity: Identity, view: str, v0: float, v1: float, sleeve: bool) -> _Fill:
    """The upper garment's colours following its pattern."""
    c1, c2 = identity.upper, identity.upper_second
    pattern, period, u, v = identity.upper_pattern, identity.pattern_period, canvas.u, canvas.v
    if pattern == "stripes":
        second = (v / period) % 1.0 < 0.45
    elif pattern == "checks":
        second = (np.floor(v / period) + np.floor(u / period)) % 2 == 1
    elif pattern == "two_tone":
        second = v > v0 + 0.5 * (v1 - v0)
    elif pattern == "logo" and view == "front" and not sleeve:
        second = (np.abs(u) < 0.035) & (v > v0 + 0.05) & (v < v0 + 0.12)
    elif pattern == "open" and view == "front" and not sleeve:
        second = np.abs(u) < 0.03
    else:
        return _Fill(c1, c2, None)
    return _Fill(c1, c2, second)


def _lower_colour(canvas: _Canvas, identity: Identity, offset: np.ndarray | None) -> _Fill:
    """Colours of trousers/shorts/skirt; ``offset`` is the signed outward distance from the leg
    axis (for side stripes), in leg radii."""
    c1, c2 = identity.lower, identity.lower_second
    if identity.lower_pattern == "side_stripe" and offset is not None:
        second = (offset > 0.35) & (offset < 0.8)
    elif identity.lower_pattern == "two_tone":
        second = canvas.v > 0.8
    else:
        return _Fill(c1, c2, None)
    return _Fill(c1, c2, second)


def _paint_body(c: _Canvas, ident: Identity, pose: Pose) -> None:
    """Paint the whole person back to front for the pose's view."""
    view, wf, hip = pose.view, ident.width, ident.hip
    side = view == "side"
    narrow = 0.62 if side else 1.0
    shoulder_v, torso_end = 0.165, hip + (0.2 if ident.coat else 0.035)
    sw, waist = 0.118 * wf * narrow, 0.096 * wf * narrow
    hem = (0.108 if ident.coat else 0.096) * wf * narrow
    ankle_v = 0.955
    leg_r, arm_r = 0.036 * wf, 0.025 * wf

    # Leg and arm geometry: a side view scissors the legs and swings the arms fore and aft.
    if side:
        step = 0.11 * pose.stride
        legs = [((0.0, hip), (-step, ankle_v), 0.8), ((0.0, hip), (step, ankle_v), 1.0)]
        swing = 0.1 * pose.arm_swing
        arms = [((0.0, shoulder_v + 0.01), (-swing, hip + 0.01), 0.8), ((0.0, shoulder_v + 0.01), (swing, hip + 0.01), 1.0)]
        out_sign = [1.0, 1.0]
    else:
        spread = 0.012 * pose.stride
        legs = [((-0.05 * wf, hip), (-0.054 * wf - spread, ankle_v), 1.0),
                ((0.05 * wf, hip), (0.054 * wf + spread, ankle_v), 1.0)]
        lateral = 0.012 * pose.arm_swing
        arms = [((-(sw - 0.01), shoulder_v + 0.01), (-(sw + 0.02) - lateral, hip + 0.01), 1.0),
                ((sw - 0.01, shoulder_v + 0.01), (sw + 0.02 + lateral, hip + 0.01), 1.0)]
        out_sign = [-1.0, 1.0]

    hair_behind = ident.long_hair and view != "back"
    if hair_behind:
        c.paint(c.box(-0.05 if side else -0.055, 0.0 if side else 0.055, 0.05, 0.25), ident.hair)
    if side and ident.bag is not None and ident.bag_side < 0:
        c.paint(c.box(-0.045, 0.045, hip - 0.05, hip + 0.07), ident.bag, 0.85)
    if side:  # far arm behind the body
        _paint_arm(c, ident, view, arms[0], arm_r, shoulder_v, torso_end)

    # Legs, crotch, shoes.
    for (a, b, shade), sign in zip(legs, out_sign):
        leg, t = c.capsule(a, b, leg_r)
        offset = (c.u - (a[0] + t * (b[0] - a[0]))) / leg_r * sign
        if ident.lower_garment == "trousers":
            c.paint(leg, _lower_colour(c, ident, offset), shade)
        else:
            c.paint(leg, ident.skin, shade)
            if ident.lower_garment == "shorts":
                c.paint(leg & (c.v < hip + 0.17), _lower_colour(c, ident, offset), shade)
        foot = c.ellipse(b[0] + (0.02 if side else 0.0), ankle_v + 0.015, 0.035 if side else 0.028, 0.022)
        c.paint(foot, ident.shoes, shade)
    if ident.lower_garment in ("trousers", "shorts"):
        c.paint(c.trapezoid(hip - 0.02, hip + 0.07, 0.086 * wf * narrow, 0.03 * wf), _lower_colour(c, ident, None))
    elif ident.lower_garment == "skirt":
        c.paint(c.trapezoid(hip - 0.02, hip + 0.2, 0.09 * wf * narrow, 0.13 * wf * narrow), _lower_colour(c, ident, None))

    # Torso (a coat reaches mid-thigh), rounded shoulders, neck.
    torso = c.trapezoid(shoulder_v, torso_end, sw, hem if ident.coat else waist) | c.ellipse(0.0, shoulder_v + 0.02, sw, 0.035)
    c.paint(torso, _upper_colour(c, ident, view, shoulder_v, torso_end, sleeve=False))
    c.paint(c.box(-0.02, 0.02, 0.11, shoulder_v + 0.005), ident.skin)
    if ident.scarf is not None:
        c.paint(c.box(-0.05 * narrow, 0.05 * narrow, 0.135, 0.178), ident.scarf)
        if view == "front":
            c.paint(c.box(0.012, 0.038, 0.17, 0.28), ident.scarf)

    # Carried things on the back and over the shoulder.
    if ident.backpack is not None:
        if view == "back":
            c.paint(c.ellipse(0.0, 0.2, 0.08 * wf, 0.03) | c.box(-0.08 * wf, 0.08 * wf, 0.2, 0.4), ident.backpack)
        elif view == "front":
            for sign in (-1.0, 1.0):
                c.paint(c.box(sign * 0.065 * wf - 0.008, sign * 0.065 * wf + 0.008, shoulder_v, 0.33), ident.backpack, 0.9)
        else:
            c.paint(c.box(-sw - 0.065, -sw + 0.01, 0.18, 0.4) | c.ellipse(-sw - 0.03, 0.185, 0.04, 0.025), ident.backpack)
    if ident.bag is not None and not (side and ident.bag_side < 0):
        bag_u = 0.0 if side else ident.bag_side * (sw + 0.02)
        strap, _ = c.capsule((-ident.bag_side * (sw - 0.03) * (0 if side else 1), shoulder_v), (bag_u, hip - 0.04), 0.007)
        c.paint(strap, ident.bag, 0.8)
        c.paint(c.box(bag_u - 0.045, bag_u + 0.045, hip - 0.05, hip + 0.07), ident.bag)

    # Arms over the torso's edges (near arm only in a side view), then long hair down the back.
    for arm in arms[1:] if side else arms:
        _paint_arm(c, ident, view, arm, arm_r, shoulder_v, torso_end)
    if ident.long_hair and view == "back":
        c.paint(c.box(-0.06, 0.06, 0.06, 0.26), ident.hair)

    # Head: face and hair depend on the view; then a hat.
    head = c.ellipse(0.0, 0.068, 0.04 if side else 0.045, 0.062)
    if view == "back":
        c.paint(head, ident.hair)
    elif view == "front":
        c.paint(head, ident.skin)
        hair = head & ((c.v < 0.04) | (ident.long_hair & (np.abs(c.u) > 0.032) & (c.v < 0.11)))
        c.paint(hair, ident.hair)
    else:
        c.paint(head, ident.skin)
        c.paint(head & ((c.v < 0.035) | (c.u < -0.005)), ident.hair)
    if ident.hat is not None:
        c.paint(c.ellipse(0.0, 0.035, 0.05, 0.04) & (c.v < 0.045), ident.hat)
        if view != "back":
            c.paint(c.box(-0.05 if not side else 0.0, 0.05 if not side else 0.075, 0.035, 0.048), ident.hat, 0.85)


def _paint_arm(
    c: _Canvas, ident: Identity, view: str, arm: tuple[tuple[float, float], tuple[float, float], float],
    radius: float, shoulder_v: float, torso_end: float,
) -> None:
    a, b, shade = arm
    limb, t = c.capsule(a, b, radius)
    sleeve_end = 1.0 if ident.long_sleeves else 0.35
    c.paint(limb, ident.skin, shade)
    c.paint(limb & (t <= sleeve_end), _upper_colour(c, ident, view, shoulder_v, torso_end, sleeve=True), shade)
    c.paint(c.ellipse(b[0], b[1] + 0.01, radius * 1.1, radius * 1.3), ident.skin, shade)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(s) for s in size)
    if height < 16 or width < 8:
        raise ValueError(f"image size must be at least 16x8 (height x width), got {height}x{width}")
    return height, width


def _check_camid(spec: DomainSpec, camid: int) -> None:
    if not 1 <= camid <= spec.num_cameras:
        raise ValueError(f"camid must be in 1..{spec.num_cameras} for domain {spec.name!r}, got {camid}")
