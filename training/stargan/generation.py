"""Translating every target training image to every camera, in the layout ``reid-train
--camstyle`` reads (the one ``reid-synth --camstyle`` writes):

    <out>/<stem>_fake_<j>.jpg    j = 1..C, camera numbers as in file names
    <out>/camstyle.json          source folder, name pattern, cameras, count (written last)

plus a sample sheet PNG (originals beside their translations) for a person to look at.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.core.datasets import UnlabelledSample
from training.core.errors import ReIDError
from training.core.fileio import atomic_write_bytes, atomic_write_with
from training.stargan.data import CameraImages, to_uint8
from training.stargan.model import Generator
from training.synth.naming import camstyle_name
from training.synth.writer import CAMSTYLE_MANIFEST
from training.transforms import read_rgb

FORMAT = "reid-camstyle"
VERSION = 1
PATTERN = "<stem>_fake_<j>.jpg"
JPEG_QUALITY = 95  # with 4:4:4 chroma: colour is what the translation changes
_MIN_CELL_WIDTH = 64


class GenerateSummary(NamedTuple):
    out: Path
    images: int  # originals translated
    files: int  # images written = images x cameras
    seconds: float
    manifest: dict


def prepare_camstyle_folder(out: Path) -> None:
    """Create ``out``, or clear the images of a previous reid-camstyle output there.

    ReIDError for a file, or a non-empty folder that reid-camstyle did not write.
    """
    if out.exists() and not out.is_dir():
        raise ReIDError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            previous = json.loads((out / CAMSTYLE_MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or previous.get("format") != FORMAT:
            raise ReIDError(
                f"output folder {out} is not empty and was not written by reid-camstyle "
                f"(no {CAMSTYLE_MANIFEST} of ours); choose an empty or new folder"
            )
        (out / CAMSTYLE_MANIFEST).unlink()  # the folder is incomplete until it is rewritten
        for stale in out.glob("*_fake_*.jpg"):
            stale.unlink()
    out.mkdir(parents=True, exist_ok=True)


@torch.no_grad()
def generate_camstyle(
    generator: Generator,
    samples: Sequence[UnlabelledSample],
    out: str | os.PathLike[str],
    *,
    source: Path,
    device: torch.device,
    batch_size: int = 16,
    workers: int = 2,
    generator_info: dict[str, object] | None = None,
    progress: bool = True,
) -> GenerateSummary:
    """Write ``<out>/<stem>_fake_<j>.jpg`` for every sample and camera j = 1..C, each at the
    original image's size (bilinear from the generator's), JPEG quality 95, then
    ``camstyle.json`` as the commit point. ``source`` is the folder the samples came from.
    """
    if batch_size < 1 or workers < 0:
        raise ReIDError(f"batch size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    num_cameras = generator.num_cameras
    beyond = [s for s in samples if s.camid >= num_cameras]
    if beyond:
        raise ReIDError(
            f"{beyond[0].path.name} is from camera c{beyond[0].camid + 1} but the StarGAN knows "
            f"cameras c1..c{num_cameras}: generate with a StarGAN trained on this data set"
        )
    folder = Path(out)
    prepare_camstyle_folder(folder)
    generator = generator.to(device).eval()
    dataset = CameraImages(samples, generator.image_size, flip=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    began = time.perf_counter()
    with tqdm(total=len(samples) * num_cameras, desc="camstyle", unit="img", disable=not progress) as bar:
        for batch in loader:
            images = batch.image.to(device)
            for camid in range(num_cameras):
                target = torch.full((images.shape[0],), camid, dtype=torch.long, device=device)
                pixels = to_uint8(generator(images, target)).numpy()
                for row, index in enumerate(batch.index.tolist()):
                    stem = samples[index].path.stem
                    picture = Image.fromarray(pixels[row])
                    original = (int(batch.original_width[row]), int(batch.original_height[row]))
                    if picture.size != original:
                        picture = picture.resize(original, resample=Image.Resampling.BILINEAR)
                    # Plain writes: camstyle.json, written last and atomically, marks completion.
                    picture.save(folder / camstyle_name(stem, camid + 1), format="JPEG", quality=JPEG_QUALITY, subsampling=0)
                bar.update(images.shape[0])
            bar.set_postfix(img_per_s=f"{bar.n / max(time.perf_counter() - began, 1e-9):.1f}")
    seconds = time.perf_counter() - began
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "source": str(source.resolve()),
        "pattern": PATTERN,
        "cameras": list(range(1, num_cameras + 1)),
        "images": len(samples) * num_cameras,
        "includes_own_camera": True,
        "generator": dict(generator_info or {}),
    }
    atomic_write_bytes(folder / CAMSTYLE_MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return GenerateSummary(folder, len(samples), len(samples) * num_cameras, seconds, manifest)


def write_sample_sheet(
    originals: Sequence[Path], camstyle_dir: Path, cameras: Sequence[int], path: str | os.PathLike[str]
) -> Path:
    """A PNG grid: one row per original, columns = the original then its translation to each
    camera (read back from ``camstyle_dir``, so the sheet shows exactly what was written).

    Every cell is the first original's size (enlarged to >= 64 px wide); a header row names
    the columns.
    """
    if not originals:
        raise ReIDError("no images to put on the sample sheet")
    cell_w, cell_h = read_rgb(originals[0]).size
    zoom = -(-_MIN_CELL_WIDTH // cell_w)  # small crops are enlarged so a person can see them
    cell_w, cell_h = cell_w * zoom, cell_h * zoom
    header, gap = 14, 2
    columns = ["orig", *(f"c{j}" for j in cameras)]
    sheet = Image.new("RGB", (len(columns) * (cell_w + gap) + gap, header + len(originals) * (cell_h + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for col, label in enumerate(columns):
        draw.text((gap + col * (cell_w + gap) + 2, 1), label, fill="black")
    for row, original in enumerate(originals):
        files = [original, *(camstyle_dir / camstyle_name(original.stem, j) for j in cameras)]
        for col, file in enumerate(files):
            tile = read_rgb(file).resize((cell_w, cell_h), resample=Image.Resampling.BILINEAR)
            sheet.paste(tile, (gap + col * (cell_w + gap), header + gap + row * (cell_h + gap)))
    target = Path(path)
    atomic_write_with(target, lambda fh: sheet.save(fh, format="PNG"))
    return target


def sheet_rows(samples: Sequence[UnlabelledSample], rows: int) -> list[Path]:
    """Up to ``rows`` originals, cycling over cameras (the first image of each camera, then the
    second...), so every camera's own style appears among the originals."""
    by_camera: dict[int, list[Path]] = {}
    for sample in samples:
        by_camera.setdefault(sample.camid, []).append(sample.path)
    picked: list[Path] = []
    depth = 0
    while len(picked) < rows and depth < max(len(v) for v in by_camera.values()):
        for camid in sorted(by_camera):
            if depth < len(by_camera[camid]) and len(picked) < rows:
                picked.append(by_camera[camid][depth])
        depth += 1
    return picked
