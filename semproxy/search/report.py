"""The run report: one self-contained HTML page (plus its PNGs) of what a search found.

``python tune.py report RUN_DIR`` (also written at the end of every search) renders: the trials
table, the best config, Optuna's optimisation history, the learning curves with ASHA's rungs, the
hyperparameter importances, and parallel-coordinate and slice views. Images are embedded as data
URIs, so the page opens anywhere with nothing beside it.
"""
from __future__ import annotations

import base64
import glob
import html
import io
import json
import math
import os
import pickle
import warnings
from pathlib import Path
from typing import Callable, Optional

from .results import METRIC, read_search_file, read_trials

__all__ = ["write_report", "load_study"]


def load_study(run_dir: Path):
    """The Optuna study of a run, from the searcher state Tune saved (the newest one)."""
    states = glob.glob(str(Path(run_dir) / "searcher-state-*.pkl"))
    if not states:
        return None
    with open(max(states, key=os.path.getmtime), "rb") as handle:
        return pickle.load(handle).get("_ot_study")  # our own run's file, as Tune itself loads it on resume


def report_study(study):
    """A copy of the study where every trial that reported counts, with its best reported MAP@R.

    Optuna's views use COMPLETE trials only; after ASHA most trials are PRUNED, and leaving them out
    would hide most of the search. Each trial's value here is the best of its intermediate values.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    copy = optuna.create_study(direction="maximize")
    for trial in study.trials:
        values = [v for v in trial.intermediate_values.values() if v is not None and math.isfinite(v)]
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None:
            values.append(trial.value)
        if values and trial.params:
            copy.add_trial(optuna.trial.create_trial(
                params=trial.params, distributions=trial.distributions, value=max(values),
                intermediate_values=trial.intermediate_values))
    return copy


def _asha_rungs(run_dir: Path) -> dict[int, dict[str, float]]:
    states = glob.glob(str(Path(run_dir) / "callback-states-*.pkl"))
    if not states:
        return {}
    with open(max(states, key=os.path.getmtime), "rb") as handle:
        state = pickle.load(handle)
    asha = next((s for s in state.values() if isinstance(s, dict) and "rungs" in s), None)
    return {int(m): dict(r) for m, r in asha["rungs"][0]} if asha else {}


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


def _curves(rows, rungs: dict[int, dict[str, float]], reduction_factor: int) -> Optional[bytes]:
    """Validation MAP@R per epoch for every trial, with ASHA's rung cut-offs."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    figure, axis = plt.subplots(figsize=(8, 4.5))
    drawn = 0
    for row in rows:
        progress = Path(row.path) / "progress.csv"
        if not progress.is_file() or not progress.stat().st_size:
            continue
        frame = pd.read_csv(progress)
        if METRIC in frame:
            axis.plot(frame["training_iteration"], frame[METRIC], marker="o", ms=3, lw=1, label=row.trial_id)
            drawn += 1
    if not drawn:
        plt.close(figure)
        return None
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
    if drawn <= 12:
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
        body.append("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.note{color:#777;font-style:italic}"""


def write_report(run_dir: str | Path, out_dir: Optional[str | Path] = None) -> Path:
    """Write ``report.html`` and its PNGs into ``out_dir`` (default RUN_DIR/report); returns the page."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    run_dir = Path(run_dir).resolve()
    meta = read_search_file(run_dir)
    out = Path(out_dir or run_dir / "report")
    out.mkdir(parents=True, exist_ok=True)
    rows = read_trials(run_dir)
    study = load_study(run_dir)
    study = report_study(study) if study is not None else None
    figures: list[tuple[str, str, Optional[bytes]]] = [
        ("curves", "Learning curves and ASHA rungs",
         _curves(rows, _asha_rungs(run_dir), int(meta["settings"].get("reduction_factor", 2))))]
    if study is not None:
        figures += [
            ("history", "Optimisation history (every trial, at its best reported MAP@R)",
             _optuna_plot(ovm.plot_optimization_history, study)),
            ("intermediate", "Intermediate values reported to Optuna", _optuna_plot(ovm.plot_intermediate_values, study)),
            ("importances", "Hyperparameter importances", _optuna_plot(ovm.plot_param_importances, study)),
            ("parallel", "Parallel coordinates", _optuna_plot(ovm.plot_parallel_coordinate, study)),
            ("slice", "Slice view", _optuna_plot(ovm.plot_slice, study)),
        ]
    sections = []
    for key, title, png in figures:
        if png is None:
            sections.append(f"<h2>{title}</h2><p class='note'>Not enough finished trials for this view yet.</p>")
            continue
        (out / f"{key}.png").write_bytes(png)
        data = base64.b64encode(png).decode()
        sections.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{data}'>")
    best = next((r for r in rows if not math.isnan(r.best_map_at_r)), None)
    best_config = (run_dir / "best_config.yaml").read_text() if (run_dir / "best_config.yaml").is_file() else ""
    summary = (f"<p>{len(rows)} trials: " + ", ".join(
        f"{sum(r.status == s for r in rows)} {s.lower()}" for s in sorted({r.status for r in rows})) + ". "
        + (f"Best: trial <b>{best.trial_id}</b>, validation MAP@R <b>{best.best_map_at_r:.4f}</b> at epoch "
           f"{best.best_epoch}.</p>" if best else "No trial has reported yet.</p>"))
    record = {k: meta.get(k) for k in ("command", "space", "seed", "settings", "backbone", "data", "versions",
                                       "git_commit")}
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>semproxy search report: {html.escape(run_dir.name)}</title><style>{STYLE}</style></head><body>
<h1>Search report: {html.escape(run_dir.name)}</h1>{summary}
<h2>Trials (best first)</h2>{_table_html(rows)}
<h2>Best config</h2><pre>{html.escape(best_config or json.dumps(best.params if best else {}, indent=2))}</pre>
{''.join(sections)}
<h2>Run record</h2><pre>{html.escape(json.dumps(record, indent=2, default=str))}</pre>
</body></html>"""
    page_path = out / "report.html"
    page_path.write_text(page, encoding="utf-8")
    return page_path
