"""Writing a generated domain to disk in the Market-1501 / DukeMTMC-reID folder layout.

``<out>/bounding_box_train`` holds the training identities; ``<out>/query`` one image per
(test identity, camera) wherever that camera saw the identity at least twice;
``<out>/bounding_box_test`` the rest of the test images plus ``0000`` distractors and ``-1``
junk. With ``camstyle=True``, ``<out>/camstyle/<stem>_fake_<j>.jpg`` holds every training image
re-rendered by every camera ``j`` (the exact oracle of camera-style transfer). ``synth.json``
is written first with ``"complete": false`` (marking the folder as generated output) and
rewritten last, atomically, as the commit point.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from training.core.errors import ReIDError
from training.core.fileio import atomic_write_bytes
from training.synth.domains import DomainSpec, get_domain
from training.synth.identity import Identity, make_identity
from training.synth.naming import NAMINGS, FrameStamp, camstyle_name, image_name
from training.synth.render import RenderedPerson, render_distractor, render_junk, render_person
from training.synth.seeding import Stream, rng_for

MAX_SIDE = 2048
"""Largest crop side in pixels: far beyond any re-identification input (Market's is 128x64)."""

FORMAT = "reid-synth"
VERSION = 1
MANIFEST = "synth.json"
CAMSTYLE_MANIFEST = "camstyle.json"
TRAIN_DIR, QUERY_DIR, GALLERY_DIR, CAMSTYLE_DIR = "bounding_box_train", "query", "bounding_box_test", "camstyle"
# Everything a previous run may have written; removed before a new run writes the same folder.
_OWNED_ENTRIES = (TRAIN_DIR, QUERY_DIR, GALLERY_DIR, CAMSTYLE_DIR, "market", "duke")
_CHUNK = 48  # images per task: large enough to amortise pickling, small enough to balance


@dataclass(frozen=True)
class SynthConfig:
    """What to generate for one domain. ``ids`` counts train + test identities; ``cameras``
    None means the domain's own number; ``naming`` None means the domain's own convention;
    ``size`` is (height, width) in pixels."""

    domain: str
    seed: int = 0
    ids: int = 200
    cameras: int | None = None
    images_per_id: int = 12
    size: tuple[int, int] = (128, 64)
    distractors: int = 100
    junk: int = 40
    naming: str | None = None
    camstyle: bool = False

    def spec(self) -> DomainSpec:
        """The domain with the requested number of cameras."""
        base = get_domain(self.domain)
        return base if self.cameras is None else base.with_cameras(self.cameras)

    def validate(self) -> None:
        """Raise ReIDError naming the first value that cannot produce a usable data set."""
        get_domain(self.domain)
        if self.seed < 0:
            raise ReIDError(f"seed must be >= 0, got {self.seed}")
        if not 2 <= self.ids <= 9999:
            raise ReIDError(f"ids must be in 2..9999 (half train, half test; pids have 4 digits), got {self.ids}")
        if self.cameras is not None and not 2 <= self.cameras <= 9:
            raise ReIDError(
                f"cameras must be in 2..9 (a query needs another camera; names hold one digit), got {self.cameras}"
            )
        if self.images_per_id < 3:
            raise ReIDError(
                f"images-per-id must be >= 3 (a query plus gallery images in two cameras), got {self.images_per_id}"
            )
        height, width = self.size
        if height < 16 or width < 8:
            raise ReIDError(f"image size must be at least 16x8 (height x width), got {height}x{width}")
        # A typo such as --width 64000 would otherwise exhaust memory in the renderer.
        if height > MAX_SIDE or width > MAX_SIDE:
            raise ReIDError(f"image size must be at most {MAX_SIDE}x{MAX_SIDE} (height x width), got {height}x{width}")
        if self.distractors < 0 or self.junk < 0:
            raise ReIDError(f"distractors and junk must be >= 0, got {self.distractors} and {self.junk}")
        if self.naming is not None and self.naming not in NAMINGS:
            raise ReIDError(f"naming must be one of {', '.join(NAMINGS)}, got {self.naming!r}")


class ImageJob(NamedTuple):
    """One file to render. ``kind``: person | camstyle | distractor | junk. ``pid`` is the
    identity drawn (for a distractor: its index); ``camid`` 1-based; ``path`` relative to the
    domain folder."""

    kind: str
    pid: int
    camid: int
    instance: int
    path: str


class SynthPlan(NamedTuple):
    """Every file of one domain, and the identities behind them."""

    spec: DomainSpec
    naming: str
    train_pids: tuple[int, ...]
    test_pids: tuple[int, ...]
    jobs: tuple[ImageJob, ...]

    def count(self, folder: str, kind: str | None = None) -> int:
        return sum(1 for j in self.jobs if j.path.startswith(folder + "/") and (kind is None or j.kind == kind))


class SynthSummary(NamedTuple):
    """What one domain's generation wrote."""

    root: Path
    domain: str
    images: int
    manifest: dict


class _Shot(NamedTuple):
    pid: int
    camid: int
    instance: int
    kind: str
    folder: str


def plan_dataset(config: SynthConfig) -> SynthPlan:
    """Decide every file of a domain (identities, split, cameras, names) without rendering.

    Deterministic in the config. pids are a sorted random subset of 1..max(1501, 2 * ids);
    the first half of a random permutation (rounded up) trains, the rest tests.
    """
    config.validate()
    spec = config.spec()
    naming = config.naming or spec.naming
    rng = rng_for(config.seed, spec.code, Stream.PLAN)
    pool = min(9999, max(1501, 2 * config.ids))
    pids = np.sort(rng.choice(np.arange(1, pool + 1), size=config.ids, replace=False))
    order = rng.permutation(config.ids)
    n_train = (config.ids + 1) // 2
    train_pids = tuple(sorted(int(pids[i]) for i in order[:n_train]))
    test_pids = tuple(sorted(int(pids[i]) for i in order[n_train:]))

    shots: list[_Shot] = []
    for pid in train_pids:
        for camid, instances in _cameras_of(rng, spec.num_cameras, config.images_per_id, test=False):
            shots += [_Shot(pid, camid, k, "person", TRAIN_DIR) for k in instances]
    for pid in test_pids:
        for camid, instances in _cameras_of(rng, spec.num_cameras, config.images_per_id, test=True):
            # Market's query: one image per (identity, camera); keep >= 1 in the gallery too.
            folders = [QUERY_DIR] + [GALLERY_DIR] * (len(instances) - 1) if len(instances) >= 2 else [GALLERY_DIR]
            shots += [_Shot(pid, camid, k, "person", f) for k, f in zip(instances, folders)]
    for index in range(config.distractors):
        shots.append(_Shot(index, int(rng.integers(1, spec.num_cameras + 1)), index, "distractor", GALLERY_DIR))
    for index in range(config.junk):
        pid = int(test_pids[int(rng.integers(len(test_pids)))])
        shots.append(_Shot(pid, int(rng.integers(1, spec.num_cameras + 1)), index, "junk", GALLERY_DIR))

    stamps = _frame_stamps(rng, shots, spec.num_cameras)
    jobs: list[ImageJob] = []
    for shot, stamp in zip(shots, stamps):
        file_pid = {"person": shot.pid, "distractor": 0, "junk": -1}[shot.kind]
        name = image_name(naming, file_pid, stamp)
        jobs.append(ImageJob(shot.kind, shot.pid, shot.camid, shot.instance, f"{shot.folder}/{name}"))
        if config.camstyle and shot.folder == TRAIN_DIR:
            stem = name[: -len(".jpg")]
            jobs += [
                ImageJob("camstyle", shot.pid, j, shot.instance, f"{CAMSTYLE_DIR}/{camstyle_name(stem, j)}")
                for j in range(1, spec.num_cameras + 1)
            ]
    return SynthPlan(spec, naming, train_pids, test_pids, tuple(jobs))


def _cameras_of(
    rng: np.random.Generator, num_cameras: int, images: int, *, test: bool
) -> list[tuple[int, list[int]]]:
    """Which cameras saw one identity and which instance numbers each recorded.

    Every identity is seen by >= 2 cameras; a test identity also has a camera with >= 2 images
    so it has a query with a same-camera partner and a cross-camera match in the gallery."""
    most = min(num_cameras, images - 1 if test else images)
    k = int(rng.integers(2, most + 1))
    cameras = np.sort(rng.choice(np.arange(1, num_cameras + 1), size=k, replace=False))
    counts = 1 + rng.multinomial(images - k, np.full(k, 1.0 / k))
    instances = iter(rng.permutation(images).tolist())
    return [(int(c), sorted(next(instances) for _ in range(int(n)))) for c, n in zip(cameras, counts)]


def _frame_stamps(rng: np.random.Generator, shots: Sequence[_Shot], num_cameras: int) -> list[FrameStamp]:
    """Per camera, a shuffled timeline of increasing frame numbers split into up to six
    sequences, as a camera's recordings would give; detections get box 01, others 02-08."""
    stamps: list[FrameStamp | None] = [None] * len(shots)
    for camid in range(1, num_cameras + 1):
        members = [i for i, s in enumerate(shots) if s.camid == camid]
        if not members:
            continue
        members = [members[i] for i in rng.permutation(len(members))]
        gap = max(2, 900_000 // len(members))
        frames = np.cumsum(rng.integers(1, gap, size=len(members)))
        for position, (i, frame) in enumerate(zip(members, frames)):
            box = 1 if shots[i].kind == "person" else int(rng.integers(2, 9))
            sequence = 1 + position * 6 // len(members)
            stamps[i] = FrameStamp(camid, sequence, int(frame), box)
    return [s for s in stamps if s is not None]


# ----------------------------------------------------------------------------------------------
# Rendering jobs (in worker processes)


@lru_cache(maxsize=4096)
def _identity(spec: DomainSpec, seed: int, pid: int) -> Identity:
    return make_identity(spec, seed, pid)


def render_job(spec: DomainSpec, seed: int, size: tuple[int, int], job: ImageJob) -> RenderedPerson:
    """The image one job describes (pixels before JPEG)."""
    if job.kind in ("person", "camstyle"):
        return render_person(spec, _identity(spec, seed, job.pid), job.camid, job.instance, seed=seed, size=size)
    if job.kind == "distractor":
        return render_distractor(spec, job.camid, job.pid, seed=seed, size=size)
    if job.kind == "junk":
        return render_junk(spec, _identity(spec, seed, job.pid), job.camid, job.instance, seed=seed, size=size)
    raise ValueError(f"unknown job kind {job.kind!r}")


def encode_jpeg(rendered: RenderedPerson) -> bytes:
    """JPEG bytes at the camera's quality (deterministic for equal pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(rendered.image).save(buffer, format="JPEG", quality=rendered.jpeg_quality)
    return buffer.getvalue()


def _render_chunk(task: tuple[DomainSpec, int, tuple[int, int], str, tuple[ImageJob, ...]]) -> int:
    spec, seed, size, root, jobs = task
    for job in jobs:
        # Plain writes: images are many and cheap to redo; the manifest, written last and
        # atomically, is what says the folder is complete.
        with open(os.path.join(root, job.path), "wb") as fh:
            fh.write(encode_jpeg(render_job(spec, seed, size, job)))
    return len(jobs)


# ----------------------------------------------------------------------------------------------
# Output folders


def prepare_output(out: Path) -> None:
    """Make ``out`` ready for writing: create it, or clear a previous reid-synth output.

    Raises ReIDError for a file, or a non-empty folder that holds no ``synth.json`` of ours."""
    if out.exists() and not out.is_dir():
        raise ReIDError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not _is_synth_output(out):
            raise ReIDError(
                f"output folder {out} is not empty and was not written by reid-synth (no {MANIFEST}); "
                "choose an empty or new folder"
            )
        for name in _OWNED_ENTRIES:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        (out / MANIFEST).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _is_synth_output(out: Path) -> bool:
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def _write_json(path: Path, payload: dict) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _manifest(config: SynthConfig, plan: SynthPlan, complete: bool) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "complete": complete,
        "domain": config.domain,
        "seed": config.seed,
        "naming": plan.naming,
        "size": {"height": config.size[0], "width": config.size[1]},
        "cameras": plan.spec.num_cameras,
        "images_per_id": config.images_per_id,
        "ids": {"total": config.ids, "train": len(plan.train_pids), "test": len(plan.test_pids)},
        "counts": {
            TRAIN_DIR: plan.count(TRAIN_DIR),
            QUERY_DIR: plan.count(QUERY_DIR),
            GALLERY_DIR: plan.count(GALLERY_DIR),
            "gallery_identity_images": plan.count(GALLERY_DIR, "person"),
            "distractors": plan.count(GALLERY_DIR, "distractor"),
            "junk": plan.count(GALLERY_DIR, "junk"),
            CAMSTYLE_DIR: plan.count(CAMSTYLE_DIR),
        },
        "camstyle": config.camstyle,
        "pids": {"train": list(plan.train_pids), "test": list(plan.test_pids)},
    }


def _camstyle_manifest(plan: SynthPlan) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "source": TRAIN_DIR,
        "pattern": "<stem>_fake_<j>.jpg",
        "cameras": list(range(1, plan.spec.num_cameras + 1)),
        "images": plan.count(CAMSTYLE_DIR),
        "includes_own_camera": True,
        "oracle": "exact: the same identity, pose and placement re-rendered by camera j "
        "(scene, occluder, exposure, colour cast, resolution, blur, noise, JPEG of camera j); "
        "<stem>_fake_<j> for the image's own camera j is byte-identical to the original",
    }


def _chunks(jobs: Sequence[ImageJob], size: int) -> Iterator[tuple[ImageJob, ...]]:
    for start in range(0, len(jobs), size):
        yield tuple(jobs[start : start + size])


def write_domains(
    out: str | os.PathLike[str], configs: Sequence[SynthConfig], *, workers: int = 2, progress: bool = True
) -> list[SynthSummary]:
    """Generate each config's domain. One config writes into ``out`` itself; several write
    ``out/<domain>`` each, with a top-level ``synth.json`` listing them.

    Output bytes do not depend on ``workers``. Raises ReIDError for bad values or an output
    folder that is neither empty nor a previous reid-synth output.
    """
    if workers < 1:
        raise ReIDError(f"workers must be >= 1, got {workers}")
    if not configs:
        raise ReIDError("nothing to generate: no domain given")
    for config in configs:
        config.validate()
    root = Path(out)
    prepare_output(root)
    single = len(configs) == 1
    top = {"format": FORMAT, "version": VERSION, "complete": False, "domains": [c.domain for c in configs]}
    if not single:
        _write_json(root / MANIFEST, top)

    plans = [plan_dataset(c) for c in configs]
    folders = [root if single else root / c.domain for c in configs]
    for config, plan, folder in zip(configs, plans, folders):
        folder.mkdir(parents=True, exist_ok=True)
        for sub in (TRAIN_DIR, QUERY_DIR, GALLERY_DIR) + ((CAMSTYLE_DIR,) if config.camstyle else ()):
            (folder / sub).mkdir(exist_ok=True)
        _write_json(folder / MANIFEST, _manifest(config, plan, complete=False))

    tasks = [
        (plan.spec, config.seed, config.size, str(folder), chunk)
        for config, plan, folder in zip(configs, plans, folders)
        for chunk in _chunks(plan.jobs, _CHUNK)
    ]
    total = sum(len(plan.jobs) for plan in plans)
    with tqdm(total=total, unit="img", desc="reid-synth", disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                bar.update(_render_chunk(task))
        else:
            # spawn: workers start clean (no inherited threads or locks from the caller).
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for done in pool.imap_unordered(_render_chunk, tasks):
                    bar.update(done)

    summaries = []
    for config, plan, folder in zip(configs, plans, folders):
        if config.camstyle:
            _write_json(folder / CAMSTYLE_DIR / CAMSTYLE_MANIFEST, _camstyle_manifest(plan))
        manifest = _manifest(config, plan, complete=True)
        _write_json(folder / MANIFEST, manifest)
        summaries.append(SynthSummary(folder, config.domain, len(plan.jobs), manifest))
    if not single:
        _write_json(root / MANIFEST, {**top, "complete": True})
    return summaries

