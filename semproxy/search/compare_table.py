"""The comparison's table: per space, the final runs' test metrics as mean ± 95% t-interval, trained
parameters, what its search spent, and the gap from its best validation MAP@R to the test MAP@R.

Read from plain files: each final run's ``metrics.json`` (test metrics, parameters counted as the
search counts them: ``learned``, over all classes) and the search folder (``results.read_trials``;
Tune's experiment states for its wall time). Written as ``compare.md`` and ``compare.csv``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..atomic import write_text_atomic
from ..config import ConfigError
from ..metric_names import metric_name
from ..train.final import METRICS_FILE
from .intervals import Interval, t_interval

if TYPE_CHECKING:
    from .compare import ComparePlan

__all__ = ["TEST_METRICS", "MethodResult", "compare_results", "format_markdown", "table_note", "write_tables",
           "search_seconds"]

#: The test metrics of the table: (metrics.json name, column label).
TEST_METRICS = ((metric_name("test", "recall@1"), "test R@1"), (metric_name("test", "map@r"), "test MAP@R"),
                (metric_name("test", "map@r_paper"), "test MAP@R (paper)"))
TEST_MAP = TEST_METRICS[1][0]


@dataclass
class MethodResult:
    """One space of the comparison: its final runs and its search."""

    name: str
    method: str
    seeds: list[int]
    test: dict[str, Interval]           # by metric name
    values: dict[str, list[float]]      # each final run's value, in seed order
    trainable_params: Optional[int]
    search_seconds: float               # wall time of the search's driver sessions
    trial_epochs: int
    trials: int
    best_val_map_at_r: float

    @property
    def gap(self) -> float:
        """Best validation MAP@R of the search minus the mean test MAP@R of the final runs."""
        return self.best_val_map_at_r - self.test[TEST_MAP].mean


def search_seconds(run_dir: Path) -> float:
    """Wall time of a search's driver sessions: for each session's experiment state (Tune writes one per
    session, its start time inside, last rewritten when the session ended or took its last snapshot),
    from that start to the file's last change. The time a killed driver lay dead before ``--resume``
    does not count, nor Ray's start-up; a damaged file is a one-line ConfigError naming it."""
    total = 0.0
    for path in sorted(Path(run_dir).glob("experiment_state-*.json")):
        try:
            start = float(json.loads(path.read_text(encoding="utf-8"))["stats"]["start_time"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{path}: damaged Tune experiment state ({type(error).__name__})") from None
        total += max(0.0, path.stat().st_mtime - start)
    return total


def _metrics(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{path}: unreadable final-run metrics ({type(error).__name__})") from None


def compare_results(plan: "ComparePlan", run_dir: Path) -> list[MethodResult]:
    """Every space's row, in the plan's order (its final runs must all have finished)."""
    from .compare import final_folder, search_folder
    from .record import SearchRecord
    from .results import best_trial, read_trials

    results = []
    for name, space in plan.spaces.items():
        runs = [_metrics(final_folder(run_dir, name, seed) / METRICS_FILE) for seed in plan.final_seeds]
        values = {metric: [float(run["test"][metric]) for run in runs] for metric, _ in TEST_METRICS}
        learned = runs[0].get("parameters", {}).get("learned")
        rows = read_trials(search_folder(run_dir, name))
        exported = best_trial(rows, SearchRecord.read(search_folder(run_dir, name)).constraints)
        results.append(MethodResult(
            name, space["method"], list(plan.final_seeds), {m: t_interval(v) for m, v in values.items()}, values,
            None if learned is None else int(learned), search_seconds(search_folder(run_dir, name)),
            sum(r.epochs for r in rows), len(rows), exported.best_map_at_r))
    return results


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


HEADER = ["space", "method", "runs", *[label for _, label in TEST_METRICS], "trainable params", "search time",
          "trial-epochs", "best val MAP@R", "val - test MAP@R"]


def table_cells(result: MethodResult) -> list[str]:
    """One row of the table as text: metrics in percent, ``mean ± half width`` (``n/a`` for one run)."""
    return [result.name, result.method, str(len(result.seeds)),
            *[result.test[metric].format(100) for metric, _ in TEST_METRICS],
            "?" if result.trainable_params is None else f"{result.trainable_params:,}",
            _duration(result.search_seconds), str(result.trial_epochs), f"{100 * result.best_val_map_at_r:.2f}",
            f"{100 * result.gap:+.2f}"]


def table_note(results: list[MethodResult]) -> str:
    """What the table's numbers are: the intervals, the search time, the gap."""
    one_run = any(len(r.seeds) == 1 for r in results)
    return ("Test metrics in %: mean ± half width of the 95% Student-t interval over the final runs of each "
            "space's best configuration, which differ only in their seed"
            + (" (one run: no interval, n/a)" if one_run else "")
            + ". Search time: wall time of the search's Tune sessions. val - test: the search's best validation MAP@R "
              "minus the mean test MAP@R, in points.")


def format_markdown(results: list[MethodResult]) -> str:
    """The table in Markdown, with :func:`table_note` under it."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in results]
    return "\n".join(lines) + "\n\n" + table_note(results) + "\n"


def _csv(results: list[MethodResult]) -> str:
    columns = ["space", "method", "runs", "seeds"]
    for metric, _ in TEST_METRICS:
        columns += [f"{metric}_mean", f"{metric}_ci95_low", f"{metric}_ci95_high", f"{metric}_ci95_half_width"]
    columns += ["trainable_params", "search_wall_s", "trial_epochs", "trials", "best_val_map_at_r", "val_test_gap"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    blank = (lambda value: "" if value is None else repr(value))
    for r in results:
        row = [r.name, r.method, len(r.seeds), " ".join(map(str, r.seeds))]
        for metric, _ in TEST_METRICS:
            interval = r.test[metric]
            row += [repr(interval.mean), blank(interval.low), blank(interval.high), blank(interval.half_width)]
        row += [blank(r.trainable_params), f"{r.search_seconds:.1f}", r.trial_epochs, r.trials,
                repr(r.best_val_map_at_r), repr(r.gap)]
        writer.writerow(row)
    return buffer.getvalue()


def write_tables(results: list[MethodResult], run_dir: Path) -> tuple[Path, Path]:
    """``RUN/compare.md`` and ``RUN/compare.csv`` (fractions, full precision; empty where no interval)."""
    title = f"# Comparison {run_dir.name}\n\n"
    return (write_text_atomic(run_dir / "compare.md", title + format_markdown(results)),
            write_text_atomic(run_dir / "compare.csv", _csv(results)))
