"""``reid-camstyle``: train the camera-style StarGAN on the target domain and write every
training image translated to every camera (docs/camstyle.md)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from training.core.datasets import SPLIT_FOLDERS, UnlabelledSample, load_unlabelled_images
from training.core.cliargs import ArgumentParser, add_device_argument, positive_int
from training.core.errors import ReIDError, run_cli
from training.distributed import resolve_device
from training.stargan.checkpoint import CHECKPOINT_NAME, load_stargan
from training.stargan.data import count_cameras
from training.stargan.generation import generate_camstyle, sheet_rows, write_sample_sheet
from training.stargan.model import StarGANConfig
from training.stargan.trainer import TrainConfig, train_stargan

PROG = "reid-camstyle"
SHEET_PATH = Path("preview") / "sample_sheet.png"

# option dest -> (field of StarGANConfig or TrainConfig); None on the command line means
# "the checkpoint's value" with --resume and the default otherwise.
_MODEL_OPTIONS = {"image_size": "image_size", "g_width": "g_width", "res_blocks": "g_res_blocks",
                  "d_width": "d_width", "d_downsamples": "d_downsamples"}
_TRAIN_OPTIONS = {f.name: f.name for f in fields(TrainConfig)}


def parse_size(text: str) -> tuple[int, int]:
    """``"256x128"`` -> (256, 128) = (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 256x128, got {text!r}")
    height, width = (int(p) for p in parts)
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"height and width must be >= 1, got {text!r}")
    return height, width


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True,
        help="target domain: a Market-1501 / DukeMTMC-reID root (its bounding_box_train is read) or a folder of images",
    )
    parser.add_argument("--layout", choices=["auto", "market1501", "dukemtmc"], default="auto",
                        help="file name pattern (default: %(default)s, from the first name)")
    add_device_argument(parser, "auto", "the StarGAN")
    parser.add_argument("--workers", type=int, default=None, help="image-decoding processes (default: 2)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")


def build_parser() -> argparse.ArgumentParser:
    model, recipe = StarGANConfig(num_cameras=2), TrainConfig()
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Camera-style transfer for unsupervised domain adaptation: a StarGAN whose domains are "
            "the target's cameras. 'train' learns it on the target training images; 'generate' "
            "writes every training image translated to every camera as OUT/<stem>_fake_<j>.jpg "
            "plus OUT/camstyle.json, the layout reid-train --camstyle reads."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,generate}")

    train = commands.add_parser(
        "train", help="train the StarGAN", description=(
            "Train the camera-style StarGAN (StarGAN defaults: WGAN-GP, lambda_cls 1, lambda_rec 10, "
            "lambda_gp 10, Adam 1e-4 (0.5, 0.999), 5 discriminator steps per generator step, batch 16, "
            "256x128, linear lr decay over the last half). Writes RUN/stargan.pt every "
            "--checkpoint-every iterations and at the end. With --resume, options not given are "
            "taken from the checkpoint."
        ),
    )
    _common(train)
    train.add_argument("--out", required=True, help=f"run folder; the checkpoint is RUN/{CHECKPOINT_NAME}")
    train.add_argument("--resume", action="store_true", help=f"continue RUN/{CHECKPOINT_NAME} up to --iters")
    train.add_argument("--iters", type=int, help=f"discriminator steps (default: {recipe.iters}; HHL trains ~220k)")
    train.add_argument("--batch-size", dest="batch_size", type=int, help=f"images per step (default: {recipe.batch_size})")
    train.add_argument("--image-size", dest="image_size", type=parse_size,
                       help=f"HEIGHTxWIDTH the networks run at (default: {model.image_size[0]}x{model.image_size[1]})")
    train.add_argument("--g-width", dest="g_width", type=int, help=f"generator base channels (default: {model.g_width})")
    train.add_argument("--res-blocks", dest="res_blocks", type=int,
                       help=f"generator residual blocks (default: {model.g_res_blocks})")
    train.add_argument("--d-width", dest="d_width", type=int, help=f"discriminator base channels (default: {model.d_width})")
    train.add_argument("--d-downsamples", dest="d_downsamples", type=int,
                       help=f"discriminator stride-2 convs; H and W must divide by 2^n (default: {model.d_downsamples})")
    train.add_argument("--lr-g", dest="lr_g", type=float, help=f"generator Adam lr (default: {recipe.lr_g})")
    train.add_argument("--lr-d", dest="lr_d", type=float, help=f"discriminator Adam lr (default: {recipe.lr_d})")
    train.add_argument("--n-critic", dest="n_critic", type=int,
                       help=f"discriminator steps per generator step (default: {recipe.n_critic})")
    train.add_argument("--lambda-cls", dest="lambda_cls", type=float, help=f"camera classification weight (default: {recipe.lambda_cls})")
    train.add_argument("--lambda-rec", dest="lambda_rec", type=float, help=f"cycle reconstruction weight (default: {recipe.lambda_rec})")
    train.add_argument("--lambda-gp", dest="lambda_gp", type=float, help=f"gradient penalty weight (default: {recipe.lambda_gp})")
    train.add_argument("--checkpoint-every", dest="checkpoint_every", type=int,
                       help=f"iterations between checkpoints (default: {recipe.checkpoint_every})")
    train.add_argument("--seed", type=int, help=f"random seed (default: {recipe.seed})")
    train.add_argument("--max-minutes", dest="max_minutes", type=float, default=None,
                       help="stop (with a checkpoint) after this much wall time; --resume carries on (default: no limit)")

    generate = commands.add_parser(
        "generate", help="translate every training image to every camera", description=(
            "Translate every target training image (never query or gallery) to each of the C "
            "cameras: OUT/<stem>_fake_<j>.jpg for j = 1..C at the original's size, then "
            "OUT/camstyle.json. Also writes a sample sheet PNG: StarGAN can shift clothing colours, "
            "look before training on the output."
        ),
    )
    _common(generate)
    generate.add_argument("--checkpoint", required=True, help=f"RUN/{CHECKPOINT_NAME} from reid-camstyle train")
    generate.add_argument("--out", required=True, help="output folder (new, empty, or a previous reid-camstyle output)")
    generate.add_argument("--batch-size", dest="batch_size", type=positive_int, default=16, help="images per forward pass (default: %(default)s)")
    generate.add_argument("--sample-sheet", dest="sample_sheet", default=None,
                          help=f"PNG of originals beside their translations (default: OUT/{SHEET_PATH})")
    generate.add_argument("--sheet-rows", dest="sheet_rows", type=int, default=8,
                          help="originals on the sample sheet, cycling over cameras (default: %(default)s)")
    return parser


def _load_samples(data: str, layout: str) -> tuple[list[UnlabelledSample], Path]:
    root = Path(data)
    if not root.exists():
        raise ReIDError(f"data folder {root} does not exist")
    folder = root / SPLIT_FOLDERS["train"] if (root / SPLIT_FOLDERS["train"]).is_dir() else root
    return load_unlabelled_images(root, layout), folder


def _resolve(args: argparse.Namespace, options: dict[str, str], stored: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Each field: the command line's value, else the checkpoint's (``stored``), else the default."""
    values = {}
    for option, name in options.items():
        given = getattr(args, option, None)
        values[name] = given if given is not None else stored.get(name, defaults[name])
    return values


def _train(args: argparse.Namespace) -> int:
    samples, folder = _load_samples(args.data, args.layout)
    num_cameras = count_cameras(samples)
    stored_model: dict[str, Any] = {}
    stored_recipe: dict[str, Any] = {}
    if args.resume:
        state = load_stargan(Path(args.out) / CHECKPOINT_NAME)
        stored_model, stored_recipe = asdict(state.model_config), state.train_config
    model_defaults = asdict(StarGANConfig(num_cameras=num_cameras))
    model_config = StarGANConfig(num_cameras=num_cameras, **_resolve(args, _MODEL_OPTIONS, stored_model, model_defaults))
    config = TrainConfig(**_resolve(args, _TRAIN_OPTIONS, stored_recipe, asdict(TrainConfig())))
    model_config.validate()
    config.validate()
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise ReIDError(f"--max-minutes must be > 0, got {args.max_minutes}")
    print(f"{len(samples)} training images from {folder}, {num_cameras} cameras -> {num_cameras} StarGAN domains")
    summary = train_stargan(
        samples, model_config, config, args.out,
        device=resolve_device(args.device), resume=args.resume,
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
        data_info={"source": str(folder.resolve()), "images": len(samples), "cameras": num_cameras},
    )
    done = summary.iteration - summary.start_iteration
    if done:
        losses = ", ".join(f"{k} {v:.3f}" for k, v in sorted(summary.metrics.items()))
        print(f"trained iterations {summary.start_iteration}..{summary.iteration} in {summary.seconds:.1f} s "
              f"({done / max(summary.seconds, 1e-9):.2f} it/s); last losses: {losses}")
    print(f"checkpoint: {summary.checkpoint}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    if args.sheet_rows < 0:
        raise ReIDError(f"--sheet-rows must be >= 0, got {args.sheet_rows}")
    state = load_stargan(args.checkpoint)
    samples, folder = _load_samples(args.data, args.layout)
    summary = generate_camstyle(
        state.build_generator(), samples, args.out, source=folder, device=resolve_device(args.device),
        batch_size=args.batch_size, workers=2 if args.workers is None else args.workers,
        generator_info={"checkpoint": str(Path(args.checkpoint).resolve()), "iteration": state.iteration,
                        "image_size": list(state.model_config.image_size)},
    )
    print(f"wrote {summary.files} images ({summary.images} originals x {state.model_config.num_cameras} cameras) "
          f"to {summary.out} in {summary.seconds:.1f} s ({summary.files / max(summary.seconds, 1e-9):.1f} images/s)")
    if args.sheet_rows:
        sheet = Path(args.sample_sheet) if args.sample_sheet else summary.out / SHEET_PATH
        write_sample_sheet(sheet_rows(samples, args.sheet_rows), summary.out, summary.manifest["cameras"], sheet)
        print(f"sample sheet: {sheet} (look for colour shifts before training on these images)")
    return 0


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        if args.workers is not None and args.workers < 0:
            raise ReIDError(f"--workers must be >= 0, got {args.workers}")
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        return _train(args) if args.command == "train" else _generate(args)

    return run_cli(PROG, body)
