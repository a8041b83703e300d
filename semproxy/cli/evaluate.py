"""Re-compute test metrics from a checkpoint: ``python -m semproxy.evaluate --checkpoint DIR``.

The checkpoint carries its config and the identity of its backbone: the backbone is rebuilt from
the config, checked against the saved weights hash, given the trained tensors, and evaluated on the
test classes of the same benchmark (``--set data_root=...`` when the data moved).
"""
from __future__ import annotations

import argparse
import json

from ..config import RUNTIME, Config
from ..evaluation import evaluate_checkpoint
from . import OneLineParser, describe, program, run_command

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=program("python -m semproxy.evaluate"), description=describe(__doc__))
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file or the folder holding checkpoint.pt (required)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a runtime field, one of: "
                             f"{', '.join(sorted(Config.fields_with(RUNTIME)))}; repeat for several (default: none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. for log files)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def evaluate() -> int:
        print(json.dumps(evaluate_checkpoint(args.checkpoint, args.set, progress=not args.no_progress), indent=2))
        return 0

    return run_command(evaluate, "nothing was written")
