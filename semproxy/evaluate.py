"""Re-compute test metrics from a checkpoint: ``python -m semproxy.evaluate --checkpoint DIR``.

The checkpoint carries its config and the identity of its backbone: the backbone is rebuilt from
the config, checked against the saved weights hash, given the trained tensors, and evaluated on the
test classes of the same benchmark (``--set data_root=...`` when the data moved).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from .checkpoint import CheckpointError, check_compatible, load_checkpoint
from .cli import OneLineParser, run_interruptible
from .config import Config, ConfigError
from .data.prepared import prepare_data
from .data.records import DatasetError
from .evaluation import evaluate
from .host_memory import keep_freed_host_memory
from .models import BackboneError, build_model
from .train import metric_names, resolve_device
from .typed_config import first_line

__all__ = ["main", "evaluate_checkpoint"]


def evaluate_checkpoint(path: str, overrides: list[str] = (), *, progress: bool = True) -> dict[str, float]:
    """Test metrics of the model saved in ``path`` (runtime fields may be overridden)."""
    payload = load_checkpoint(path)
    config = Config.from_mapping(payload["config"], where=f"{path} (config)").with_overrides(list(overrides))
    config = config.replace({"test_eval": True})
    device = resolve_device(config.eval.device, where=f"{path} (config)")  # before any work
    data = prepare_data(config, with_test=True, progress=progress)
    if device.type == "cpu":  # as training does: activations reused batch after batch, not re-faulted
        keep_freed_host_memory()
    model = build_model(config.model, len(np.unique(data.train.labels)))
    check_compatible(payload, config, model, where=str(path))
    state = model.state_dict()
    missing = [k for k in payload["trained"] if k not in state]
    if missing:
        raise CheckpointError(f"{path}: trained tensor '{missing[0]}' does not fit the model")
    with torch.no_grad():
        for name, tensor in payload["trained"].items():
            state[name].copy_(tensor)
    model.to(device)
    metrics = evaluate(model, data, "test", config.eval.eval_batch_size, device,
                       amp=config.optim.amp, progress=progress)
    return metric_names("test", metrics)


def _evaluate(args: argparse.Namespace) -> int:
    try:
        metrics = evaluate_checkpoint(args.checkpoint, args.set, progress=not args.no_progress)
    except (CheckpointError, ConfigError, DatasetError, BackboneError, ValueError) as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m semproxy.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file or the folder holding checkpoint.pt")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a runtime field (data_root, cache_dir, device, eval_batch_size)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. for log files)")
    args = parser.parse_args(argv)
    return run_interruptible(lambda: _evaluate(args), "nothing was written")


if __name__ == "__main__":
    sys.exit(main())
