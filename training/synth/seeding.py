"""Random streams keyed by what they decide, so every image is reproducible on its own.

An image's pixels depend only on its keys (seed, domain, pid, camera, instance), never on the
order in which a pool of processes happens to render it.
"""

from __future__ import annotations

import enum

import numpy as np


class Stream(enum.IntEnum):
    """What a random stream decides; part of the key so streams never overlap."""

    IDENTITY = 1  # clothes, accessories, body proportions of one pid
    POSE = 2  # per-instance geometry: view, stride, arm swing, flip, placement, lighting
    CAMERA = 3  # per-image camera nuisance: background shift, noise, occluder, exposure jitter
    PLAN = 4  # which pids exist, train/test split, cameras and counts per pid
    DISTRACTOR = 5  # people and scenes that belong to no identity
    JUNK = 6  # badly cropped fragments


def rng_for(seed: int, domain_code: int, stream: Stream, *keys: int) -> np.random.Generator:
    """A generator determined by ``(seed, domain, stream, *keys)``; negative keys are allowed."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    entropy = [int(seed), int(domain_code) & 0xFFFFFFFF, int(stream)]
    entropy += [(int(k) + (1 << 31)) & 0xFFFFFFFF for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))
