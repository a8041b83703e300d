"""Stage 1 of a search: resolve the command line into a :class:`SearchPlan`, reading only its files.

Flags, the space, the base config and the search settings are checked here, each where it came from,
so a bad input is a one-line error before any data is read or Ray starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

from ..config import Config
from ..errors import SearchError, short, shown
from ..presets import default_base_config
from ..run_lock import LOCK_FILE
from .address import check_address
from .settings import SMOKE, SearchSettings, TrialResources, check_values, flag_label
from .space import SearchSpace, fit_batches_to_classes, load_space
from .study import check_new_study, open_storage, storage_url
from .warm_start import warm_start

__all__ = ["SearchPlan", "plan_search", "existing_folder", "resolve_settings", "trial_resources", "given_settings",
           "run_dataset", "run_storage", "run_name", "refuse_occupied", "refuse_other_run", "SPACES", "RECORDS_MARGIN"]

# The shipped spaces (package data: the repository's search_spaces/).
SPACES = Path(str(files("semproxy") / "search_spaces"))
RECORDS_MARGIN = 16 << 20  # free bytes for Tune's experiment state, results and event files


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
    study_url: str  # the Optuna study's storage
    checkpoint_bytes: int = 0  # of the base config's model: sizes the free space a search keeps

    def free_space_margin(self, concurrent: int) -> int:
        """Bytes left free under --storage: a search stops (resumably) below this."""
        return RECORDS_MARGIN + 2 * concurrent * self.checkpoint_bytes

    def fit_to_classes(self, num_classes: int) -> list[str]:
        """Narrow batch choices to what ``num_classes`` training classes allow; returns what was dropped."""
        space, notes = fit_batches_to_classes(self.space, self.base, num_classes)
        if notes:
            self.space, self.base = space, self.base.replace(space.fixed)
            self.starts = [p for p in (space.point_in_space({**self.base.flat(), **s}) for s in self.starts) if p]
        return notes


def existing_folder(path: Path) -> Path:
    """``path``, or its nearest existing parent (where its filesystem can be asked for free space)."""
    path = Path(path)
    while not path.exists():
        path = path.parent
    return path


def _given_flags(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def trial_resources(args: argparse.Namespace) -> TrialResources:
    """The flags of what each trial gets, validated (a one-line error naming the flag)."""
    names = [f.name for f in dataclasses.fields(TrialResources)]
    return dataclasses.replace(TrialResources(), **_given_flags(args, names)).check()


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The search settings given as flags, checked (a bad one names its flag)."""
    return check_values(_given_flags(args, [f.name for f in dataclasses.fields(SearchSettings)]), "command line",
                        label=flag_label)


def run_dataset(args: argparse.Namespace) -> str:
    """The benchmark a search or comparison runs on: ``--dataset``, or the synthetic one with ``--smoke``."""
    dataset = args.dataset or ("synthetic" if args.smoke else None)
    if dataset is None:
        raise SearchError("--dataset is required (cub200, cars196, sop, inshop, inat or synthetic)")
    return dataset


def refuse_occupied(run_dir: Path) -> None:
    """A new run needs a new (or empty) folder; the lock a process left there does not count."""
    if run_dir.exists() and any(path.name != LOCK_FILE for path in run_dir.iterdir()):
        raise SearchError(f"run {run_dir} exists; pass --resume to continue it or choose another --name")


def refuse_other_run(kind: str, run_dir: Path, changes: list[str], command: str) -> None:
    """A resume must be of the run on disk: refuse naming (up to three of) the ``changes`` and its own command."""
    if changes:
        more = f"; and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise SearchError(f"--resume: {run_dir} is another {kind} ({'; '.join(changes[:3])}{more}); resume it "
                          f"with its own arguments: {command} --resume")


def resolve_settings(args: argparse.Namespace, space: SearchSpace) -> SearchSettings:
    """Defaults < the space's ``search:`` < ``--smoke`` < flags; each checked where it came from.

    A space that fixes ``epochs`` sets the length of every trial, and so ASHA's ``max_t``. A
    deterministic search runs one trial at a time: ``--max-concurrent`` above 1 contradicts it.
    """
    flags = given_settings(args)
    values = {**space.search, **(SMOKE if args.smoke else {}), **flags}
    sources = {key: f"{space.path.name} search.{key}" for key in space.search}
    sources.update({key: "--smoke" for key in SMOKE if args.smoke})
    sources.update({key: flag_label(key) for key in flags})
    fixed_epochs = space.fixed.get("epochs")
    if fixed_epochs is not None:
        if "max_epochs" in values and values["max_epochs"] != fixed_epochs and sources["max_epochs"] != "--smoke":
            raise SearchError(f"{space.path}: key 'epochs' fixes every trial at {fixed_epochs} epochs but max_epochs "
                              f"is {values['max_epochs']} ({sources['max_epochs']}): give one of them")
        values["max_epochs"], sources["max_epochs"] = fixed_epochs, f"{space.path.name} epochs"
    epochs = next((p for p in space.sampled if p.name == "epochs"), None)
    settings = dataclasses.replace(SearchSettings(), **values).check("search settings", sources)
    if epochs is not None and max(epochs.args[:2] if epochs.kind != "choice" else epochs.args) > settings.max_epochs:
        raise SearchError(f"{space.path}: key 'epochs' reaches beyond max_epochs {settings.max_epochs} "
                          f"({sources.get('max_epochs', 'default')}), ASHA's limit")
    if settings.deterministic and (getattr(args, "max_concurrent", None) or 1) > 1:
        given = sources["deterministic"]
        raise SearchError(f"--max-concurrent {args.max_concurrent} conflicts with --deterministic"
                          f"{'' if given == '--deterministic' else f' (set by {given})'}, which runs one trial at a "
                          f"time: drop one of them")
    return settings


def run_storage(text: Optional[str]) -> Path:
    """The folder runs live in (``--storage``, default ./runs): a folder this process can write, or one it
    can create; a cloud URI is refused."""
    if text and "://" in text:
        raise SearchError(f"--storage {text}: cloud URIs are not supported (the driver writes the run record and "
                          f"reads results locally); mount the bucket (s3fs, gcsfuse, ...) and give its path")
    path = Path(text or "runs").expanduser().resolve()
    existing = existing_folder(path)
    if not existing.is_dir():
        raise SearchError(f"--storage {shown(path)}: {shown(existing)} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SearchError(f"--storage {shown(path)}: {shown(existing)} is not writable (permissions or a read-only "
                          f"filesystem)")
    return path


def run_name(name: Optional[str], default: str) -> str:
    """``--name`` (else ``default``): one folder name, so that the run stays inside ``--storage``."""
    name = default if name is None else name
    if not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0") or len(name.encode()) > 255:
        raise SearchError(f"--name {short(name)}: expected a folder name (no '/', not '.' or '..', at most 255 "
                          f"bytes): the run lives in STORAGE/NAME")
    return name


def _check_space_path(text: str) -> None:
    """A missing --space file is an error that lists the spaces there are (and the closest name)."""
    path = Path(text).expanduser()
    if path.is_file():
        return
    folders = [f for f in dict.fromkeys((path.parent.resolve(), SPACES.resolve())) if f.is_dir()
               and any(f.glob("*.yaml"))]
    names = {folder: sorted(p.name for p in folder.glob("*.yaml")) for folder in folders}
    close = difflib.get_close_matches(path.name, [n for found in names.values() for n in found], n=1)
    hint = next((f" (did you mean {shown(f / close[0])}?)" for f in folders if close and close[0] in names[f]), "")
    listed = "; ".join(f"spaces in {shown(f)}/: {', '.join(found)}" for f, found in names.items())
    raise SearchError(f"--space {text}: no such file{hint}; {listed or 'no spaces found'}")


def _base_config(args: argparse.Namespace, dataset: str, settings: SearchSettings,
                 space: SearchSpace) -> tuple[Config, str]:
    """The base config with the command line's and the space's fixed values applied; and its source."""
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
        raise SearchError(f"{source}: a search needs validation classes: val_fraction must be above 0")
    return base, (f"{shown(Path(source))} with {shown(space.path)}'s fixed values" if space.fixed else source)


def plan_search(args: argparse.Namespace) -> SearchPlan:
    """Resolve flags, space, base config, settings, starting points and paths; raises SemproxyError."""
    resources = trial_resources(args)
    _check_space_path(args.space)
    space = load_space(args.space)
    dataset = run_dataset(args)
    settings = resolve_settings(args, space)
    storage = run_storage(args.storage)
    base, source = _base_config(args, dataset, settings, space)
    fit_batches_to_classes(space, base, sys.maxsize)  # no batch_size / samples_per_class pair divides: refused now
    starts = list(space.starts)
    published = space.point_in_space(base.flat())
    if published and published not in starts:
        starts.insert(0, published)  # the base config (the paper's setting) where it lies in the space
    check_address(getattr(args, "address", None))
    name = run_name(args.name, f"{space.path.stem}-{dataset}")
    plan = SearchPlan(space, base, settings, resources, starts, storage / name, name, storage, source,
                      storage_url(storage / name, getattr(args, "optuna_storage", None)))
    _check_study(plan, args)
    return plan


def _check_study(plan: SearchPlan, args: argparse.Namespace) -> None:
    """A given storage opens and holds no study of the run's name yet (unless resuming); a warm start's
    points join the starting points. The default SQLite file is only created when the search starts."""
    if getattr(args, "optuna_storage", None) and not args.resume:
        check_new_study(open_storage(plan.study_url), plan.name, plan.study_url)
    if getattr(args, "warm_start", None) and not args.resume:
        if args.warm_top < 1:
            raise SearchError(f"--warm-top must be at least 1, got {args.warm_top}")
        warm = warm_start(args.warm_start, args.warm_top, plan.space, plan.base)
        plan.starts += [point for point in warm.points if point not in plan.starts]
        print(warm.summary())
