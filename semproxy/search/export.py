"""A search's chosen trial as a config file for its final training (``tune.py export``).

The trial is the best validation MAP@R within the run's constraints, or a point of a multi-objective
run's Pareto front. A trial's score is its best epoch's validation MAP@R (what the search ranks by
and tells Optuna), so the export trains as many epochs as that best epoch, on the learning-rate
schedule the trial had: early stopping on validation, then training again on training + validation
classes. ``all_epochs`` trains the trial's planned epochs instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from ..config import Config, ConfigError
from ..errors import first_line, shown
from .record import RECORD_FILE, SearchRecord
from .results import TrialRow, best_trial, read_trials, search_progress, within

__all__ = ["Exported", "export_best", "best_epoch_schedule", "check_export_target", "EXPORT_MARK"]

#: In the first line of every exported config's header (``Best trial: trial X of the search in RUN``).
EXPORT_MARK = " of the search in "


@dataclass(frozen=True)
class Exported:
    """What ``export_best`` wrote: the file, the trial, and the epochs the file trains and why."""

    path: Path
    row: TrialRow
    epochs: int
    epochs_note: str


def best_epoch_schedule(config: Config, best_epoch: int) -> tuple[Config, str]:
    """``config`` (a trial's) trained for ``best_epoch`` epochs on the same schedule, and why that count.

    The cosine keeps the trial's length (``cosine_epochs`` pinned to it), so every epoch trains at the
    rates the trial's did. A best epoch that is the last, or falls in the warm-up (a run cannot be all
    warm-up), keeps the planned epochs.
    """
    optim = config.optim
    if best_epoch >= optim.epochs:
        return config, f"{optim.epochs} epochs, as the trial (its best validation epoch is its last)"
    if best_epoch <= optim.warmup_epochs:
        return config, (f"{optim.epochs} epochs, as the trial (its best validation epoch, {best_epoch}, is in the "
                        f"{optim.warmup_epochs}-epoch warm-up)")
    cosine = optim.cosine_epochs if optim.cosine_epochs is not None else optim.epochs - optim.warmup_epochs
    return (config.replace({"epochs": best_epoch, "cosine_epochs": cosine}),
            f"{best_epoch} epochs, the trial's best validation epoch of its {optim.epochs}, on its schedule "
            f"(cosine_epochs {cosine})")


def check_export_target(out: str | Path, where: str = "-o") -> None:
    """Refuse an output that is a folder, or a file that is not an earlier export (it would be lost)."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{where} {shown(out)}: is a folder; give the YAML file to write, e.g. "
                          f"{shown(out / 'best.yaml')}")
    if out.exists():
        try:
            with out.open(encoding="utf-8", errors="replace") as file:
                first = file.readline(1000)
        except OSError as error:
            raise ConfigError(f"{where} {shown(out)}: cannot be read ({first_line(error)})") from None
        if not (first.startswith("# ") and EXPORT_MARK in first):
            raise ConfigError(f"{where} {shown(out)}: exists and is not a config exported from a search; not "
                              f"overwritten (give another file, or delete this one)")


def _chosen_row(run_dir: Path, rows: list[TrialRow], record: SearchRecord, max_params: Optional[float],
                pareto_index: Optional[int]) -> tuple[TrialRow, str]:
    """The trial to export and how it was chosen: the best validation MAP@R within the run's constraints,
    or a Pareto-front point."""
    if max_params is None and pareto_index is None:
        return best_trial(rows, record.constraints), f"Best trial{within(record.constraints)}"
    from .pareto import choose, read_study_points

    point = choose(read_study_points(run_dir), max_params=max_params, pareto_index=pareto_index)
    row = next((r for r in rows if r.trial_id == point.tune_trial_id), None)
    if row is None:
        raise ConfigError(f"{run_dir}: the study's trial {point.number} has no trial folder")
    values = ", ".join(f"{v:.4g}" for v in point.values)
    return row, f"Pareto-front point {point.number} ({values})"


def export_best(run_dir: str | Path, out: str | Path, *, final: bool = True, all_epochs: bool = False,
                max_params: Optional[float] = None, pareto_index: Optional[int] = None,
                rows: Optional[list[TrialRow]] = None) -> Exported:
    """Write the chosen trial's full config; ``final`` turns the validation split off and test evaluation on.

    In a multi-objective run ``max_params`` or ``pareto_index`` picks a point of the Pareto front instead.
    ``all_epochs``: the trial's planned epochs, not its best epoch's count. ``rows``: the run's trials
    when the caller has just read them (:func:`~semproxy.search.results.read_trials`).
    """
    run_dir = Path(run_dir).resolve()
    record = SearchRecord.read(run_dir)
    rows = read_trials(run_dir) if rows is None else rows
    row, chosen = _chosen_row(run_dir, rows, record, max_params, pareto_index)
    config = record.base_config(str(run_dir / RECORD_FILE)).replace(row.params, where=f"{row.path}/params.json")
    if all_epochs:
        note = f"{config.optim.epochs} epochs, as the trial planned (--all-epochs)"
    else:
        config, note = best_epoch_schedule(config, row.best_epoch)
    if final:
        config = config.replace({"val_fraction": 0.0, "test_eval": True})
    finished, complete = search_progress(rows, int(record.settings.get("num_samples", 0)))
    header = "\n".join([
        f"{chosen}: trial {row.trial_id} of the search in {run_dir}",
        f"validation MAP@R {row.best_map_at_r:.4f} at epoch {row.best_epoch} (R@1 {row.recall_at_1:.4f})",
        f"trains {note}",
        *([] if complete else [f"PARTIAL search: {finished} of {record.settings.get('num_samples')} trials finished"]),
        f"space: {record.space}",
        f"command: {record.command}",
        f"backbone: {record.backbone.get('name')} (weights sha256 {str(record.backbone.get('sha256'))[:16]}...)",
        f"data: {record.dataset} {json.dumps(record.data.get('counts'))}, files sha256 "
        f"{str(record.data.get('files_sha256'))[:16]}...",
        f"code: git {record.git_commit or 'unknown'}; " + ", ".join(f"{k} {v}" for k, v in record.versions.items()),
        f"exported {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
        + ("; validation split off and test evaluation on for final training" if final else ""),
        f"train it: python -m semproxy.train --config {out}",
    ])
    try:
        path = config.dump(out, header=header)
    except OSError as error:
        raise ConfigError(f"{shown(out)}: cannot write the exported config ({first_line(error)})") from None
    return Exported(path, row, config.optim.epochs, note)
