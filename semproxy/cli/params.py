"""Parameter accounting per method: ``python -m semproxy.models [--set key=value ...]``.

Builds each method on a randomly initialised backbone (counting needs no pretrained weights) and
prints what it learns in all, what one step changes, and both as a percentage of the backbone.
"""
from __future__ import annotations

import argparse
import dataclasses

from ..config import Config, ConfigError, ModelConfig
from ..models import METHODS, build_model, count_parameters
from . import OneLineParser, describe, program, run_command

__all__ = ["main", "build_parser", "parameter_table"]


def parameter_table(cfg: ModelConfig, methods: list[str], num_classes: int, classes_per_batch: int) -> list[dict]:
    rows = []
    for method in methods:
        model = build_model(dataclasses.replace(cfg, method=method, pretrained=False, weights=None), num_classes)
        count = count_parameters(model, classes_per_batch)
        rows.append({"method": method, "learned": count.learned, "learned %": count.learned_percent,
                     "per step": count.per_step, "per step %": count.per_step_percent,
                     "backbone": count.backbone, "parts": count.parts})
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=program("python -m semproxy.models"), description=describe(__doc__))
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (default: all)")
    parser.add_argument("--num-classes", type=int, default=100, help="training classes (default: 100, CUB)")
    parser.add_argument("--classes-per-batch", type=int, default=32,
                        help="batch size / samples per class (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model config override; repeat for several (default: none)")
    parser.add_argument("--parts", action="store_true", help="also print each method's parts")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _print_table(args), "nothing was written")


def _print_table(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"--methods: unknown method '{unknown[0]}' (expected {', '.join(METHODS)})")
    cfg = Config().with_overrides(args.set).model
    rows = parameter_table(cfg, methods, args.num_classes, args.classes_per_batch)
    print(f"backbone {cfg.backbone}: {rows[0]['backbone']:,} parameters; "
          f"{args.num_classes} classes, {args.classes_per_batch} classes per batch")
    print(f"{'method':<10} {'learned':>12} {'% backbone':>10} {'per step':>12} {'% backbone':>10}")
    for row in rows:
        print(f"{row['method']:<10} {row['learned']:>12,} {row['learned %']:>10.2f} "
              f"{row['per step']:>12,} {row['per step %']:>10.2f}")
        if args.parts:
            print("    " + ", ".join(f"{k}: {v:,}" for k, v in row["parts"].items()))
    return 0
