"""A generated person's identity: what they wear and carry, and how they are built.

Identity is carried by appearance only (clothing colours and patterns from head to feet,
accessories, body proportions), drawn from a domain's statistics with a stream keyed by
``(seed, domain, pid)``: the same pid always looks the same, however many pids are drawn.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from training.synth.domains import RGB, Choice, DomainSpec, Palette
from training.synth.seeding import Stream, rng_for


@dataclass(frozen=True)
class Identity:
    """One person's appearance. Lengths are fractions of the person's height (head to feet).

    ``upper_pattern``: plain | stripes | checks | two_tone | logo | open (a coat worn open over a
    shirt of ``upper_second``). ``lower_garment``: trousers | shorts | skirt; ``lower_pattern``:
    plain | side_stripe | two_tone. ``pattern_period`` is the stripe/check period.
    """

    pid: int
    domain: str
    skin: RGB
    hair: RGB
    upper: RGB
    upper_second: RGB
    upper_pattern: str
    pattern_period: float
    long_sleeves: bool
    coat: bool
    lower: RGB
    lower_second: RGB
    lower_garment: str
    lower_pattern: str
    shoes: RGB
    long_hair: bool
    hat: RGB | None
    scarf: RGB | None
    backpack: RGB | None
    bag: RGB | None
    bag_side: int
    height: float
    width: float
    hip: float


def make_identity(spec: DomainSpec, seed: int, pid: int, stream: Stream = Stream.IDENTITY) -> Identity:
    """The identity ``pid`` of domain ``spec`` under ``seed``; deterministic in those three.

    ``stream`` lets distractor people (pid 0 on disk) be drawn from their own keys.
    """
    rng = rng_for(seed, spec.code, stream, pid)
    upper_name, upper = _draw_colour(rng, spec.upper_palette)
    # A second garment colour that differs from the first, for patterns and open coats.
    _, upper_second = _draw_colour(rng, spec.upper_palette, avoid=upper_name)
    lower_name, lower = _draw_colour(rng, spec.lower_palette)
    _, lower_second = _draw_colour(rng, spec.lower_palette, avoid=lower_name)
    coat = bool(rng.random() < spec.coat_prob)
    return Identity(
        pid=pid,
        domain=spec.name,
        skin=_draw_colour(rng, spec.skin_palette, jitter=0.5)[1],
        hair=_draw_colour(rng, spec.hair_palette, jitter=0.5)[1],
        upper=upper,
        upper_second=upper_second,
        upper_pattern=_draw_choice(rng, spec.upper_pattern),
        pattern_period=float(rng.uniform(0.035, 0.07)),
        long_sleeves=coat or bool(rng.random() < spec.long_sleeve_prob),
        coat=coat,
        lower=lower,
        lower_second=lower_second,
        lower_garment="trousers" if coat else _draw_choice(rng, spec.lower_garment),
        lower_pattern=_draw_choice(rng, spec.lower_pattern),
        shoes=_draw_colour(rng, spec.shoe_palette)[1],
        long_hair=bool(rng.random() < spec.long_hair_prob),
        hat=_draw_colour(rng, spec.accessory_palette)[1] if rng.random() < spec.hat_prob else None,
        scarf=_draw_colour(rng, spec.accessory_palette)[1] if rng.random() < spec.scarf_prob else None,
        backpack=_draw_colour(rng, spec.accessory_palette)[1] if rng.random() < spec.backpack_prob else None,
        bag=_draw_colour(rng, spec.accessory_palette)[1] if rng.random() < spec.bag_prob else None,
        bag_side=int(rng.choice((-1, 1))),
        height=float(rng.uniform(*spec.height_range)),
        width=float(rng.uniform(*spec.width_range)),
        hip=float(rng.uniform(*spec.hip_range)),
    )


def sample_identities(spec: DomainSpec, seed: int, pids: list[int]) -> list[Identity]:
    """``make_identity`` for each pid, in the given order."""
    return [make_identity(spec, seed, pid) for pid in pids]


def _draw_choice(rng: np.random.Generator, choice: Choice) -> str:
    return choice.names()[int(rng.choice(len(choice.options), p=choice.probabilities()))]


def _draw_colour(
    rng: np.random.Generator, palette: Palette, avoid: str | None = None, jitter: float = 1.0
) -> tuple[str, RGB]:
    """A palette colour jittered in hue, saturation and value so that two people who both wear
    "red" are still slightly different, as real garments are."""
    probs = palette.probabilities()
    if avoid is not None and len(probs) > 1:
        probs = np.where(np.array(palette.names()) == avoid, 0.0, probs)
        probs = probs / probs.sum()
    index = int(rng.choice(len(probs), p=probs))
    name, rgb, _ = palette.colours[index]
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    h = (h + rng.normal(0.0, 0.025 * jitter)) % 1.0
    s = float(np.clip(s * rng.uniform(1.0 - 0.2 * jitter, 1.0 + 0.1 * jitter), 0.0, 1.0))
    v = float(np.clip(v * rng.uniform(1.0 - 0.15 * jitter, 1.0 + 0.15 * jitter), 0.02, 1.0))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return name, (float(r), float(g), float(b))
