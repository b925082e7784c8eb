"""Does a few minutes of CPU training move the camera-style StarGAN the right way?

Generates a small ``market`` domain with its camera-style oracle (``reid-synth --camstyle``),
trains a reduced StarGAN (small images, thin networks, the StarGAN recipe otherwise) for a
bounded time, and compares the initial networks (iteration 0, same seed) with the trained ones:

* the discriminator's camera accuracy on real training images and on held-out real images
  (query + gallery of the same cameras);
* the accuracy of that classifier on translated images for their *target* camera (does the
  generator produce the requested camera style, as the discriminator sees it?);
* the cycle reconstruction L1 |x - G(G(x, j), c)| in [-1, 1] units;
* against the oracle (the same person re-rendered by camera j): L1(G(x, j), oracle_j), next to
  L1(x, oracle_j) of simply copying the input.

Then times the full-size generator (256x128, width 64, 6 residual blocks) in images/s, and
writes ``benchmarks/results/stargan.md`` and a sample sheet PNG beside it.

    python benchmarks/stargan_smoke.py --minutes 4      # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

from training.core.datasets import load_unlabelled_images
from training.stargan import (
    Discriminator,
    Generator,
    StarGANConfig,
    TrainConfig,
    generate_camstyle,
    load_stargan,
    sheet_rows,
    train_stargan,
    write_sample_sheet,
)
from training.stargan.data import CameraImages
from training.synth.writer import SynthConfig, write_domains

RESULTS = Path(__file__).resolve().parent / "results"


class Scores(NamedTuple):
    real_train_acc: float  # D camera accuracy on real training images
    real_heldout_acc: float  # ... on query + gallery images
    fake_target_acc: float  # D says "camera j" for G(x, j)
    rec_l1: float  # |x - G(G(x, j), c)|, [-1, 1] units
    oracle_l1: float  # |G(x, j) - oracle_j|, j != c
    copy_l1: float  # |x - oracle_j|, j != c (the do-nothing baseline)


def _stack(samples: list, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = CameraImages(samples, size, flip=False)
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it.image for it in items]), torch.tensor([it.camid for it in items])


@torch.no_grad()
def score(generator: Generator, discriminator: Discriminator, data: Path, size: tuple[int, int]) -> Scores:
    generator.eval()
    train = load_unlabelled_images(data)
    heldout = [s for split in ("query", "bounding_box_test") for s in load_unlabelled_images(data / split)
               if not s.path.name.startswith(("0000", "-1"))]
    x, c = _stack(train, size)
    xh, ch = _stack(heldout, size)
    num_cameras = generator.num_cameras
    accuracy = lambda images, labels: (discriminator(images).logits.argmax(1) == labels).float().mean().item()  # noqa: E731
    fake_hits, rec, oracle, copy, pairs = 0.0, 0.0, 0.0, 0.0, 0
    for j in range(num_cameras):
        target = torch.full_like(c, j)
        fake = generator(x, target)
        fake_hits += accuracy(fake, target) / num_cameras
        rec += (x - generator(fake, c)).abs().mean().item() / num_cameras
        other = c != j  # the oracle for the own camera is the input itself
        oracle_samples = [s._replace(path=data / "camstyle" / f"{s.path.stem}_fake_{j + 1}.jpg")
                          for s, keep in zip(train, other.tolist()) if keep]
        truth, _ = _stack(oracle_samples, size)
        oracle += (fake[other] - truth).abs().mean(dim=(1, 2, 3)).sum().item()
        copy += (x[other] - truth).abs().mean(dim=(1, 2, 3)).sum().item()
        pairs += int(other.sum())
    return Scores(accuracy(x, c), accuracy(xh, ch), fake_hits, rec, oracle / pairs, copy / pairs)


@torch.no_grad()
def generator_throughput(batch: int, repeats: int) -> float:
    """Images/s of the default generator (256x128, 6 cameras) on the CPU, after one warm-up."""
    generator = Generator(StarGANConfig(num_cameras=6)).eval()
    images, cams = torch.rand(batch, 3, 256, 128) * 2 - 1, torch.arange(batch) % 6
    generator(images, cams)
    began = time.perf_counter()
    for _ in range(repeats):
        generator(images, cams)
    return batch * repeats / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="training time budget (default: %(default)s)")
    parser.add_argument("--ids", type=int, default=60, help="market identities, train + test (default: %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, default=(32, 16), metavar=("H", "W"), help="image size (default: 32 16)")
    parser.add_argument("--width", type=int, default=16, help="generator and discriminator base channels (default: %(default)s)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default: %(default)s; on a busy shared CPU two threads ran 15x slower than one)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "stargan.md", help="markdown report (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = tuple(args.size)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "market"
        write_domains(data, [SynthConfig(domain="market", ids=args.ids, images_per_id=8, size=size,
                                         distractors=0, junk=0, camstyle=True)], workers=2, progress=False)
        samples = load_unlabelled_images(data)
        model = StarGANConfig(num_cameras=6, image_size=size, g_width=args.width, g_res_blocks=6,
                              d_width=args.width, d_downsamples=3)
        recipe = TrainConfig(iters=30, batch_size=16, workers=1, seed=0)

        # Calibrate: seconds per iteration, then as many iterations as the budget holds.
        calib = train_stargan(samples, model, recipe, Path(tmp) / "calib", device=torch.device("cpu"),
                              progress=False, log=lambda _: None)
        iters = max(10, int(args.minutes * 60 / (calib.seconds / 30)) // 10 * 10)
        recipe = TrainConfig(iters=iters, batch_size=16, workers=1, seed=0, checkpoint_every=iters)

        torch.manual_seed(recipe.seed)  # the trainer's initial weights
        initial = score(Generator(model), Discriminator(model), data, size)
        print(f"training {iters} iterations on {len(samples)} images ({calib.seconds / 30:.3f} s/it measured)", file=sys.stderr)
        # The calibrated length sets the schedule (decay over its last half); the time budget is a
        # hard cap, since the shared machine's speed changes while it runs.
        summary = train_stargan(samples, model, recipe, Path(tmp) / "run", device=torch.device("cpu"),
                                max_seconds=args.minutes * 60)
        done = summary.iteration
        state = load_stargan(summary.checkpoint)
        discriminator = Discriminator(model)
        discriminator.load_state_dict(state.discriminator)
        generator = state.build_generator()
        trained = score(generator, discriminator, data, size)

        camstyle = Path(tmp) / "camstyle"
        gen = generate_camstyle(generator, samples, camstyle, source=data / "bounding_box_train",
                                device=torch.device("cpu"), workers=1, progress=False)
        sheet = args.out.with_name("stargan_samples.png")
        write_sample_sheet(sheet_rows(samples, 6), camstyle, list(range(1, 7)), sheet)
        oracle_sheet = args.out.with_name("stargan_oracle.png")
        write_sample_sheet(sheet_rows(samples, 6), data / "camstyle", list(range(1, 7)), oracle_sheet)
        throughput = generator_throughput(batch=8, repeats=3)

    rows = [
        ("D camera accuracy, real train images", "real_train_acc", "{:.1%}"),
        ("D camera accuracy, held-out real images (query + gallery)", "real_heldout_acc", "{:.1%}"),
        ("D accuracy on G(x, j) for target camera j", "fake_target_acc", "{:.1%}"),
        ("cycle reconstruction, mean abs(x - G(G(x, j), c))", "rec_l1", "{:.3f}"),
        ("distance to the oracle, mean abs(G(x, j) - oracle_j), j != c", "oracle_l1", "{:.3f}"),
    ]
    lines = [
        "# StarGAN camera-style smoke benchmark",
        "",
        f"`python benchmarks/stargan_smoke.py --minutes {args.minutes:g}` on {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"torch {torch.__version__}, {args.threads} threads.",
        "",
        f"- data: generated `market`, {args.ids} identities, {len(samples)} training images, 6 cameras, {size[0]}x{size[1]}",
        f"- networks: {size[0]}x{size[1]}, width {args.width}, 6 residual blocks, 3 discriminator downsamples; "
        "StarGAN recipe otherwise (WGAN-GP, lambda_cls 1, lambda_rec 10, lambda_gp 10, Adam 1e-4 (0.5, 0.999), "
        "n_critic 5, batch 16, linear decay over the last half)",
        f"- trained {done} of {iters} scheduled iterations ({done // recipe.n_critic} generator steps) in "
        f"{summary.seconds:.0f} s ({done / summary.seconds:.2f} it/s; calibration had measured "
        f"{calib.seconds / 30:.3f} s/it)",
        "",
        "| measure | iteration 0 | trained | chance / baseline |",
        "| --- | ---: | ---: | ---: |",
    ]
    baselines = {"real_train_acc": "16.7%", "real_heldout_acc": "16.7%", "fake_target_acc": "16.7%",
                 "rec_l1": "0", "oracle_l1": f"{initial.copy_l1:.3f} (copying x)"}
    for label, key, fmt in rows:
        lines.append(f"| {label} | {fmt.format(getattr(initial, key))} | {fmt.format(getattr(trained, key))} | {baselines[key]} |")
    lines += [
        "",
        f"Generation of the {gen.files} camera-style files ({size[0]}x{size[1]}, JPEG, 1 decoding worker): "
        f"{gen.files / gen.seconds:.0f} images/s.",
        f"Generator throughput at 256x128 (width 64, 6 residual blocks, batch 8, forward only): "
        f"{throughput:.1f} images/s on the CPU.",
        "",
        f"Sample sheet of the trained generator: `{sheet.name}` (rows: a training image per camera; columns: the "
        f"original, then cameras 1-6); the same rows from the exact oracle: `{oracle_sheet.name}`.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
