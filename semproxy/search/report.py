"""The run report: one self-contained HTML page (plus its PNGs) of what a search found.

``python tune.py report RUN_DIR`` (also written at the end of every search) renders: the trials
table, the best config, Optuna's optimisation history, the learning curves with ASHA's rungs, the
hyperparameter importances, and parallel-coordinate and slice views. Images are embedded as data
URIs, so the page opens anywhere with nothing beside it.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from pathlib import Path
from typing import Callable, Optional

from .record import SearchRecord
from .space import distribution
from .results import format_value, read_trials, search_progress

__all__ = ["write_report", "report_study", "asha_rungs"]


def _trial_number(row) -> int:
    """Tune's creation index from a trial folder name (``<trainable>_<id>_<N>_<params>...``)."""
    parts = Path(row.path).name.split(f"_{row.trial_id}_", 1)
    head = parts[1].split("_", 1)[0] if len(parts) == 2 else ""
    return int(head) if head.isdigit() else 1 << 30


def report_study(rows, curves: dict[str, dict[int, float]], specs: list[dict]):
    """An Optuna study of every trial that reported, valued at its best validation MAP@R.

    Built from Tune's own records (params and progress.csv), so trials ASHA stopped early count
    too: Optuna's views use COMPLETE trials only, and after ASHA most trials were stopped.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {spec["name"]: distribution(spec["kind"], spec["args"]) for spec in specs}
    study = optuna.create_study(direction="maximize")
    for row in sorted(rows, key=_trial_number):  # in the order the trials were created: a history
        curve = curves.get(row.trial_id)
        if math.isnan(row.best_map_at_r) or not curve:
            continue
        params = {k: v for k, v in row.params.items() if k in distributions}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params}, value=row.best_map_at_r,
            intermediate_values=curve))
    return study


def asha_rungs(curves: dict[str, dict[int, float]], settings: dict) -> dict[int, dict[str, float]]:
    """ASHA's rungs as the search saw them: at each milestone, the metric of every trial that reached it.

    The milestones are those of Ray's own ASHA for the run's settings (one bracket).
    """
    from .ray_compat import asha_milestones

    milestones = asha_milestones(settings["max_epochs"], settings["grace_period"], settings["reduction_factor"])
    return {m: {trial: curve[m] for trial, curve in curves.items() if m in curve} for m in milestones}


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def _optuna_plot(plot: Callable, study, **kwargs) -> Optional[bytes]:
    """An Optuna matplotlib plot as PNG, or None when the study cannot support it yet."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
            axes = plot(study, **kwargs)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
    figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
    figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 4.5))
    return _png(figure)


def _plot_curves(curves: dict[str, dict[int, float]], rungs: dict[int, dict[str, float]],
                 reduction_factor: int) -> Optional[bytes]:
    """Validation MAP@R per epoch for every trial, with ASHA's rung cut-offs."""
    import matplotlib.pyplot as plt
    import numpy as np

    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for trial, curve in curves.items():
        axis.plot(list(curve), list(curve.values()), marker="o", ms=3, lw=1, label=trial)
    for milestone, recorded in sorted(rungs.items()):
        if recorded:  # ASHA's cut-off at this rung: trials below it were stopped there
            cutoff = float(np.nanpercentile(list(recorded.values()), (1 - 1 / reduction_factor) * 100))
            axis.axvline(milestone, color="grey", ls=":", lw=1)
            axis.plot([milestone - 0.3, milestone + 0.3], [cutoff, cutoff], color="black", lw=2)
            axis.annotate(f"rung {milestone}: {len(recorded)} trials, cut-off {cutoff:.3f}", (milestone, cutoff),
                          fontsize=7, xytext=(4, 4), textcoords="offset points")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation MAP@R")
    axis.set_title("Learning curves; dotted lines: ASHA rungs, bars: their cut-offs")
    if len(curves) <= 12:
        axis.legend(fontsize=7, ncol=2)
    return _png(figure)


def _table_html(rows) -> str:
    keys = sorted({k for r in rows for k in r.params})
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["trial", "status", "epochs", "val MAP@R", "at epoch", "val R@1", *keys, "error"])
    body = []
    for r in rows:
        cells = [r.trial_id, r.status, r.epochs, "" if math.isnan(r.best_map_at_r) else f"{r.best_map_at_r:.4f}",
                 r.best_epoch, "" if math.isnan(r.recall_at_1) else f"{r.recall_at_1:.4f}",
                 *[r.params.get(k, "") for k in keys], r.error or ""]
        body.append("<tr>" + "".join(f"<td>{html.escape(format_value(c))}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.note{color:#777;font-style:italic}"""


def _plot_pareto(points) -> Optional[bytes]:
    """Validation MAP@R against the first cost objective: every method its own colour, the front joined."""
    import matplotlib.pyplot as plt

    finished = [p for p in points.points if p.values[0] == p.values[0]]  # NaN: stopped early, not comparable
    if len(points.objectives) < 2 or not finished:
        return None
    cost = points.objectives[1]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    methods = sorted({str(p.params.get("method", "base config")) for p in points.points})
    for method in methods:
        mine = [p for p in finished if str(p.params.get("method", "base config")) == method]
        axis.scatter([p.values[1] for p in mine], [p.values[0] for p in mine], s=24, label=method)
    stopped = [p for p in points.points if p.values[0] != p.values[0]]
    for p in stopped:
        axis.axvline(p.values[1], color="lightgrey", lw=0.6, zorder=0)
    front = sorted(points.front, key=lambda p: p.values[1])
    axis.plot([p.values[1] for p in front], [p.values[0] for p in front], color="black", lw=1, marker="o",
              mfc="none", ms=9, label="Pareto front")
    axis.set_xlabel(cost.label + (" (log)" if cost.name == "trainable_params" else ""))
    if cost.name == "trainable_params":
        axis.set_xscale("log")
    axis.set_ylabel("validation MAP@R")
    axis.set_title("Accuracy against cost; grey lines: the cost of trials stopped early")
    axis.legend(fontsize=7)
    return _png(figure)


def _pareto_section(run_dir: Path, record: SearchRecord) -> tuple[list[tuple[str, str, Optional[bytes]]], str]:
    """The Pareto figure and the front as a list (multi-objective runs only)."""
    if "," not in record.settings.get("objectives", "map_at_r"):
        return [], ""
    from .pareto import read_study_points

    points = read_study_points(run_dir)
    names = [o.label for o in points.objectives]
    rows = "".join(f"<tr><td>{p.number}</td><td>{html.escape(str(p.tune_trial_id))}</td>"
                   + "".join(f"<td>{v:.4g}</td>" for v in p.values) + "</tr>" for p in points.front)
    table = (f"<h2>Pareto front</h2><p>Trials no other finished trial beats on every objective (Optuna's "
             f"<code>study.best_trials</code>); pick one with <code>tune.py export --pareto-index I</code> or "
             f"<code>--max-params N</code>.</p><table id='pareto-front'><thead><tr><th>study trial</th><th>trial</th>"
             + "".join(f"<th>{html.escape(n)}</th>" for n in names) + f"</tr></thead><tbody>{rows}</tbody></table>")
    return [("pareto", "Accuracy against cost", _plot_pareto(points))], table


def _figures(rows, curves, record: SearchRecord) -> list[tuple[str, str, Optional[bytes]]]:
    """(file key, title, PNG or None) of every view of the trials."""
    from optuna.visualization import matplotlib as ovm

    settings = record.settings
    study = report_study(rows, curves, record.space_resolved)
    rungs = asha_rungs(curves, settings) if settings.get("scheduler", "asha") == "asha" else {}
    figures = [("curves", "Learning curves and ASHA rungs", _plot_curves(curves, rungs, settings["reduction_factor"]))]
    if study.trials:
        figures += [
            ("history", "Optimisation history (every trial, at its best reported MAP@R)",
             _optuna_plot(ovm.plot_optimization_history, study)),
            ("importances", "Hyperparameter importances", _optuna_plot(ovm.plot_param_importances, study)),
            ("parallel", "Parallel coordinates", _optuna_plot(ovm.plot_parallel_coordinate, study)),
            ("slice", "Slice view", _optuna_plot(ovm.plot_slice, study)),
        ]
    return figures


def _summary(rows, settings: dict) -> str:
    best = next((r for r in rows if not math.isnan(r.best_map_at_r)), None)
    finished, complete = search_progress(rows, int(settings.get("num_samples", 0)))
    partial = ("" if complete else f"<p><b>Partial search</b>: {finished} of {settings.get('num_samples')} trials "
               f"finished (interrupted or still running; continue it with <code>--resume</code>).</p>")
    return partial + (f"<p>{len(rows)} trials: " + ", ".join(
        f"{sum(r.status == s for r in rows)} {s.lower()}" for s in sorted({r.status for r in rows})) + ". "
        + (f"Best: trial <b>{best.trial_id}</b>, validation MAP@R <b>{best.best_map_at_r:.4f}</b> at epoch "
           f"{best.best_epoch}.</p>" if best else "No trial has reported yet.</p>"))


def _image_sections(figures, out: Path) -> list[str]:
    sections = []
    for key, title, png in figures:
        if png is None:
            sections.append(f"<h2>{title}</h2><p class='note'>Not enough finished trials for this view yet.</p>")
            continue
        (out / f"{key}.png").write_bytes(png)
        data = base64.b64encode(png).decode()
        sections.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{data}'>")
    return sections


def write_report(run_dir: str | Path, out_dir: Optional[str | Path] = None) -> Path:
    """Write ``report.html`` and its PNGs into ``out_dir`` (default RUN_DIR/report); returns the page."""
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir).resolve()
    record = SearchRecord.read(run_dir)
    rows = read_trials(run_dir)
    out = Path(out_dir or run_dir / "report")
    out.mkdir(parents=True, exist_ok=True)
    curves = {r.trial_id: r.curve for r in rows if r.curve}
    pareto_figures, pareto_table = _pareto_section(run_dir, record)
    sections = _image_sections(pareto_figures + _figures(rows, curves, record), out)
    best = next((r for r in rows if not math.isnan(r.best_map_at_r)), None)
    best_config = (run_dir / "best_config.yaml").read_text() if (run_dir / "best_config.yaml").is_file() else ""
    shown = {k: getattr(record, k) for k in ("command", "space", "settings", "metric", "backbone", "data", "versions",
                                             "git_commit", "study")}
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>semproxy search report: {html.escape(run_dir.name)}</title><style>{STYLE}</style></head><body>
<h1>Search report: {html.escape(run_dir.name)}</h1>{_summary(rows, record.settings)}
<h2>Trials (best first)</h2>{_table_html(rows)}
<h2>Best config</h2><pre>{html.escape(best_config or json.dumps(best.params if best else {}, indent=2))}</pre>
{pareto_table}{''.join(sections)}
<h2>Run record</h2><pre>{html.escape(json.dumps(shown, indent=2, default=str))}</pre>
</body></html>"""
    page_path = out / "report.html"
    page_path.write_text(page, encoding="utf-8")
    return page_path
