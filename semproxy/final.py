"""Final training of a config with test evaluation: ``python -m semproxy.train --config FILE``.

Trains on the training classes plus the validation classes (``val_fraction`` 0) unless
``--train-only``, evaluates on the test classes, and writes into the output folder: a checkpoint
after every epoch (so ``--resume`` continues an interrupted run), TensorBoard events, and
``metrics.json`` with the test metrics, the per-epoch history, the config and the data fingerprint.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .checkpoint import CHECKPOINT_FILE, CheckpointError
from .cli import OneLineParser, command_line, run_interruptible
from .config import Config, ConfigError
from .typed_config import first_line

__all__ = ["main", "write_json"]


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=float) + "\n")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m semproxy.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config (e.g. experiments/synthetic.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--out", default=None, help="output folder (default: runs/final/<config name>)")
    parser.add_argument("--train-only", action="store_true",
                        help="train on the training classes only (keep the validation carve)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. for log files)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and record; the exit status (2: bad input, 130: interrupted, resumable)."""
    args = _parse(argv)
    return run_interruptible(lambda: _train(args), f"resume with: {command_line(drop=('--resume',))} --resume")


def _train(args: argparse.Namespace) -> int:
    from .models.backbone import BackboneError
    from .models.memory import model_memory
    from .train import resolve_device

    try:
        config = Config.load(args.config).with_overrides(args.set)
        config = config.replace({"test_eval": True, **({} if args.train_only else {"val_fraction": 0.0})})
        resolve_device(config.eval.device, where=args.config)  # a device that is not there fails before any work
        model_memory(config.model, num_classes=2, where=args.config)  # impossible model settings: before any work
    except (ConfigError, BackboneError) as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("runs") / "final" / Path(args.config).stem).expanduser().resolve()
    checkpoint = out / CHECKPOINT_FILE
    if checkpoint.exists() and not args.resume:
        print(f"error: {checkpoint} exists; pass --resume to continue that run or choose another --out", file=sys.stderr)
        return 2
    if args.resume and not checkpoint.exists():
        print(f"error: --resume: no checkpoint in {out}", file=sys.stderr)
        return 2

    from torch.utils.tensorboard import SummaryWriter

    from .data.prepared import prepare_data
    from .data.records import DatasetError
    from .train import EpochResult, Trainer, fit

    try:
        data = prepare_data(config, with_test=True, progress=not args.no_progress)
    except (DatasetError, BackboneError, ValueError) as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2
    writer = SummaryWriter(str(out / "tensorboard"))

    def log_and_save(result: EpochResult, trainer: Trainer) -> None:
        for name, value in result.flat().items():
            if name not in ("epoch", "seconds"):
                writer.add_scalar(name, value, result.epoch)
        writer.flush()
        trainer.save(out)

    try:
        result = fit(config, data=data, callbacks=[log_and_save], resume_from=checkpoint if args.resume else None,
                     progress=not args.no_progress)
    except (CheckpointError, ConfigError, BackboneError, DatasetError, ValueError) as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2
    for name, value in result.test_metrics.items():
        writer.add_scalar(name, value, config.optim.epochs)
    writer.close()
    write_json(out / "metrics.json", {"test": result.test_metrics, "history": [h.flat() for h in result.history],
                                      "config": config.to_mapping(), "data": data.fingerprint})
    config.dump(out / "config.yaml", header=f"final training of {args.config}")
    ks = ", ".join(f"R@{k} {100 * result.test_metrics[f'test_recall_at_{k}']:.1f}" for k in data.recall_ks)
    print(f"test ({data.name}, {len(data.test)} images): {ks}, MAP@R {100 * result.test_metrics['test_map_at_r']:.1f}")
    print(f"wrote {out / 'metrics.json'}, {checkpoint}, TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
