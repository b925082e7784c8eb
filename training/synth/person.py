"""The person in a crop: an instance's pose, and painting an identity in that pose.

The body is painted back to front into a :class:`~training.synth.canvas.BodyCanvas` at
``SUPERSAMPLE`` times the output size (only over the person's bounding box) and box-filtered
down, giving premultiplied colour and fractional coverage for compositing over the scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synth.canvas import SUPERSAMPLE, BodyCanvas, Fill, box_down, pixel_grid
from training.synth.identity import Identity


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


def replace_placement(pose: Pose, *, scale: float, center_x: float, top: float) -> Pose:
    """``pose`` moved and resized: same view, gait and lighting."""
    return Pose(pose.view, pose.flip, pose.stride, pose.arm_swing, scale, center_x, top, pose.light, pose.light_side)


def draw_person(identity: Identity, pose: Pose, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The person at output size: (H, W, 3) float32 colour premultiplied by coverage, and
    (H, W) float32 coverage in [0, 1] (fraction of supersamples inside the person)."""
    hs, ws = height * SUPERSAMPLE, width * SUPERSAMPLE
    y, x = pixel_grid(hs, ws)
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
    canvas = BodyCanvas(np.broadcast_to(u[:, c0:c1], (r1 - r0, c1 - c0)), np.broadcast_to(v[r0:r1], (r1 - r0, c1 - c0)))
    _paint_body(canvas, identity, pose)
    half_width = 0.13 * identity.width
    shade = 1.0 - 0.25 * np.clip(canvas.u / half_width, -1.5, 1.5) ** 2 + 0.35 * pose.light_side * canvas.u / half_width
    colours = canvas.colours() * np.clip(shade, 0.45, 1.25)[..., None]
    rgb[r0 // s : r1 // s, c0 // s : c1 // s] = box_down(colours)
    coverage[r0 // s : r1 // s, c0 // s : c1 // s] = box_down((canvas.labels > 0).astype(np.float32))
    return rgb, coverage


def _upper_colour(canvas: BodyCanvas, identity: Identity, view: str, v0: float, v1: float, sleeve: bool) -> Fill:
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
        return Fill(c1, c2, None)
    return Fill(c1, c2, second)


def _lower_colour(canvas: BodyCanvas, identity: Identity, offset: np.ndarray | None) -> Fill:
    """Colours of trousers/shorts/skirt; ``offset`` is the signed outward distance from the leg
    axis (for side stripes), in leg radii."""
    c1, c2 = identity.lower, identity.lower_second
    if identity.lower_pattern == "side_stripe" and offset is not None:
        second = (offset > 0.35) & (offset < 0.8)
    elif identity.lower_pattern == "two_tone":
        second = canvas.v > 0.8
    else:
        return Fill(c1, c2, None)
    return Fill(c1, c2, second)


def _paint_body(c: BodyCanvas, ident: Identity, pose: Pose) -> None:
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
    c: BodyCanvas, ident: Identity, view: str, arm: tuple[tuple[float, float], tuple[float, float], float],
    radius: float, shoulder_v: float, torso_end: float,
) -> None:
    a, b, shade = arm
    limb, t = c.capsule(a, b, radius)
    sleeve_end = 1.0 if ident.long_sleeves else 0.35
    c.paint(limb, ident.skin, shade)
    c.paint(limb & (t <= sleeve_end), _upper_colour(c, ident, view, shoulder_v, torso_end, sleeve=True), shade)
    c.paint(c.ellipse(b[0], b[1] + 0.01, radius * 1.1, radius * 1.3), ident.skin, shade)
