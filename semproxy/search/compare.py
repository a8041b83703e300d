"""``tune.py compare``: several methods on one dataset, each searched with the same budget, then its best
configuration trained again with several seeds and tested.

One run folder holds it all::

    RUN/compare.json                 the plan: spaces, the budget, the final seeds, the command
    RUN/searches/<space>/            one ordinary search run per space (tune.py report/export work on it)
    RUN/final/<space>/config.yaml    the search's best config as ``tune.py export`` gives it
    RUN/final/<space>/seed<S>/       an ordinary final training with seed S (metrics.json, checkpoint)
    RUN/compare.md, compare.csv, report/compare.html   the table (semproxy.search.compare_table)

The budget (every :class:`~semproxy.search.settings.SearchSettings` value: trials, epochs, scheduler,
seed, ...) is resolved once, from the spaces' shared ``search:`` values, ``--smoke`` and the flags,
and given to every search as if on its command line. The searches run in this process through the
search driver (one Ray session for all of them), then the final runs. ``--resume`` continues the
same comparison: finished searches and final runs are skipped, an interrupted search resumes as
``tune.py --resume`` would, an interrupted final run continues from its checkpoint (or restarts when
it saved none); a different plan is refused, naming what differs.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..atomic import write_text_atomic
from ..config import Config
from ..errors import ConfigError, SearchError, shown
from ..provenance import command_line
from ..run_lock import run_lock
from ..typed_config import short
from .plan import (SPACES, SearchPlan, given_settings, plan_search, refuse_occupied, refuse_other_run, run_name,
                   run_dataset, run_storage)
from .record import RECORD_FILE
from .runner import Preflight
from .settings import SMOKE, SearchSettings, flag_label
from .space import SearchSpace, load_space

__all__ = ["PLAN_FILE", "TABLE9", "ComparePlan", "plan_compare", "run_compare", "final_folder", "search_folder"]

PLAN_FILE = "compare.json"
#: The per-method spaces of the paper's Table 9. LoRA (lora.yaml) is not in the paper: --spaces adds it.
TABLE9 = ("full", "linear", "bitfit", "adapter", "vpt", "vptsp")


@dataclass
class ComparePlan:
    """What a comparison is: recorded in ``compare.json`` and checked on ``--resume``."""

    dataset: str
    spaces: dict[str, dict[str, str]]   # name -> {"path", "method", "sha256" of the file as written}
    budget: dict[str, Any]              # SearchSettings, the same for every search
    repeats: int
    final_seeds: list[int]              # final run k trains with final_seeds[k] (budget seed + k)
    base: str                           # the base config (--config, else the dataset's) and backbone
    command: str

    def write(self, run_dir: Path) -> Path:
        return write_text_atomic(run_dir / PLAN_FILE, json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, run_dir: Path) -> "ComparePlan":
        path = run_dir / PLAN_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})
        except FileNotFoundError:
            raise ConfigError(f"{run_dir}: not a comparison ({PLAN_FILE} not found)") from None
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{path}: damaged comparison plan "
                              f"({type(error).__name__}: {short(str(error))})") from None

    def differences(self, other: "ComparePlan") -> list[str]:
        """What ``other`` (the resuming command's plan) would change, as short phrases; [] when none."""
        changes = []
        if self.dataset != other.dataset:
            changes.append(f"dataset {self.dataset} -> {other.dataset}")
        if list(self.spaces) != list(other.spaces):
            changes.append(f"spaces {' '.join(self.spaces)} -> {' '.join(other.spaces)}")
        else:
            changes += [f"space {name} (its file changed)" for name, space in self.spaces.items()
                        if space["sha256"] != other.spaces[name]["sha256"]]
        changes += [f"{flag_label(key)} {short(value)} -> {short(other.budget.get(key))}"
                    for key, value in self.budget.items() if other.budget.get(key) != value]
        if self.repeats != other.repeats:
            changes.append(f"--repeats {self.repeats} -> {other.repeats}")
        elif self.final_seeds != other.final_seeds:
            changes.append(f"final seeds {self.final_seeds} -> {other.final_seeds}")
        if self.base != other.base:
            changes.append(f"base config {self.base} -> {other.base}")
        return changes


def search_folder(run_dir: Path, name: str) -> Path:
    return run_dir / "searches" / name


def final_folder(run_dir: Path, name: str, seed: Optional[int] = None) -> Path:
    """``RUN/final/<name>``, or the final run of ``seed`` inside it."""
    folder = run_dir / "final" / name
    return folder if seed is None else folder / f"seed{seed}"


# -- stage 1: the plan ---------------------------------------------------------------------------
def _spaces(args: argparse.Namespace) -> dict[str, tuple[Path, SearchSpace, str]]:
    """name -> (file, space, the method it fixes); a missing file, a repeated name or a space that does
    not fix one method is a one-line error."""
    given = args.spaces or [str(SPACES / f"{name}.yaml") for name in TABLE9]
    found: dict[str, tuple[Path, SearchSpace, str]] = {}
    for text in given:
        path = Path(text).expanduser()
        if not path.is_file():
            raise SearchError(f"--spaces {text}: no such file (shipped spaces: {', '.join(TABLE9)}, lora in "
                              f"{shown(SPACES)}/)")
        name = path.stem
        if name in found:
            if found[name][0] == path.resolve():
                raise SearchError(f"--spaces: {text} is given twice")
            raise SearchError(f"--spaces: {text} has the name of {found[name][0]} (each space's runs live under its "
                              f"file name: rename one)")
        space = load_space(path)
        method = space.fixed.get("method")
        if method is None:
            sampled = any(p.name == "method" for p in space.params)
            raise SearchError(f"--spaces {text} {'samples' if sampled else 'does not fix'} the method: a comparison "
                              f"searches one method per space ("
                              + ("peft_compare.yaml-like spaces compare methods inside one search)" if sampled
                                 else "add 'method: NAME' to its params)"))
        found[name] = (path.resolve(), space, method)
    return found


def _budget(args: argparse.Namespace, spaces: list[SearchSpace]) -> SearchSettings:
    """Every search setting, once: the spaces' ``search:`` values (which must agree where no flag or
    --smoke decides), then --smoke, then the flags."""
    flags = given_settings(args)
    decided = set(flags) | (set(SMOKE) if args.smoke else set())
    shared: dict[str, Any] = {}
    for key in dict.fromkeys(k for space in spaces for k in space.search):
        said = {space.path.name: short(space.search[key]) if key in space.search else "unset" for space in spaces}
        if key not in decided and len(set(said.values())) > 1:
            values = ", ".join(f"{name}: {value}" for name, value in said.items())
            raise SearchError(f"the spaces set search.{key} differently ({values}): give {flag_label(key)}, so that "
                              f"every search has the same budget")
        shared[key] = next(space.search[key] for space in spaces if key in space.search)
    values = {**shared, **(SMOKE if args.smoke else {}), **flags}
    return dataclasses.replace(SearchSettings(), **values).check("the comparison's budget")


def plan_compare(args: argparse.Namespace) -> tuple[ComparePlan, Path, list[SearchPlan]]:
    """The comparison's plan, its run folder and one search plan per space; reads only files, writes
    nothing; every bad input is a one-line SemproxyError."""
    if args.repeats < 1:
        raise SearchError(f"--repeats must be at least 1, got {args.repeats}")
    dataset = run_dataset(args)
    spaces = _spaces(args)
    budget = _budget(args, [space for _, space, _ in spaces.values()])
    run_dir = run_storage(args.storage) / run_name(args.name, f"compare-{dataset}")
    searches = []
    for name, (path, _, _) in spaces.items():
        flags = {**vars(args), **budget.to_mapping(), "space": str(path), "dataset": dataset, "name": name,
                 "storage": str(run_dir / "searches"), "optuna_storage": None, "warm_start": None}
        searches.append(plan_search(argparse.Namespace(**flags)))
    plan = ComparePlan(
        dataset=dataset, repeats=args.repeats, budget=budget.to_mapping(),
        spaces={name: {"path": str(path), "method": method, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
                for name, (path, _, method) in spaces.items()},
        final_seeds=[budget.seed + k for k in range(args.repeats)],
        base=", ".join([str(Path(args.config).expanduser().resolve()) if args.config else f"the {dataset} default",
                        *([f"backbone {args.backbone}"] if args.backbone else []),
                        *([f"weights {Path(args.weights).expanduser().resolve()}"] if args.weights else [])]),
        command=command_line(drop=("--resume",)))
    return plan, run_dir, searches


def _check_run(plan: ComparePlan, run_dir: Path, resume: bool) -> None:
    """A new comparison needs a new folder; a resume needs this comparison's folder."""
    exists = (run_dir / PLAN_FILE).is_file()
    if not resume:
        refuse_occupied(run_dir)
    if resume and not exists:
        raise SearchError(f"--resume: no comparison at {run_dir} ({PLAN_FILE} not found)")
    if resume:
        saved = ComparePlan.read(run_dir)
        refuse_other_run("comparison", run_dir, saved.differences(plan), saved.command)


# -- stage 2: the searches -----------------------------------------------------------------------
def _search_state(plan: SearchPlan) -> str:
    """``new``, ``resume`` (started, unfinished) or ``done`` (every trial finished)."""
    from .results import read_trials, search_progress

    if not (plan.run_dir / RECORD_FILE).is_file():
        return "new"
    _, complete = search_progress(read_trials(plan.run_dir), plan.settings.num_samples)
    return "done" if complete else "resume"


def _preflight(searches: list[SearchPlan]) -> tuple[dict[str, str], dict[str, Preflight]]:
    """Each search's state, and stage 2 of each unfinished one (data, model, resume checks): before
    Ray starts or the comparison writes anything."""
    from .runner import preflight

    states = {plan.name: _search_state(plan) for plan in searches}
    return states, {plan.name: preflight(plan, states[plan.name] == "resume") for plan in searches
                    if states[plan.name] != "done"}


def _run_searches(searches: list[SearchPlan], states: dict[str, str], checked: dict[str, Preflight],
                  address: Optional[str]) -> int:
    """Each unfinished search through the search driver, all in one Ray session; the first failing
    search's exit status (it said why and how to resume), else 0."""
    from .report import write_report
    from .runner import ray_session, run_planned

    for number, plan in enumerate(searches, 1):
        if states[plan.name] == "done":
            print(f"search {number}/{len(searches)} {plan.name}: finished before, skipped ({plan.run_dir})")
            if not (plan.run_dir / "report" / "report.html").is_file():
                write_report(plan.run_dir)
    pending = [plan for plan in searches if plan.name in checked]
    if not pending:
        return 0
    with ray_session(address):
        for plan in pending:
            number = searches.index(plan) + 1
            verb = "resuming" if states[plan.name] == "resume" else "running"
            print(f"\n=== search {number}/{len(searches)} {plan.name}: {verb} ({plan.run_dir})", flush=True)
            status = run_planned(plan, checked[plan.name], states[plan.name] == "resume")
            if status:
                return status
    return 0


# -- stage 3: the final runs ---------------------------------------------------------------------
def _final_runs(plan: ComparePlan, run_dir: Path) -> None:
    """Each space's best config exported once, then trained with every final seed not trained yet."""
    from ..checkpoint import CHECKPOINT_FILE
    from ..train.final import METRICS_FILE, train_final
    from .export import export_best

    total = len(plan.spaces) * len(plan.final_seeds)
    done = 0
    for name in plan.spaces:
        exported = final_folder(run_dir, name) / "config.yaml"
        if not exported.is_file():
            try:
                done_export = export_best(search_folder(run_dir, name), exported)
            except ConfigError as error:
                raise type(error)(f"search {name}: {error}") from None
            best = done_export.row
            print(f"\n{name}: best trial {best.trial_id} (val MAP@R {best.best_map_at_r:.4f}) exported to {exported}, "
                  f"trains {done_export.epochs_note}")
        for seed in plan.final_seeds:
            done += 1
            out = final_folder(run_dir, name, seed)
            if (out / METRICS_FILE).is_file():
                print(f"final {done}/{total} {name} seed {seed}: finished before, skipped")
                continue
            resume = (out / CHECKPOINT_FILE).is_file()
            config = Config.load(exported).replace({"seed": seed}, where=f"{name} final seed")
            print(f"final {done}/{total} {name} seed {seed}: {'resuming from its checkpoint' if resume else 'training'}"
                  f" ({config.optim.epochs} epochs) in {out}", flush=True)
            with run_lock(out, "training"):
                result = train_final(config, out, resume=resume, progress=False, source=str(exported))
            print(f"  {result.summary()}", flush=True)


def run_compare(args: argparse.Namespace) -> int:
    """Plan, search, train and tabulate (or resume doing so); the exit status."""
    plan, run_dir, searches = plan_compare(args)
    with ExitStack() as held:
        held.enter_context(run_lock(run_dir, "comparison"))
        _check_run(plan, run_dir, args.resume)
        for search in searches:  # each search's folder too, before its state is read
            held.enter_context(run_lock(search.run_dir, "search"))
        return _run_locked(args, plan, run_dir, searches)


def _run_locked(args: argparse.Namespace, plan: ComparePlan, run_dir: Path, searches: list[SearchPlan]) -> int:
    """:func:`run_compare` once it holds the comparison's folder."""
    from .compare_report import write_compare_page
    from .compare_table import compare_results, format_markdown, write_tables

    states, checked = _preflight(searches)
    if not args.resume:
        plan.write(run_dir)
    budget = SearchSettings(**plan.budget)
    print(f"comparison {run_dir.name} on {plan.dataset}: {', '.join(plan.spaces)}; each search {budget.budget} "
          f"({budget.searcher}, {budget.scheduler}, seed {budget.seed}); "
          f"then {plan.repeats} final runs each (seeds {', '.join(map(str, plan.final_seeds))})", flush=True)
    status = _run_searches(searches, states, checked, args.address)
    if status:
        return status
    _final_runs(plan, run_dir)
    results = compare_results(plan, run_dir)
    markdown, table_csv = write_tables(results, run_dir)
    page = write_compare_page(results, plan, run_dir)
    print("\n" + format_markdown(results))
    print(f"\nwrote {markdown}, {table_csv} and {page}")
    return 0
