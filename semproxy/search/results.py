"""Reading a finished (or interrupted) search: the trials table, the best trial, and its export.

Works from the run directory alone (Tune's experiment state plus the ``search.json`` the driver
writes), so ``tune.py export RUN_DIR`` needs neither the driver nor the trainable.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from ..config import Config, ConfigError

__all__ = ["SEARCH_FILE", "METRIC", "TrialRow", "read_trials", "best_trial", "export_best", "format_table",
           "format_value", "read_search_file"]

SEARCH_FILE = "search.json"
METRIC = "val_map_at_r"


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


def read_search_file(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / SEARCH_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a semproxy search run ({SEARCH_FILE} not found)")
    return json.loads(path.read_text())


def _error_line(trial_path: Path) -> Optional[str]:
    error_file = trial_path / "error.txt"
    if not error_file.is_file():
        return None
    lines = [line.strip() for line in error_file.read_text(errors="replace").splitlines() if line.strip()]
    # The last line of a traceback names the exception; keep it short for a table.
    return lines[-1][:200] if lines else "error"


def read_trials(run_dir: Path) -> list[TrialRow]:
    """Every trial of the run with its best validation MAP@R (NaN-free), best first."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(run_dir), default_metric=METRIC, default_mode="max")
    frames = analysis.trial_dataframes
    rows = []
    for trial in analysis.trials:
        frame = frames.get(trial.trial_id)
        has_metric = frame is not None and METRIC in getattr(frame, "columns", [])
        if has_metric and len(frame):
            best = int(frame[METRIC].astype(float).idxmax())
            best_value = float(frame[METRIC].iloc[best])
            best_epoch = int(frame["training_iteration"].iloc[best])
            recall = float(frame["val_recall_at_1"].iloc[best]) if "val_recall_at_1" in frame else math.nan
            epochs = int(frame["training_iteration"].max())
        else:
            best_value, best_epoch, recall, epochs = math.nan, 0, math.nan, 0
        checkpoint = analysis.get_best_checkpoint(trial, METRIC, "max") if has_metric else None
        rows.append(TrialRow(trial.trial_id, str(trial.status), dict(trial.config), epochs, best_value, best_epoch,
                             recall, checkpoint.path if checkpoint is not None else None,
                             _error_line(Path(trial.path)), str(trial.path)))
    rows.sort(key=lambda r: (math.isnan(r.best_map_at_r), -(r.best_map_at_r if not math.isnan(r.best_map_at_r) else 0)))
    return rows


def best_trial(rows: list[TrialRow]) -> TrialRow:
    scored = [r for r in rows if not math.isnan(r.best_map_at_r)]
    if not scored:
        raise ConfigError("no trial reported a validation MAP@R yet")
    return scored[0]


def format_table(rows: list[TrialRow], limit: int = 10) -> str:
    """A plain-text table of the best ``limit`` trials (and every errored one, with its reason)."""
    shown = rows[:limit] + [r for r in rows[limit:] if r.error]
    keys = sorted({k for r in shown for k in r.params})
    header = ["trial", "status", "epochs", "val MAP@R", "@epoch", "val R@1"] + keys
    lines = [header]
    for r in shown:
        values = [r.trial_id, r.status, str(r.epochs),
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


def export_best(run_dir: Path, out: Path, *, final: bool = True) -> tuple[Path, TrialRow]:
    """Write the best trial's full config; ``final`` turns the validation split off and test evaluation on."""
    run_dir = Path(run_dir).resolve()
    meta = read_search_file(run_dir)
    row = best_trial(read_trials(run_dir))
    config = Config.from_mapping(meta["base"], where=f"{run_dir / SEARCH_FILE} (base)").replace(row.params)
    if final:
        config = config.replace({"val_fraction": 0.0, "test_eval": True})
    header = "\n".join([
        f"Best trial {row.trial_id} of the search in {run_dir}",
        f"validation MAP@R {row.best_map_at_r:.4f} at epoch {row.best_epoch} (R@1 {row.recall_at_1:.4f})",
        f"space: {meta['space']}",
        f"command: {meta['command']}",
        f"backbone: {meta['backbone']['name']} (weights sha256 {meta['backbone']['sha256'][:16]}...)",
        f"data: {meta['data']['dataset']} {json.dumps(meta['data']['counts'])}, files sha256 "
        f"{meta['data']['files_sha256'][:16]}...",
        f"code: git {meta.get('git_commit') or 'unknown'}; "
        + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
        f"exported {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"
        + ("; validation split off and test evaluation on for final training" if final else ""),
        f"train it: python -m semproxy.train --config {out}",
    ])
    return config.dump(out, header=header), row
