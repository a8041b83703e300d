"""Reading a finished (or interrupted) search: the trials table and the best trial (exported by
semproxy.search.export).

Works from the run directory's plain files alone, so ``tune.py export RUN_DIR`` and ``report``
need neither the driver nor Ray, and never execute anything a run folder holds (run folders live on
shared storage): the run record (``search.json``), Tune's experiment state parsed as JSON (trial
ids, statuses and folders; its pickled fields are never decoded), each trial's ``params.json``,
``progress.csv`` and ``error.txt``, the driver's record of every reported epoch
(``trial-history.json``, which fills the epochs a restarted trial's ``progress.csv`` lost), and ASHA's
decisions (``scheduler-decisions.json``). Damaged files are one-line errors naming them.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError
from ..metric_names import OBJECTIVE, metric_name
from ..typed_config import short
from .objectives import COSTS, Constraint

__all__ = ["TrialRow", "ExperimentState", "Decision", "DECISIONS_FILE", "HISTORY_FILE", "HISTORY_FIELDS",
           "read_experiment_state", "read_trials", "read_decisions", "read_history", "feasible", "within",
           "best_trial_so_far", "best_trial", "format_table", "format_value", "search_progress", "planned_epochs",
           "trial_kind", "trial_outcome"]

FINISHED = ("TERMINATED", "ERROR")  # Tune's statuses of a trial that will not run again
TRIAL_FOLDER = re.compile(r"^[A-Za-z0-9_]+?_([0-9a-f]{8})_(\d+)_")  # <trainable>_<trial id>_<number>_<params>
#: ASHA's decisions as the scheduler took them (semproxy.search.schedulers.RecordingASHA), plain JSON.
DECISIONS_FILE = "scheduler-decisions.json"
#: Every epoch each trial reported, as the driver received it (semproxy.search.history), plain JSON.
HISTORY_FILE = "trial-history.json"
#: What that file keeps of each result: what a trial's row is built from.
HISTORY_FIELDS = ("training_iteration", OBJECTIVE, metric_name("val", "recall@1"), "checkpoint_dir_name", *COSTS)


@dataclass
class TrialRow:
    """One trial's outcome: best validation MAP@R over its epochs, and where it stopped."""

    trial_id: str
    status: str
    params: dict[str, Any]
    epochs: int
    best_map_at_r: float
    best_epoch: int
    recall_at_1: float
    checkpoint: Optional[str]
    error: Optional[str]
    path: str
    curve: dict[int, float]    # validation MAP@R per epoch (finite values only)
    final: dict[str, float] = field(default_factory=dict)  # as the searcher was told: best MAP@R, last costs

    @property
    def number(self) -> Optional[int]:
        """Tune's creation index of the trial (1, 2, ...), from its folder name; None when not there."""
        named = TRIAL_FOLDER.search(Path(self.path).name)
        return int(named.group(2)) if named and named.group(1) == self.trial_id else None

    @property
    def label(self) -> str:
        """How the report names the trial, in its table and figures alike: ``#<number>``."""
        return f"#{self.number}" if self.number is not None else self.trial_id


@dataclass(frozen=True)
class Decision:
    """One decision ASHA took when a trial first reached a rung: stopped when ``value < cutoff``.

    ``cutoff`` is the quantile of the ``compared`` values recorded at the rung at that moment (None
    when there were none: the trial continued).
    """

    trial: str
    rung: int
    value: float
    cutoff: Optional[float]
    compared: int
    stopped: bool


@dataclass
class ExperimentState:
    """What Tune's newest experiment-state file says of each trial: status and folder."""

    path: Optional[Path]
    statuses: dict[str, str]
    folders: dict[str, str]


def _experiment_state_files(run_dir: Path) -> list[Path]:
    """Tune's experiment-state snapshots, newest first (one per driver session, named by its start)."""
    return sorted(run_dir.glob("experiment_state-*.json"), key=lambda p: p.name, reverse=True)


_DAMAGED = (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError)


def _parse_state(path: Path) -> ExperimentState:
    """One experiment-state file as JSON; raises one of :data:`_DAMAGED` when it is damaged."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    statuses, folders = {}, {}
    for entry in raw["trial_data"]:
        trial = json.loads(entry[0])
        statuses[trial["trial_id"]] = str(trial["status"])
        folders[trial["trial_id"]] = str(trial["relative_logdir"])
    return ExperimentState(path, statuses, folders)


def read_experiment_state(run_dir: str | Path) -> ExperimentState:
    """Parse the newest experiment state as JSON; a damaged one is a one-line ConfigError naming it (and
    the newest older snapshot that reads, if one does).

    A truncated state (a full disk, a kill mid-write) must never pass for a shorter run: Tune would
    silently restart the search inside the folder, and an export would lose trials.
    """
    files = _experiment_state_files(Path(run_dir))
    if not files:
        return ExperimentState(None, {}, {})
    try:
        return _parse_state(files[0])
    except _DAMAGED as error:
        why = type(error).__name__  # its text is long, and the hint must fit the line
    older = next((f for f in files[1:] if _reads(f)), None)
    hint = (f"; an older snapshot, {older.name}, reads (delete the damaged file to use it)" if older
            else "; no older snapshot reads" if len(files) > 1 else "")
    raise ConfigError(f"{files[0]}: damaged Tune experiment state ({why}){hint}")


def _reads(path: Path) -> bool:
    try:
        _parse_state(path)
    except _DAMAGED:
        return False
    return True


def _read_progress(path: Path) -> list[dict[str, str]]:
    if not path.is_file() or not path.stat().st_size:
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{path}: unreadable progress file ({type(error).__name__}: {short(str(error))})") from None


def _number(text: Optional[str | float]) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except (ValueError, TypeError):
        return math.nan


def _error_line(trial_path: Path) -> Optional[str]:
    error_file = trial_path / "error.txt"
    if not error_file.is_file():
        return None
    lines = [line.strip() for line in error_file.read_text(errors="replace").splitlines() if line.strip()]
    # The last line of a traceback names the exception; keep it short for a table.
    return lines[-1][:200] if lines else "error"


def _read_params(trial_path: Path) -> dict[str, Any]:
    path = trial_path / "params.json"
    if not path.is_file():
        return {}
    try:
        params = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{path}: unreadable trial parameters ({type(error).__name__})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: trial parameters are not a mapping")
    return params


def _trial_folders(run_dir: Path, state: ExperimentState) -> dict[str, Path]:
    """Trial id -> folder: those of the experiment state, plus trial folders created after its snapshot."""
    folders = {trial: run_dir / folder for trial, folder in state.folders.items()}
    for folder in run_dir.iterdir():
        named = TRIAL_FOLDER.search(folder.name)
        if named and (folder / "params.json").is_file():
            folders.setdefault(named.group(1), folder)
    return folders


def _read_trial(trial_id: str, status: str, folder: Path, reported: dict[int, dict[str, Any]]) -> TrialRow:
    """``reported``: the driver's record of the trial's epochs; its ``progress.csv`` lines take precedence
    (they may be newer than the record's last snapshot), the record fills the epochs the file lost."""
    by_epoch: dict[int, dict[str, Any]] = dict(reported)
    for r in _read_progress(folder / "progress.csv"):
        epoch = _number(r.get("training_iteration"))
        if math.isfinite(epoch):
            by_epoch[int(epoch)] = r  # a restarted trial reports an epoch again: the later line counts
    curve = {e: _number(r.get(OBJECTIVE)) for e, r in by_epoch.items() if math.isfinite(_number(r.get(OBJECTIVE)))}
    best_value, best_epoch, recall, checkpoint = math.nan, 0, math.nan, None
    if curve:
        best_epoch = max(curve, key=lambda epoch: (curve[epoch], -epoch))  # the first epoch of the best value
        best_value, recall = curve[best_epoch], _number(by_epoch[best_epoch].get(metric_name("val", "recall@1")))
        name = by_epoch[best_epoch].get("checkpoint_dir_name") or ""
        checkpoint = str(folder / name) if name and (folder / name).is_dir() else None
    error = _error_line(folder) if status == "ERROR" else None
    last = by_epoch[max(by_epoch)] if by_epoch else {}
    final = {key: _number(last.get(key)) for key in COSTS if math.isfinite(_number(last.get(key)))}
    if math.isfinite(best_value):
        final[OBJECTIVE] = best_value
    return TrialRow(trial_id, status, _read_params(folder), max(by_epoch, default=0), best_value, best_epoch,
                    recall, checkpoint, error, str(folder), curve, final)


def read_trials(run_dir: str | Path) -> list[TrialRow]:
    """Every trial of the run with its best validation MAP@R, best first (unscored ones last).

    A trial folder the experiment state does not list yet (the driver stopped before its next
    snapshot) has status ``UNRECORDED``.
    """
    run_dir = Path(run_dir)
    state = read_experiment_state(run_dir)
    history = read_history(run_dir)
    rows = [_read_trial(trial, state.statuses.get(trial, "UNRECORDED"), folder, history.get(trial, {}))
            for trial, folder in _trial_folders(run_dir, state).items()]
    rows.sort(key=lambda r: (math.isnan(r.best_map_at_r), -(r.best_map_at_r if not math.isnan(r.best_map_at_r) else 0)))
    return rows


def read_decisions(run_dir: str | Path) -> Optional[list[Decision]]:
    """ASHA's decisions in the order it took them; None when the run recorded none (an older run, or
    another scheduler). A damaged file is a one-line ConfigError naming it."""
    path = Path(run_dir) / DECISIONS_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return [Decision(str(d["trial"]), int(d["rung"]), float(d["value"]),
                         None if d["cutoff"] is None else float(d["cutoff"]), int(d["compared"]), bool(d["stopped"]))
                for d in raw["decisions"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: damaged scheduler decisions ({type(error).__name__}: "
                          f"{short(str(error))})") from None


def read_history(run_dir: str | Path) -> dict[str, dict[int, dict[str, Any]]]:
    """The driver's record of every trial's reported epochs, ``{trial id: {epoch: {field: value}}}``;
    empty when the run has none (an older run). A damaged file is a one-line ConfigError naming it."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))["trials"]
        return {str(trial): {int(epoch): {key: entry[key] for key in HISTORY_FIELDS if key in entry}
                             for epoch, entry in epochs.items()}
                for trial, epochs in raw.items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"{path}: damaged trial history ({type(error).__name__}: {short(str(error))})") from None


def planned_epochs(row: TrialRow, max_epochs: int) -> int:
    """The epochs a trial was to train: its own ``epochs`` when the space samples it, else the search's."""
    epochs = row.params.get("epochs")
    return int(epochs) if isinstance(epochs, (int, float)) else max_epochs


def trial_kind(row: TrialRow, planned: int) -> str:
    """What became of a trial: ``completed`` (all its ``planned`` epochs), ``stopped`` (by the scheduler,
    before them), ``error`` or ``unfinished``."""
    if row.status == "ERROR":
        return "error"
    if row.status != "TERMINATED":
        return "unfinished"
    return "completed" if row.epochs >= planned else "stopped"


def trial_outcome(row: TrialRow, planned: int) -> str:
    """:func:`trial_kind` in words: ``completed (6 epochs)``, ``stopped at epoch 2 of 6``, ``ERROR``, or
    Tune's status and how far it got."""
    kind = trial_kind(row, planned)
    if kind == "error":
        return "ERROR"
    if kind == "completed":
        return f"completed ({row.epochs} epochs)"
    if kind == "stopped":
        return f"stopped at epoch {row.epochs} of {planned}"
    return f"{row.status} at epoch {row.epochs} of {planned}" if row.epochs else row.status


def search_progress(rows: list[TrialRow], num_samples: int) -> tuple[int, bool]:
    """(trials that finished, whether the whole search did): every trial started and none to run again."""
    finished = sum(r.status in FINISHED for r in rows)
    return finished, finished >= num_samples


def feasible(row: TrialRow, constraints: tuple[Constraint, ...]) -> bool:
    """Whether the trial keeps every constraint of its run, judged as the searcher judged it
    (``semproxy.search.searcher``): its best validation MAP@R and its last epoch's costs, a value it never
    reported read as inf."""
    return all(c.violation(row.final.get(c.metric, math.inf)) <= 0 for c in constraints)


def within(constraints: tuple[Constraint, ...]) -> str:
    """`` within trainable_params<=1e+06, ...`` for a run with constraints (what its best trial keeps), else ''."""
    return f" within {', '.join(map(str, constraints))}" if constraints else ""


def best_trial_so_far(rows: list[TrialRow], constraints: tuple[Constraint, ...] = ()) -> Optional[TrialRow]:
    """The best trial (``rows`` best first) that did not fail and keeps the run's ``constraints``: a failing
    configuration, or one the search was told to avoid, is no result to train again. None when there is none."""
    return next((r for r in rows if not math.isnan(r.best_map_at_r) and r.status != "ERROR"
                 and feasible(r, constraints)), None)


def best_trial(rows: list[TrialRow], constraints: tuple[Constraint, ...] = ()) -> TrialRow:
    """:func:`best_trial_so_far`, which must exist (an export needs one)."""
    best = best_trial_so_far(rows, constraints)
    if best is None:
        raise ConfigError(f"no trial reported a validation MAP@R without failing{within(constraints)}")
    return best


def format_table(rows: list[TrialRow], max_epochs: int, limit: int = 10) -> str:
    """A plain-text table of the best ``limit`` trials (and every errored one, with its reason), each with
    Tune's id, the report's name for it (``#N``: the order Tune started it) and its outcome as the report
    words it (``completed (N epochs)``, ``stopped at epoch N of M``, ...)."""
    shown = rows[:limit] + [r for r in rows[limit:] if r.error]
    keys = sorted({k for r in shown for k in r.params})
    header = ["trial", "#", "outcome", "val MAP@R", "@epoch", "val R@1"] + keys
    lines = [header]
    for r in shown:
        values = [r.trial_id, r.label if r.number is not None else "-", trial_outcome(r, planned_epochs(r, max_epochs)),
                  "-" if math.isnan(r.best_map_at_r) else f"{r.best_map_at_r:.4f}", str(r.best_epoch),
                  "-" if math.isnan(r.recall_at_1) else f"{r.recall_at_1:.4f}"]
        values += [format_value(r.params.get(k, "")) for k in keys]
        lines.append(values)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)) for line in lines)
    errors = [f"  {r.trial_id}: {r.error}" for r in shown if r.error]
    return text + ("\nerrors:\n" + "\n".join(errors) if errors else "")


def format_value(value: Any) -> str:
    """A parameter value as the trials tables show it: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
