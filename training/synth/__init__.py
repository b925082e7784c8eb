"""Procedural pedestrian data that behaves like Market-1501 and DukeMTMC-reID (numpy + PIL only).

Identity is carried by appearance (clothing colours and patterns, accessories, build); the
camera by image style (exposure, colour cast, blur, noise, JPEG, scene). The camera-style oracle
re-renders the same person and pose under every camera of the domain.
"""

from training.synth.domains import DOMAINS, DUKE, MARKET, CameraStyle, DomainSpec, SceneStyle, get_domain
from training.synth.identity import Identity, make_identity, sample_identities
from training.synth.person import Pose, sample_pose
from training.synth.render import (
    RenderedPerson,
    render_camstyle,
    render_distractor,
    render_junk,
    render_person,
    render_scene,
)
from training.synth.writer import SynthConfig, SynthPlan, SynthSummary, plan_dataset, write_domains

__all__ = [
    "DOMAINS", "DUKE", "MARKET", "CameraStyle", "DomainSpec", "SceneStyle", "get_domain",
    "Identity", "make_identity", "sample_identities",
    "Pose", "RenderedPerson", "render_camstyle", "render_distractor", "render_junk", "render_person",
    "render_scene", "sample_pose",
    "SynthConfig", "SynthPlan", "SynthSummary", "plan_dataset", "write_domains",
]
