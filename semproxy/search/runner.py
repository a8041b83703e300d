"""The search driver behind ``tune.py``: validate everything, prepare the data once, run Tune.

Order matters: the flags, the space, the config and the data are checked (and the image cache
built) before Ray starts, so bad input costs a one-line error and exit code 2, not a cluster
start-up. A resumed run must be the same run: its record is compared with the one on disk and
Tune's experiment state is verified before anything restores. An interrupted search says so and
exits 130; it never passes for a finished one.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..cli import INTERRUPTED, command_line
from ..config import Config, ConfigError
from ..provenance import git_commit, package_versions
from ..typed_config import first_line
from .record import SearchRecord
from .settings import SMOKE, SearchSettings, TrialResources, check_values, flag_label
from .space import SearchSpace, fit_batches_to_classes, load_space

__all__ = ["SearchPlan", "SearchError", "plan_search", "run_search", "default_base_config", "EXPERIMENTS"]

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
RECORDS_MARGIN = 16 << 20  # free bytes for Tune's experiment state, results and event files


class SearchError(ConfigError):
    """A problem of the search setup (one line), reported with exit code 2."""


@dataclass
class SearchPlan:
    """Everything resolved before Ray starts."""

    space: SearchSpace
    base: Config
    settings: SearchSettings
    resources: TrialResources
    starts: list[dict[str, Any]]
    run_dir: Path
    name: str
    storage: Path
    config_source: str  # where the base config's values come from, for errors
    checkpoint_bytes: int = 0  # of the base config's model: sizes the free space a search keeps

    def free_space_margin(self, concurrent: int) -> int:
        """Bytes left free under --storage: a search stops (resumably) below this."""
        return RECORDS_MARGIN + 2 * concurrent * self.checkpoint_bytes


def default_base_config(dataset: str) -> tuple[Config, str]:
    """The synthetic demo for ``synthetic``, else the paper's ViT-S setting of the dataset; and its file."""
    path = EXPERIMENTS / ("synthetic.yaml" if dataset == "synthetic" else f"{dataset}_vit_s.yaml")
    if path.is_file():
        return Config.load(path), str(path)
    return Config().replace({"dataset": dataset}), "the default config"


def _given_flags(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def trial_resources(args: argparse.Namespace) -> TrialResources:
    """The flags of what each trial gets, validated (a one-line error naming the flag)."""
    names = [f.name for f in dataclasses.fields(TrialResources)]
    return dataclasses.replace(TrialResources(), **_given_flags(args, names)).check()


def resolve_settings(args: argparse.Namespace, space: SearchSpace) -> SearchSettings:
    """Defaults < the space's ``search:`` < ``--smoke`` < flags; each checked where it came from.

    A space that fixes ``epochs`` sets the length of every trial, and so ASHA's ``max_t``.
    """
    flags = check_values(_given_flags(args, [f.name for f in dataclasses.fields(SearchSettings)]),
                         "command line", label=flag_label)
    values = {**space.search, **(SMOKE if args.smoke else {}), **flags}
    sources = {key: f"{space.path.name} search.{key}" for key in space.search}
    sources.update({key: "--smoke" for key in SMOKE if args.smoke})
    sources.update({key: flag_label(key) for key in flags})
    fixed_epochs = space.fixed.get("epochs")
    if fixed_epochs is not None:
        if "max_epochs" in values and values["max_epochs"] != fixed_epochs:
            raise SearchError(f"{space.path}: key 'epochs' fixes every trial at {fixed_epochs} epochs but max_epochs "
                              f"is {values['max_epochs']} ({sources['max_epochs']}): give one of them")
        values["max_epochs"], sources["max_epochs"] = fixed_epochs, f"{space.path.name} epochs"
    epochs = next((p for p in space.sampled if p.name == "epochs"), None)
    settings = dataclasses.replace(SearchSettings(), **values).check("search settings", sources)
    if epochs is not None and max(epochs.args[:2] if epochs.kind != "choice" else epochs.args) > settings.max_epochs:
        raise SearchError(f"{space.path}: key 'epochs' reaches beyond max_epochs {settings.max_epochs} "
                          f"({sources.get('max_epochs', 'default')}), ASHA's limit")
    return settings


def _storage(text: Optional[str]) -> Path:
    if text and "://" in text:
        raise SearchError(f"--storage {text}: cloud URIs are not supported (the driver writes the run record and "
                          f"reads results locally); mount the bucket (s3fs, gcsfuse, ...) and give its path")
    return Path(text or "runs").expanduser().resolve()


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _check_space_path(text: str) -> None:
    """A missing --space file is an error that lists the spaces there are (and the closest name)."""
    path = Path(text).expanduser()
    if path.is_file():
        return
    folders = [f for f in dict.fromkeys((path.parent.resolve(), SPACES)) if f.is_dir() and any(f.glob("*.yaml"))]
    names = {folder: sorted(p.name for p in folder.glob("*.yaml")) for folder in folders}
    close = difflib.get_close_matches(path.name, [n for found in names.values() for n in found], n=1)
    hint = next((f" (did you mean {_shown(f / close[0])}?)" for f in folders if close and close[0] in names[f]), "")
    listed = "; ".join(f"spaces in {_shown(f)}/: {', '.join(found)}" for f, found in names.items())
    raise SearchError(f"--space {text}: no such file{hint}; {listed or 'no spaces found'}")


def plan_search(args: argparse.Namespace) -> SearchPlan:
    """Resolve flags, space, base config, settings, starting points and paths; raises ConfigError."""
    resources = trial_resources(args)
    _check_space_path(args.space)
    space = load_space(args.space)
    dataset = args.dataset or ("synthetic" if args.smoke else None)
    if dataset is None:
        raise SearchError("--dataset is required (cub200, cars196, sop, inshop, inat or synthetic)")
    settings = resolve_settings(args, space)
    storage = _storage(args.storage)
    base, source = (Config.load(args.config), args.config) if args.config else default_base_config(dataset)
    changes: dict[str, Any] = {"dataset": dataset, "eval_every": 1, "test_eval": False,
                               "epochs": settings.max_epochs}
    if args.data_root:
        changes["data_root"] = str(Path(args.data_root).expanduser().resolve())
    elif base.data.data_root is None:
        changes["data_root"] = str((Path("data") / dataset).resolve())
    if args.backbone:
        changes["backbone"] = args.backbone
    if args.weights:
        changes.update({"weights": str(Path(args.weights).expanduser().resolve()), "pretrained": False})
    if base.data.cache_dir:
        changes["cache_dir"] = str(Path(base.data.cache_dir).expanduser().resolve())
    base = base.replace(changes, where="command line").replace(space.fixed, where=f"{args.space} (fixed values)")
    if base.data.val_fraction <= 0:
        raise SearchError(f"{source}: a search needs validation classes: "
                          f"val_fraction must be above 0")
    fit_batches_to_classes(space, base, sys.maxsize)  # no batch_size / samples_per_class pair divides: refused now
    starts = list(space.starts)
    published = space.point_in_space(base.flat())
    if published and published not in starts:
        starts.insert(0, published)  # the base config (the paper's setting) where it lies in the space
    name = args.name or f"{space.path.stem}-{dataset}"
    source = f"{_shown(Path(source))} with {_shown(space.path)}'s fixed values" if space.fixed else source
    return SearchPlan(space, base, settings, resources, starts, storage / name, name, storage, source)


def _fit_to_data(plan: SearchPlan, num_classes: int) -> None:
    """Narrow batch choices to what the training classes allow (printed), in place."""
    space, notes = fit_batches_to_classes(plan.space, plan.base, num_classes)
    for note in notes:
        print(f"note: {note}")
    if notes:
        plan.space = space
        plan.base = plan.base.replace(space.fixed)
        plan.starts = [p for p in (space.point_in_space({**plan.base.flat(), **s}) for s in plan.starts) if p]


def _check_model(config: Config, num_classes: int, where: str) -> tuple[str, int]:
    """Build the base model once on the CPU (unknown backbones and impossible depths fail here).

    Its memory is checked for the data's ``num_classes`` (a class-prompt bank too large for the
    machine fails here, not in every trial), while it is built with two classes: only its backbone
    is needed. Returns the hash of its backbone weights (for the run's record) and the bytes of a
    checkpoint of it (trained tensors plus an optimiser's two moments), to check --storage.
    """
    from ..checkpoint import backbone_hash, trained_state
    from ..models import build_model
    from ..models.memory import check_model_memory

    check_model_memory(config.model, num_classes, where=where)
    model = build_model(config.model, num_classes=2, where=where)
    trained = sum(t.numel() * t.element_size() for t in trained_state(model).values())
    return backbone_hash(model), 3 * trained


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _check_free_space(plan: SearchPlan, concurrent: int) -> None:
    """Refuse a search whose checkpoints cannot fit under --storage (Tune keeps one per trial)."""
    needed = plan.checkpoint_bytes * plan.settings.num_samples + plan.free_space_margin(concurrent)
    free = shutil.disk_usage(_existing(plan.storage)).free
    if free < needed:
        raise SearchError(f"--storage {plan.storage}: the search needs about {needed / 2**20:.0f} MB for its "
                          f"checkpoints and records, {free / 2**20:.0f} MB are free")


def _record(plan: SearchPlan, data, backbone_sha256: str) -> SearchRecord:
    from .results import METRIC

    return SearchRecord(
        command=command_line(), cwd=str(Path.cwd()), space=str(plan.space.path),
        space_text=plan.space.path.read_text(encoding="utf-8"),
        space_resolved=[dataclasses.asdict(p) for p in plan.space.params], base=plan.base.to_mapping(),
        settings=plan.settings.to_mapping(), starts=plan.starts, metric=METRIC, mode="max",
        backbone={"name": plan.base.model.backbone, "sha256": backbone_sha256}, data=data.fingerprint,
        versions=package_versions(), git_commit=git_commit())


def _check_resume(plan: SearchPlan, record: SearchRecord) -> None:
    """The run on disk must be this run, and Tune's state of it must restore; else SearchError."""
    from .results import read_experiment_state

    saved = SearchRecord.read(plan.run_dir)
    changes = saved.differences(record)
    if changes:
        more = f"; and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise SearchError(f"--resume: {plan.run_dir} is another search ({'; '.join(changes[:3])}{more}); resume it "
                          f"with its own arguments: {saved.command} --resume")
    if read_experiment_state(plan.run_dir).path is None:  # a damaged state raises, naming the file
        raise SearchError(f"--resume: {plan.run_dir} holds no Tune experiment state (the search stopped before "
                          f"it started); remove the folder or choose another --name")


def _start_ray(address: Optional[str]) -> bool:
    """Attach to ``address``, or start a local cluster bound to loopback; True when we started it."""
    if address is None and "ray" not in sys.modules:
        # Read by Ray when it is imported: its services then bind 127.0.0.1 instead of every
        # interface, and token authentication is on without Ray's warning that it chose so by
        # default. (A process that imported Ray before, e.g. a library user's, keeps Ray's defaults.)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", include_dashboard=False)
    return True


def _concurrency(plan: SearchPlan, data) -> int:
    """Trials that fit the cluster at once; refuses requests it cannot place and unshared paths."""
    import ray

    from .cluster import cluster_hosts, unshared_paths

    resources, ask = ray.cluster_resources(), plan.resources
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    if ask.gpus_per_trial > gpus:
        raise SearchError(f"--gpus-per-trial {ask.gpus_per_trial} but the Ray cluster has {gpus:g} GPUs; "
                          f"use --gpus-per-trial 0 to train on CPUs")
    if ask.cpus_per_trial > cpus:
        raise SearchError(f"--cpus-per-trial {ask.cpus_per_trial} but the Ray cluster has {cpus:g} CPUs")
    shared = {"--storage": str(plan.storage), "data root": str(plan.base.data.data_root),
              "image cache": str(data.train.folder.parent)}
    problems = unshared_paths(shared, ray.nodes())
    if problems:
        raise SearchError(f"the Ray cluster spans {len(cluster_hosts(ray.nodes()))} hosts but these paths are local "
                          f"to this one: {'; '.join(problems)}; put them on a filesystem every node mounts")
    fits = math.floor(gpus / ask.gpus_per_trial + 1e-9) if ask.gpus_per_trial else math.floor(cpus / ask.cpus_per_trial)
    return max(1, min(fits, ask.max_concurrent or fits))


def _tuner(plan: SearchPlan, data, concurrent: int, resume: bool, seed: int):
    """A new Tuner, or the run's own restored one (same trainable, errored trials resumed)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from trainables import train_dml

    from .results import METRIC
    from .searcher import AshaStateCallback, PruningAwareOptunaSearch, make_sampler
    from .guards import FreeSpaceGuard

    settings, ask = plan.settings, plan.resources
    trainable = tune.with_resources(
        tune.with_parameters(train_dml, base=plan.base.to_mapping(), data=data),
        {"cpu": ask.cpus_per_trial, "gpu": ask.gpus_per_trial})
    if resume:
        try:
            return tune.Tuner.restore(str(plan.run_dir), trainable=trainable, resume_errored=True)
        except Exception as error:  # noqa: BLE001 - whatever Tune cannot restore is one line to the user
            raise SearchError(f"--resume: Tune cannot restore {plan.run_dir}: {first_line(error)}") from None
    searcher = PruningAwareOptunaSearch(plan.space.define_by_run(), metric=METRIC, mode="max",
                                        points_to_evaluate=plan.starts or None, sampler=make_sampler(seed),
                                        max_t=settings.max_epochs)
    callbacks = [FreeSpaceGuard(_existing(plan.storage), plan.free_space_margin(concurrent))]
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode="max",
                                  max_t=settings.max_epochs, grace_period=settings.grace_period,
                                  reduction_factor=settings.reduction_factor)
        callbacks.append(AshaStateCallback(scheduler))
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=settings.num_samples,
                                    max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(
            name=plan.name, storage_path=str(plan.storage), callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=METRIC,
                                                    checkpoint_score_order="max"),
            failure_config=tune.FailureConfig(max_failures=ask.max_failures)),
    )


def _summarise(plan: SearchPlan, concurrent: int) -> int:
    """Print the trials, export the best config and write the report; the exit status of the search."""
    from .report import write_report
    from .results import export_best, format_table, read_trials, search_progress

    rows = read_trials(plan.run_dir)
    finished, complete = search_progress(rows, plan.settings.num_samples)
    print("\n" + format_table(rows))
    if not complete:
        print(f"\nPARTIAL: {finished} of {plan.settings.num_samples} trials finished; nothing exported.")
        print(f"report (partial): {write_report(plan.run_dir)}")
        resume = command_line(drop=("--resume",)) + " --resume"
        free, margin = shutil.disk_usage(_existing(plan.run_dir)).free, plan.free_space_margin(concurrent)
        if free < margin:  # the FreeSpaceGuard ended it
            print(f"error: stopped with {free / 2**20:.0f} MB free under --storage {plan.storage} (a search keeps "
                  f"{margin / 2**20:.0f} MB so that no file is cut short); free some space, then resume:\n  {resume}",
                  file=sys.stderr)
            return 1
        print(f"interrupted: resume with --resume\n  {resume}", file=sys.stderr)
        return INTERRUPTED
    try:
        exported, best = export_best(plan.run_dir, plan.run_dir / "best_config.yaml")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"\nbest: trial {best.trial_id}, val MAP@R {best.best_map_at_r:.4f} at epoch {best.best_epoch}")
    print(f"best params: {json.dumps(best.params, default=str)}")
    print(f"best checkpoint: {best.checkpoint}")
    print(f"best config (final training): {exported}\n  python -m semproxy.train --config {exported}")
    print(f"report: {write_report(plan.run_dir)}")
    print(f"TensorBoard: tensorboard --logdir {plan.run_dir}   (Ray's own hint above points at a temporary copy)")
    return 0


def run_search(args: argparse.Namespace) -> int:
    """Run (or resume) a search; returns the process exit code (2: bad input, 130: interrupted)."""
    from ..data.records import DatasetError
    from ..models.backbone import BackboneError

    try:
        plan = plan_search(args)
        if plan.run_dir.exists() and any(plan.run_dir.iterdir()) and not args.resume:
            raise SearchError(f"run {plan.run_dir} exists; pass --resume to continue it or choose another --name")
        if args.resume and not plan.run_dir.is_dir():
            raise SearchError(f"--resume: no run at {plan.run_dir}")
        from ..data.prepared import prepare_data

        data = prepare_data(plan.base)  # before Ray: a bad data root fails fast; one cache for all trials
        num_classes = len(set(data.train.labels.tolist()))
        backbone_sha256, plan.checkpoint_bytes = _check_model(plan.base, num_classes, plan.config_source)
        _fit_to_data(plan, num_classes)
        record = _record(plan, data, backbone_sha256)
        if args.resume:
            _check_resume(plan, record)
        _check_free_space(plan, plan.resources.max_concurrent or 1)
    except (DatasetError, BackboneError, ConfigError, ValueError) as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # see docs/: by design
    started = _start_ray(args.address)
    try:
        try:
            concurrent = _concurrency(plan, data)
            tuner = _tuner(plan, data, concurrent, args.resume, plan.settings.seed)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if not args.resume:
            record.write(plan.run_dir)
        print(f"search {plan.name}: {plan.settings.num_samples} trials x up to {plan.settings.max_epochs} epochs, "
              f"{concurrent} at a time, {plan.settings.scheduler} on {record.metric}")
        print(f"TensorBoard: tensorboard --logdir {plan.run_dir}")
        try:
            tuner.fit()
        except Exception as error:  # noqa: BLE001 - Tune's own failures (a full disk, a lost cluster) in one line
            full = " (the disk under --storage is full)" if shutil.disk_usage(_existing(plan.run_dir)).free < 1 << 20 \
                else ""
            print(f"error: the search stopped{full}: {type(error).__name__}: {first_line(error)}", file=sys.stderr)
            print(f"  resume with --resume once fixed: {command_line(drop=('--resume',)) + ' --resume'}", file=sys.stderr)
            return 1
        try:
            return _summarise(plan, concurrent)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    finally:
        if started:
            import ray

            ray.shutdown()
