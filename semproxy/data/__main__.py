"""Dataset commands.

  python -m semproxy.data prepare DATASET --root DIR [--archive FILE ...] [--no-checksum]
  python -m semproxy.data synthetic --root DIR [--classes N] [--per-class K] [--size PX] [--seed S]
  python -m semproxy.data info DATASET --root DIR [--val-fraction F]
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from .datasets import DATASETS, load_benchmark
from .prepare import prepare
from .readers import synthetic
from .records import DatasetCountWarning, DatasetError
from .splits import make_splits


def _info(name: str, root: str, val_fraction: float) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetCountWarning)
        splits = make_splits(load_benchmark(name, root), val_fraction)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(json.dumps(splits.fingerprint(), indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semproxy.data", description="Prepare and inspect benchmarks.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="verify and extract archives, or download the official release")
    p.add_argument("dataset", choices=[n for n, s in DATASETS.items() if s.sources])
    p.add_argument("--root", required=True, help="where the dataset will live")
    p.add_argument("--archive", action="append", default=[], help="a release archive or file you already have")
    p.add_argument("--no-checksum", action="store_true", help="accept a repacked archive (skip the md5 check)")
    s = commands.add_parser("synthetic", help="generate the synthetic dataset")
    s.add_argument("--root", required=True)
    s.add_argument("--classes", type=int, default=24)
    s.add_argument("--per-class", type=int, default=16)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    i = commands.add_parser("info", help="read a dataset and print its splits' counts and fingerprint")
    i.add_argument("dataset", choices=list(DATASETS))
    i.add_argument("--root", required=True)
    i.add_argument("--val-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            root = prepare(args.dataset, args.root, args.archive, check_md5=not args.no_checksum)
            _info(args.dataset, str(root), 0.0)
        elif args.command == "synthetic":
            root = synthetic.generate(args.root, num_classes=args.classes, images_per_class=args.per_class,
                                      image_size=args.size, seed=args.seed)
            print(f"synthetic dataset in {root}")
        else:
            _info(args.dataset, args.root, args.val_fraction)
    except (DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
