"""The search driver behind ``tune.py``, in stages: plan, preflight, build, run, summarise.

1. :func:`~semproxy.search.plan.plan_search` reads the flags, space and base config.
2. :func:`preflight` prepares the data (the image cache, once for every trial), builds the base
   model, writes nothing yet, and checks a resume against the run on disk and the free space.
3. :func:`ray_session` starts a local cluster on loopback (or attaches to ``--address``), and
   :func:`~semproxy.search.components.build_tuner` assembles searcher, scheduler and trainable.
4. :func:`run` runs Tune; 5. :func:`summarise` prints, exports and reports.

Everything that can be wrong with the input fails in stages 1-2, before Ray starts, as a one-line
:class:`~semproxy.errors.SemproxyError`. An interrupted search says so and exits 130; it never
passes for a finished one.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from ..config import Config
from ..errors import INTERRUPTED, SearchError, first_line
from ..metric_names import OBJECTIVE, OBJECTIVE_MODE
from ..prepared import PreparedData
from ..provenance import command_line, git_commit, package_versions
from ..run_lock import run_lock
from .plan import SearchPlan, existing_folder, plan_search, refuse_occupied, refuse_other_run
from .record import SearchRecord

__all__ = ["run_search", "run_planned", "preflight", "Preflight", "ray_session", "run", "summarise"]


@dataclass
class Preflight:
    """What stage 2 established: the prepared data and the run's record."""

    data: PreparedData
    record: SearchRecord


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


def _check_sampled_models(plan: SearchPlan, num_classes: int) -> None:
    """Refuse a sampled model parameter none of whose values can build a model, whatever the others are
    (every trial drawing it would fail): each choice, or both ends of a range, built on the meta device
    with the base config. Structure only (e.g. more prompt layers than blocks): memory depends on the
    other sampled values and on the workers, so it is left to each trial."""
    from ..config import ConfigError
    from ..models.memory import model_memory

    model_fields = {name for name, section in Config.section_of().items() if section == "model"}
    for spec in plan.space.sampled:
        if spec.name not in model_fields or spec.kind == "fixed":
            continue
        values = spec.args if spec.kind == "choice" else spec.args[:2]
        conditions = {key: allowed[0] for key, allowed in spec.when.items()}
        failures = []
        for value in values:
            try:
                config = plan.base.replace({**conditions, spec.name: value}, where=str(plan.space.path))
                model_memory(config.model, num_classes, where=f"{plan.space.path}: {spec.name} {value}")
            except ConfigError as error:
                failures.append(error)
        if len(failures) == len(values):
            raise SearchError(f"no value of {spec.name} ({spec.kind} {list(spec.args)}) gives a model, so every trial "
                              f"would fail: {failures[0]}")


def _record(plan: SearchPlan, data: PreparedData, backbone_sha256: str) -> SearchRecord:
    return SearchRecord(
        command=command_line(), cwd=str(Path.cwd()), space=str(plan.space.path),
        space_text=plan.space.path.read_text(encoding="utf-8"),
        space_resolved=[dataclasses.asdict(p) for p in plan.space.params], base=plan.base.to_mapping(),
        settings=plan.settings.to_mapping(), starts=plan.starts, metric=OBJECTIVE, mode=OBJECTIVE_MODE,
        backbone={"name": plan.base.model.backbone, "sha256": backbone_sha256}, data=data.fingerprint,
        versions=package_versions(), git_commit=git_commit(), study={"storage": plan.study_url, "name": plan.name})


def _check_resume(plan: SearchPlan, record: SearchRecord) -> None:
    """The run on disk must be this run, and Tune's state of it must read; else SearchError."""
    from .results import read_experiment_state

    saved = SearchRecord.read(plan.run_dir)
    refuse_other_run("search", plan.run_dir, saved.differences(record), saved.command)
    if read_experiment_state(plan.run_dir).path is None:  # a damaged state raises, naming the file
        raise SearchError(f"--resume: {plan.run_dir} holds no Tune experiment state (the search stopped before "
                          f"it started); remove the folder or choose another --name")


def _check_free_space(plan: SearchPlan, concurrent: int) -> None:
    """Refuse a search whose checkpoints cannot fit under --storage (Tune keeps one per trial)."""
    needed = plan.checkpoint_bytes * plan.settings.num_samples + plan.free_space_margin(concurrent)
    free = shutil.disk_usage(existing_folder(plan.storage)).free
    if free < needed:
        raise SearchError(f"--storage {plan.storage}: the search needs about {needed / 2**20:.0f} MB for its "
                          f"checkpoints and records, {free / 2**20:.0f} MB are free")


def preflight(plan: SearchPlan, resume: bool) -> Preflight:
    """Stage 2: everything that reads data or builds a model, before Ray starts; writes nothing."""
    if not resume:
        refuse_occupied(plan.run_dir)
    from ..prepared import prepare_data

    data = prepare_data(plan.base)  # a bad data root fails fast; one cache for all trials
    num_classes = len(set(data.train.labels.tolist()))
    backbone_sha256, plan.checkpoint_bytes = _check_model(plan.base, num_classes, plan.config_source)
    _check_sampled_models(plan, num_classes)
    for note in plan.fit_to_classes(num_classes):
        print(f"note: {note}")
    record = _record(plan, data, backbone_sha256)
    if resume:
        _check_resume(plan, record)
    _check_free_space(plan, plan.resources.max_concurrent or 1)
    return Preflight(data, record)


@contextmanager
def ray_session(address: Optional[str]) -> Iterator[None]:
    """Attach to ``address``, or start a local cluster bound to loopback (stopped again after)."""
    if address is None and "ray" not in sys.modules:
        # Read by Ray when it is imported: its services then bind 127.0.0.1 instead of every
        # interface, and token authentication is on without Ray's warning that it chose so by
        # default. (A process that imported Ray before, e.g. a library user's, keeps Ray's defaults.)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    # A snapshot per checkpoint is forced by CheckpointConfig(num_to_keep) and is what keeps the
    # experiment state consistent with the one kept checkpoint: by design, so Ray's warning is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    started = not ray.is_initialized()
    if started:
        if address:
            try:
                ray.init(address=address, log_to_driver=True)
            except (ConnectionError, ValueError, RuntimeError) as error:  # e.g. 'auto' with no cluster running
                raise SearchError(f"--address {address}: {first_line(error)}") from None
        else:
            ray.init(address="local", include_dashboard=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def cluster_concurrency(plan: SearchPlan, data: PreparedData) -> int:
    """Trials that fit the cluster at once (one for a deterministic search); refuses requests it cannot
    place and unshared paths."""
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
    # Deterministic: one at a time, so every result is in before the scheduler or searcher is asked again.
    cap = 1 if plan.settings.deterministic else ask.max_concurrent or fits
    return max(1, min(fits, cap))


def _resume_command() -> str:
    return command_line(drop=("--resume",)) + " --resume"


def run(tuner, plan: SearchPlan) -> bool:
    """Stage 4: run Tune; False (said on stderr) when Tune itself failed (a full disk, a lost cluster)."""
    try:
        tuner.fit()
    except Exception as error:  # noqa: BLE001 - Tune's own failures, in one line, resumable
        full = shutil.disk_usage(existing_folder(plan.run_dir)).free < 1 << 20
        print(f"error: the search stopped{' (the disk under --storage is full)' if full else ''}: "
              f"{type(error).__name__}: {first_line(error)}", file=sys.stderr)
        print(f"  resume with --resume once fixed: {_resume_command()}", file=sys.stderr)
        return False
    return True


def _stopped_early(plan: SearchPlan, concurrent: int) -> int:
    """Why a search ended before its trials did (a filling disk, or Ctrl-C), and its exit status."""
    free, margin = shutil.disk_usage(existing_folder(plan.run_dir)).free, plan.free_space_margin(concurrent)
    if free < margin:  # the FreeSpaceGuard ended it
        print(f"error: stopped with {free / 2**20:.0f} MB free under --storage {plan.storage} (a search keeps "
              f"{margin / 2**20:.0f} MB so that no file is cut short); free some space, then resume:\n"
              f"  {_resume_command()}", file=sys.stderr)
        return 1
    print(f"interrupted: resume with --resume\n  {_resume_command()}", file=sys.stderr)
    return INTERRUPTED


def summarise(plan: SearchPlan, concurrent: int) -> int:
    """Stage 5: print the trials, export the best config and write the report; the exit status."""
    from .report import write_report
    from .export import export_best
    from .results import best_trial_so_far, feasible, format_table, read_trials, search_progress, within

    rows = read_trials(plan.run_dir)
    finished, complete = search_progress(rows, plan.settings.num_samples)
    print("\n" + format_table(rows, plan.settings.max_epochs))
    if not complete:
        print(f"\nPARTIAL: {finished} of {plan.settings.num_samples} trials finished; nothing exported.")
        print(f"report (partial): {write_report(plan.run_dir, rows=rows)}")
        return _stopped_early(plan, concurrent)
    constraints = plan.settings.constraint_specs
    if constraints:
        keep = sum(r.status != "ERROR" and feasible(r, constraints) for r in rows)
        print(f"\nconstraints {', '.join(map(str, constraints))}: {keep} of {len(rows)} trials finished within them")
    if best_trial_so_far(rows, constraints) is None:
        print(f"\nno trial reported a validation MAP@R without failing{within(constraints)}: nothing exported")
        print(f"report: {write_report(plan.run_dir, rows=rows)}")
        return 1
    exported = export_best(plan.run_dir, plan.run_dir / "best_config.yaml", rows=rows)
    best = exported.row
    print(f"\nbest: trial {best.trial_id}, val MAP@R {best.best_map_at_r:.4f} at epoch {best.best_epoch}")
    print(f"best params: {json.dumps(best.params, default=str)}")
    print(f"best checkpoint: {best.checkpoint}")
    print(f"best config (final training, {exported.epochs_note}): {exported.path}\n"
          f"  python -m semproxy.train --config {exported.path}")
    print(f"report: {write_report(plan.run_dir, rows=rows)}")
    print(f"TensorBoard: tensorboard --logdir {plan.run_dir}   (Ray's own hint above points at a temporary copy)")
    return 0


def run_search(args: argparse.Namespace) -> int:
    """Run (or resume) a search; the exit status (bad input raises a SemproxyError; 130: interrupted)."""
    plan = plan_search(args)
    if args.resume and not plan.run_dir.is_dir():
        raise SearchError(f"--resume: no run at {plan.run_dir}")
    with run_lock(plan.run_dir, "search"):  # before reading a state that another driver may be writing
        checked = preflight(plan, args.resume)
        with ray_session(args.address):
            return run_planned(plan, checked, args.resume)


def run_planned(plan: SearchPlan, checked: Preflight, resume: bool) -> int:
    """Stages 3-5 of a planned and preflighted search, inside a :func:`ray_session`; the exit status."""
    from .components import build_tuner  # imports Ray: only once ray_session has set it up

    concurrent = cluster_concurrency(plan, checked.data)
    tuner = build_tuner(plan, checked.data, concurrent, resume=resume)
    if not resume:
        checked.record.write(plan.run_dir)
    objectives = " and ".join(o.label for o in plan.settings.objective_list)
    print(f"search {plan.name}: {plan.settings.budget}, "
          f"{concurrent} at a time{' (deterministic)' if plan.settings.deterministic else ''}, "
          f"{plan.settings.scheduler} on {checked.record.metric}, optimising {objectives}")
    print(f"base config: {plan.config_source}")
    print(f"TensorBoard: tensorboard --logdir {plan.run_dir}")
    print(f"live dashboard: python tune.py dashboard {plan.run_dir}   (the study: {plan.study_url})")
    return summarise(plan, concurrent) if run(tuner, plan) else 1
