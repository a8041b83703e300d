"""Dataset commands.

  python -m semproxy.data prepare DATASET --root DIR [--archive FILE ...] [--no-checksum]
  python -m semproxy.data synthetic --root DIR [--classes N] [--per-class K] [--size PX] [--seed S] [--overwrite]
  python -m semproxy.data info DATASET --root DIR [--val-fraction F]

The synthetic set's defaults are those of the shipped synthetic config (experiments/synthetic.yaml, the
one searches and ``python -m semproxy.train`` use), so the folder it writes is the one they accept.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from ..data.datasets import DATASETS, load_benchmark
from ..data.prepare import prepare
from ..data.readers import synthetic
from ..data.records import DatasetCountWarning
from ..data.splits import make_splits
from ..presets import default_base_config
from . import OneLineParser, program, run_command

__all__ = ["main", "build_parser"]


def _info(name: str, root: str, val_fraction: float) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetCountWarning)
        splits = make_splits(load_benchmark(name, root), val_fraction)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(json.dumps(splits.fingerprint(), indent=2))


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag's help says its default (or that it is required)."""
    parser = OneLineParser(prog=program("python -m semproxy.data"), description="Prepare and inspect benchmarks.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="verify and extract archives, or download the official release")
    p.add_argument("dataset", choices=[n for n, s in DATASETS.items() if s.sources], help="the benchmark")
    p.add_argument("--root", required=True, help="where the dataset will live (required)")
    p.add_argument("--archive", action="append", default=[],
                   help="a release archive or file you already have; repeat for several "
                        "(default: download the official release where it has a URL)")
    p.add_argument("--no-checksum", action="store_true",
                   help="accept a repacked archive: skip the md5 check (default: check it where it is known)")
    shipped, source = default_base_config("synthetic")  # what a search or a run on synthetic data asks for
    s = commands.add_parser("synthetic", help="generate the synthetic dataset")
    s.add_argument("--root", required=True,
                   help="folder to generate into, new or empty; kept when it holds this generation (required)")
    of = f"(default: %(default)s, synthetic_{{}} of {source})"
    s.add_argument("--classes", type=int, default=shipped.data.synthetic_classes,
                   help=f"classes, half train and half test {of.format('classes')}")
    s.add_argument("--per-class", type=int, default=shipped.data.synthetic_per_class,
                   help=f"images per class {of.format('per_class')}")
    s.add_argument("--size", type=int, default=shipped.data.synthetic_size,
                   help=f"image side in pixels {of.format('size')}")
    s.add_argument("--seed", type=int, default=synthetic.SEED,
                   help="random seed of the generation (default: %(default)s)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a set of another generation in --root (default: refuse to)")
    i = commands.add_parser("info", help="read a dataset and print its splits' counts and fingerprint")
    i.add_argument("dataset", choices=list(DATASETS), help="the benchmark")
    i.add_argument("--root", required=True, help="the dataset's folder (required)")
    i.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the training classes carved off for validation (default: %(default)s)")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "prepare":
        root = prepare(args.dataset, args.root, args.archive, check_md5=not args.no_checksum)
        _info(args.dataset, str(root), 0.0)
    elif args.command == "synthetic":
        root = synthetic.generate(args.root, num_classes=args.classes, images_per_class=args.per_class,
                                  image_size=args.size, seed=args.seed, overwrite=args.overwrite)
        print(f"synthetic dataset in {root}")
    else:
        _info(args.dataset, args.root, args.val_fraction)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args), "what was written is complete or was removed; run it again")
