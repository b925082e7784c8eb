"""``reid-synth``: generate pedestrian crops in the Market-1501 / DukeMTMC-reID layout."""

from __future__ import annotations

import argparse
import time

from training.core.cliargs import ArgumentParser, positive_int
from training.core.errors import run_cli
from training.synth.domains import DOMAINS
from training.synth.naming import NAMINGS
from training.synth.writer import SynthConfig, write_domains

PROG = "reid-synth"


def build_parser() -> argparse.ArgumentParser:
    defaults = SynthConfig(domain="market")
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Generate procedural pedestrian crops whose identity is carried by clothing and build "
            "and whose camera is carried by image style, written in the Market-1501 layout "
            "(bounding_box_train/, query/, bounding_box_test/ with 0000 distractors and -1 junk). "
            "Without --domain both domains are written, to OUT/market and OUT/duke. Output is "
            "byte-identical for a given seed, whatever --workers."
        ),
    )
    parser.add_argument("--out", required=True, help="output folder (new, empty, or a previous reid-synth output)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--domain", choices=sorted(DOMAINS), default=None,
        help="market (6 cameras, outdoor summer) or duke (8 cameras, winter campus); default: both",
    )
    parser.add_argument(
        "--ids", type=int, default=defaults.ids,
        help="identities per domain, train + test, split half/half (default: %(default)s)",
    )
    parser.add_argument("--cameras", type=int, default=None, help="cameras per domain, 2..9 (default: the domain's own)")
    parser.add_argument(
        "--images-per-id", type=int, default=defaults.images_per_id,
        help="images per identity, spread over >= 2 cameras (default: %(default)s)",
    )
    parser.add_argument("--height", type=int, default=defaults.size[0], help="crop height in pixels (default: %(default)s)")
    parser.add_argument("--width", type=int, default=defaults.size[1], help="crop width in pixels (default: %(default)s)")
    parser.add_argument(
        "--distractors", type=int, default=defaults.distractors,
        help="0000 distractor crops (background, strangers) in the gallery (default: %(default)s)",
    )
    parser.add_argument(
        "--junk", type=int, default=defaults.junk,
        help="-1 junk crops (badly cropped fragments of test identities) in the gallery (default: %(default)s)",
    )
    parser.add_argument(
        "--naming", choices=NAMINGS, default=None,
        help="file names: market (0002_c1s1_000451_01.jpg) or duke (0005_c2_f0046985.jpg); default: the domain's own",
    )
    parser.add_argument(
        "--camstyle", action="store_true",
        help="also write camstyle/<stem>_fake_<j>.jpg: every train image re-rendered by every camera j",
    )
    parser.add_argument("--workers", type=positive_int, default=2, help="rendering processes (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        domains = [args.domain] if args.domain else ["market", "duke"]
        configs = [
            SynthConfig(
                domain=domain,
                seed=args.seed,
                ids=args.ids,
                cameras=args.cameras,
                images_per_id=args.images_per_id,
                size=(args.height, args.width),
                distractors=args.distractors,
                junk=args.junk,
                naming=args.naming,
                camstyle=args.camstyle,
            )
            for domain in domains
        ]
        start = time.perf_counter()
        summaries = write_domains(args.out, configs, workers=args.workers)
        elapsed = time.perf_counter() - start
        total = sum(s.images for s in summaries)
        for s in summaries:
            c = s.manifest["counts"]
            print(
                f"{s.domain}: {s.manifest['ids']['train']} train ids / {c['bounding_box_train']} images, "
                f"{s.manifest['ids']['test']} test ids / {c['query']} query + {c['bounding_box_test']} gallery "
                f"({c['distractors']} distractors, {c['junk']} junk), {s.manifest['cameras']} cameras"
                + (f", {c['camstyle']} camstyle images" if s.manifest["camstyle"] else "")
                + f" -> {s.root}"
            )
        print(f"wrote {total} images to {args.out} in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f} images/s)")
        return 0

    return run_cli(PROG, body)
