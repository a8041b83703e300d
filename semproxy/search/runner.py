"""The search driver behind ``tune.py``: validate everything, prepare the data once, run Tune.

Order matters: the space, the config and the data are checked (and the image cache built) before
Ray starts, so bad input costs a one-line error and exit code 2, not a cluster start-up.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import Config, ConfigError
from ..provenance import git_commit, package_versions
from .space import SearchSpace, load_space

__all__ = ["SearchPlan", "plan_search", "run_search", "default_base_config", "EXPERIMENTS"]

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
SMOKE = {"num_samples": 6, "max_epochs": 4, "grace_period": 1, "reduction_factor": 2}
DEFAULTS = {"num_samples": 16, "max_epochs": 15, "grace_period": 2, "reduction_factor": 3, "scheduler": "asha"}


class SearchError(RuntimeError):
    """A problem of the search setup (one line), reported with exit code 2."""


@dataclass
class SearchPlan:
    """Everything resolved before Ray starts."""

    space: SearchSpace
    base: Config
    settings: dict[str, Any]          # num_samples, max_epochs, grace_period, reduction_factor, scheduler
    starts: list[dict[str, Any]]
    run_dir: Path
    name: str
    storage: Path


def default_base_config(dataset: str) -> Config:
    """The synthetic demo for ``synthetic``, else the paper's ViT-S setting of the dataset."""
    path = EXPERIMENTS / ("synthetic.yaml" if dataset == "synthetic" else f"{dataset}_vit_s.yaml")
    return Config.load(path) if path.is_file() else Config().replace({"dataset": dataset})


def plan_search(args: argparse.Namespace) -> SearchPlan:
    """Resolve space, base config, settings, starting points and paths; raises ConfigError/SearchError."""
    space = load_space(args.space)
    dataset = args.dataset or ("synthetic" if args.smoke else None)
    if dataset is None:
        raise SearchError("--dataset is required (cub200, cars196, sop, inshop, inat or synthetic)")
    base = Config.load(args.config) if args.config else default_base_config(dataset)
    changes: dict[str, Any] = {"dataset": dataset, "eval_every": 1, "test_eval": False}
    if args.data_root:
        changes["data_root"] = str(Path(args.data_root).expanduser().resolve())
    elif base.data.data_root is None:
        changes["data_root"] = str((Path("data") / dataset).resolve())
    if args.backbone:
        changes.update({"backbone": args.backbone})
    if args.weights:
        changes.update({"weights": str(Path(args.weights).expanduser().resolve()), "pretrained": False})
    if base.data.cache_dir:
        changes["cache_dir"] = str(Path(base.data.cache_dir).expanduser().resolve())
    settings = {**DEFAULTS, **space.search, **(SMOKE if args.smoke else {})}
    for key in ("num_samples", "max_epochs", "grace_period", "reduction_factor", "scheduler"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    changes["epochs"] = settings["max_epochs"]
    base = base.replace({**changes, **space.fixed}, where=f"{args.space} (fixed values)")
    if base.data.val_fraction <= 0:
        raise SearchError("a search needs validation classes: val_fraction must be above 0")
    if settings["grace_period"] > settings["max_epochs"]:
        raise SearchError(f"--grace-period {settings['grace_period']} exceeds --max-epochs {settings['max_epochs']}")
    if settings["reduction_factor"] < 2:
        raise SearchError("--reduction-factor must be at least 2")
    starts = list(space.starts)
    published = space.point_in_space(base.flat())
    if published and published not in starts:
        starts.insert(0, published)  # the base config (the paper's setting) where it lies in the space
    name = args.name or f"{space.path.stem}-{dataset}"
    storage = Path(args.storage or "runs").expanduser().resolve()
    return SearchPlan(space, base, settings, starts, storage / name, name, storage)


def _init_ray(address: Optional[str]) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
    else:  # a local cluster on this machine, its services on loopback only
        ray.init(include_dashboard=False, dashboard_host="127.0.0.1")


def run_search(args: argparse.Namespace) -> int:
    """Run (or resume) a search; returns the process exit code."""
    try:
        plan = plan_search(args)
    except (ConfigError, SearchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if plan.run_dir.exists() and any(plan.run_dir.iterdir()) and not args.resume:
        print(f"error: run {plan.run_dir} exists; pass --resume to continue it or choose another --name",
              file=sys.stderr)
        return 2
    if args.resume and not plan.run_dir.exists():
        print(f"error: --resume: no run at {plan.run_dir}", file=sys.stderr)
        return 2

    from ..data.prepared import prepare_data
    from ..data.records import DatasetError
    from ..models.backbone import BackboneError

    try:  # before Ray: a bad data root fails fast, and the cache is built once for all trials
        data = prepare_data(plan.base)
        backbone_sha256 = _check_model(plan.base)
        _fit_to_data(plan, len(set(data.train.labels.tolist())))
    except (DatasetError, BackboneError, ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from trainables import train_dml

    from .results import METRIC, SEARCH_FILE, export_best, format_table, read_trials
    from .searcher import AshaStateCallback, PruningAwareOptunaSearch, make_sampler

    _init_ray(args.address)
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    if args.gpus_per_trial > gpus:
        print(f"error: --gpus-per-trial {args.gpus_per_trial} but the Ray cluster has {gpus:g} GPUs; "
              f"use --gpus-per-trial 0 to train on CPUs", file=sys.stderr)
        return 2
    if args.cpus_per_trial > cpus:
        print(f"error: --cpus-per-trial {args.cpus_per_trial} but the Ray cluster has {cpus:g} CPUs", file=sys.stderr)
        return 2
    from .cluster import cluster_hosts, unshared_paths

    shared = {"--storage": str(plan.storage), "data root": str(plan.base.data.data_root),
              "image cache": str(data.train.folder.parent)}
    problems = unshared_paths(shared, ray.nodes())
    if problems:
        print(f"error: the Ray cluster spans {len(cluster_hosts(ray.nodes()))} hosts but these paths are local to "
              f"this one: {'; '.join(problems)}; put them on a filesystem every node mounts (or --storage on a "
              f"cloud URI such as s3://...)", file=sys.stderr)
        return 2
    fits = math.floor(gpus / args.gpus_per_trial + 1e-9) if args.gpus_per_trial else math.floor(cpus / args.cpus_per_trial)
    concurrent = max(1, min(fits, args.max_concurrent or fits))

    settings = plan.settings
    searcher = PruningAwareOptunaSearch(plan.space.define_by_run(), metric=METRIC, mode="max",
                                        points_to_evaluate=plan.starts or None,
                                        sampler=make_sampler(args.seed), max_t=settings["max_epochs"])
    callbacks = []
    if settings["scheduler"] == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode="max",
                                  max_t=settings["max_epochs"], grace_period=settings["grace_period"],
                                  reduction_factor=settings["reduction_factor"])
        callbacks.append(AshaStateCallback(scheduler))
    else:
        scheduler = FIFOScheduler()
    trainable = tune.with_resources(
        tune.with_parameters(train_dml, base=plan.base.to_mapping(), data=data),
        {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})

    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        (plan.run_dir / SEARCH_FILE).write_text(json.dumps({
            "command": " ".join(shlex.quote(a) for a in sys.argv), "cwd": str(Path.cwd()),
            "space": str(plan.space.path), "space_text": plan.space.path.read_text(),
            "space_resolved": [dataclasses.asdict(p) for p in plan.space.params],
            "base": plan.base.to_mapping(), "settings": settings, "starts": plan.starts, "seed": args.seed,
            "backbone": {"name": plan.base.model.backbone, "sha256": backbone_sha256},
            "data": data.fingerprint, "versions": package_versions(), "git_commit": git_commit(),
        }, indent=2, default=str) + "\n")
    print(f"search {plan.name}: {settings['num_samples']} trials x up to {settings['max_epochs']} epochs, "
          f"{concurrent} at a time, {settings['scheduler']} on {METRIC}")
    print(f"TensorBoard: tensorboard --logdir {plan.run_dir}")
    if args.resume and tune.Tuner.can_restore(str(plan.run_dir)):
        tuner = tune.Tuner.restore(str(plan.run_dir), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=settings["num_samples"],
                                        max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(
                name=plan.name, storage_path=str(plan.storage), callbacks=callbacks,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=METRIC,
                                                        checkpoint_score_order="max"),
                failure_config=tune.FailureConfig(max_failures=args.max_failures)),
        )
    tuner.fit()
    rows = read_trials(plan.run_dir)
    print("\n" + format_table(rows))
    try:
        exported, best = export_best(plan.run_dir, plan.run_dir / "best_config.yaml")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"\nbest: trial {best.trial_id}, val MAP@R {best.best_map_at_r:.4f} at epoch {best.best_epoch}")
    print(f"best params: {json.dumps(best.params, default=str)}")
    print(f"best checkpoint: {best.checkpoint}")
    print(f"best config (final training): {exported}\n  python -m semproxy.train --config {exported}")
    from .report import write_report

    print(f"report: {write_report(plan.run_dir)}")
    print(f"TensorBoard: tensorboard --logdir {plan.run_dir}   (Ray's own hint above points at a temporary copy)")
    return 0


def _fit_to_data(plan: SearchPlan, num_classes: int) -> None:
    """Narrow batch choices to what the training classes allow (printed), in place."""
    from .space import fit_batches_to_classes

    space, notes = fit_batches_to_classes(plan.space, plan.base, num_classes)
    for note in notes:
        print(f"note: {note}")
    if notes:
        plan.space = space
        plan.base = plan.base.replace(space.fixed)
        plan.starts = [p for p in (space.point_in_space({**plan.base.flat(), **s}) for s in plan.starts) if p]


def _check_model(config: Config) -> str:
    """Build the base model once on the CPU (unknown backbones and impossible depths fail here);
    returns the hash of its backbone weights, for the run's record."""
    from ..checkpoint import backbone_hash
    from ..models import build_model

    return backbone_hash(build_model(config.model, num_classes=2))
