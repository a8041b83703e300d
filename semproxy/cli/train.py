"""Final training of a config with test evaluation: ``python -m semproxy.train --config FILE``.

Trains on the training classes plus the validation classes (``val_fraction`` 0) unless
``--train-only``, evaluates on the test classes, and writes into the output folder: a checkpoint
after every epoch (so ``--resume`` continues an interrupted run), TensorBoard events, and
``metrics.json`` with the test metrics, the per-epoch history, the config and the data fingerprint.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import CHECKPOINT_FILE
from ..config import Config
from ..device import resolve_device
from ..errors import ConfigError
from ..models.memory import model_memory
from ..run_lock import run_lock
from . import OneLineParser, describe, program, command_line, run_command

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=program("python -m semproxy.train"), description=describe(__doc__))
    parser.add_argument("--config", required=True, help="YAML config, e.g. experiments/synthetic.yaml (required)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field; repeat for several (default: none)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/final/<config name>)")
    parser.add_argument("--train-only", action="store_true",
                        help="train on the training classes only (keep the validation carve)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. for log files)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and record; the exit status (2: bad input, 130: interrupted, resumable)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: _train(args), f"resume with: {command_line(drop=('--resume',))} --resume")


def _load(args: argparse.Namespace) -> Config:
    """The config as it will train, its device and model checked before any work."""
    config = Config.load(args.config).with_overrides(args.set)
    config = config.replace({"test_eval": True, **({} if args.train_only else {"val_fraction": 0.0})})
    resolve_device(config.eval.device, where=args.config)
    model_memory(config.model, num_classes=2, where=args.config)  # impossible model settings fail here
    return config


def _check_out(checkpoint: Path, resume: bool) -> None:
    """A new run needs a folder without a checkpoint, a resume one with it."""
    if checkpoint.exists() and not resume:
        raise ConfigError(f"{checkpoint} exists; pass --resume to continue that run or choose another --out")
    if resume and not checkpoint.exists():
        raise ConfigError(f"--resume: no checkpoint in {checkpoint.parent}")


def _train(args: argparse.Namespace) -> int:
    config = _load(args)
    out = Path(args.out or Path("runs") / "final" / Path(args.config).stem).expanduser().resolve()
    checkpoint = out / CHECKPOINT_FILE

    from ..train.final import train_final

    with run_lock(out, "training"):
        _check_out(checkpoint, args.resume)
        result = train_final(config, out, resume=args.resume, progress=not args.no_progress, source=args.config)
    print(result.summary())
    print(f"wrote {out / 'metrics.json'}, {checkpoint}, TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    return 0
