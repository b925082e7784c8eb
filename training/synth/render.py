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

This module composes the parts: ``canvas`` (sizes, pixel grids, supersampling, the body's label
map), ``person`` (pose and body painting) and ``camera`` (scene, occluder, imaging chain).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from training.synth.camera import add_noise, draw_occluder, draw_scene, expose, optics
from training.synth.canvas import DEFAULT_SIZE
from training.synth.domains import CameraStyle, DomainSpec
from training.synth.identity import Identity, make_identity
from training.synth.person import Pose, draw_person, replace_placement, sample_pose
from training.synth.seeding import Stream, rng_for

__all__ = [
    "DEFAULT_SIZE", "Pose", "RenderedPerson", "render_camstyle", "render_distractor", "render_junk",
    "render_person", "render_scene", "sample_pose",
]


class RenderedPerson(NamedTuple):
    """``image``: (H, W, 3) uint8 RGB. ``mask``: (H, W) bool, the pixels where the person was
    drawn (before any occluder of the scene). ``jpeg_quality``: the camera's JPEG quality, to be
    used when the image is saved (the returned pixels are not yet JPEG-compressed)."""

    image: np.ndarray
    mask: np.ndarray
    jpeg_quality: int


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
    pose = replace_placement(
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
    pose = replace_placement(
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
    canvas = draw_scene(camera.scene, camera_rng, height, width)
    occluder = draw_occluder(camera, camera_rng, height, width)
    gain = camera.gain * float(np.exp(camera_rng.normal(0.0, 0.04)))
    mask = np.zeros((height, width), dtype=bool)
    light = 1.0
    if identity is not None and pose is not None:
        # The person is drawn supersampled and box-filtered: colour premultiplied by coverage.
        person, coverage = draw_person(identity, pose, height, width)
        canvas = person + (1.0 - coverage[..., None]) * canvas
        mask = coverage >= 0.5
        light = pose.light
    if occluder is not None:
        occ_mask, occ_colour = occluder
        canvas[occ_mask] = occ_colour
    canvas = expose(canvas, camera, gain * light)
    image = optics(canvas, camera, height, width)
    image = add_noise(image, camera.noise, camera_rng)
    return RenderedPerson(image=image, mask=mask, jpeg_quality=camera.jpeg_quality)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(s) for s in size)
    if height < 16 or width < 8:
        raise ValueError(f"image size must be at least 16x8 (height x width), got {height}x{width}")
    return height, width


def _check_camid(spec: DomainSpec, camid: int) -> None:
    if not 1 <= camid <= spec.num_cameras:
        raise ValueError(f"camid must be in 1..{spec.num_cameras} for domain {spec.name!r}, got {camid}")
