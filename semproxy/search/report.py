"""The run report: one self-contained HTML page (plus its PNGs) of what a search found.

``python tune.py report RUN_DIR`` (also written at the end of every search) renders: a summary (and
a banner when the search is unfinished), the trials table with what became of each trial (completed,
stopped at epoch N of M with the cut-off it fell below, ERROR with its reason), the best trial, the
learning curves with ASHA's decisions as it took them, the optimisation history, hyperparameter
importances, parallel coordinates and a grid of slices (figures: ``report_figures``). Images are
embedded as data URIs, so the page opens anywhere with nothing beside it.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from . import report_figures as figures
from .objectives import parse_objectives
from .record import SearchRecord
from .results import (Decision, TrialRow, best_trial_so_far, format_value, planned_epochs, read_decisions,
                      read_trials, search_progress, trial_kind, trial_outcome, within)

if TYPE_CHECKING:
    from .pareto import StudyPoints

__all__ = ["write_report"]

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;padding:0 1.5em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3;vertical-align:bottom}td{white-space:nowrap}
td.outcome{white-space:normal}.phrase{white-space:nowrap}td.why{min-width:18em}
.scroll{overflow-x:auto;max-width:100%}.small{color:#666;font-size:.9em}td .small{display:block}
tr.stopped td.outcome{color:#a05a00}tr.error td.outcome{color:#b00020;font-weight:bold}
tr.unfinished td.outcome{color:#555;font-style:italic}
.banner{background:#fff4d6;border:1px solid #e0b84c;padding:.7em 1em;margin:1em 0}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em;max-height:30em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.note,.caption{color:#555;font-size:.9em}
.note{font-style:italic}details{margin:.5em 0}summary{cursor:pointer;color:#245}"""


def _outcome_html(row: TrialRow, planned: int, stops: dict[str, Decision]) -> str:
    text = f"<span class='phrase'>{html.escape(trial_outcome(row, planned))}</span>"
    if row.error:
        return f"{text}: {html.escape(row.error)}"
    stop = stops.get(row.trial_id)
    if stop is not None and stop.cutoff is not None and stop.rung == row.epochs:
        text += (f" <span class='small'>({stop.value:.4f} &lt; cut-off {stop.cutoff:.4f} of {stop.compared} "
                 f"trial{'s' if stop.compared != 1 else ''})</span>")
    return text


def _header(name: str) -> str:
    """A column header that may break after its underscores (long parameter names)."""
    return html.escape(name).replace("_", "_<wbr>")


def _table_html(rows: list[TrialRow], planned: dict[str, int], stops: dict[str, Decision]) -> str:
    keys = sorted({k for r in rows for k in r.params})
    head = "".join(f"<th>{_header(h)}</th>" for h in
                   ["trial", "id", "outcome", "best val MAP@R", "at epoch", "val R@1", *keys])
    body = []
    for r in rows:
        numbers = [r.label, r.trial_id]
        scores = ["" if math.isnan(r.best_map_at_r) else f"{r.best_map_at_r:.4f}", r.best_epoch or "",
                  "" if math.isnan(r.recall_at_1) else f"{r.recall_at_1:.4f}"]
        why = " why" if r.error else ""
        body.append(f"<tr class='{trial_kind(r, planned[r.trial_id])}'>"
                    + "".join(f"<td>{html.escape(str(c))}</td>" for c in numbers)
                    + f"<td class='outcome{why}'>{_outcome_html(r, planned[r.trial_id], stops)}</td>"
                    + "".join(f"<td>{html.escape(format_value(c))}</td>" for c in scores)
                    + "".join(f"<td>{html.escape(format_value(r.params.get(k, '')))}</td>" for k in keys) + "</tr>")
    return (f"<div class='scroll'><table id='trials'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _summary(rows: list[TrialRow], best: Optional[TrialRow], record: SearchRecord, planned: dict[str, int]) -> str:
    settings = record.settings
    finished, complete = search_progress(rows, int(settings.get("num_samples", 0)))
    banner = ("" if complete else
              f"<div class='banner' id='partial'><b>Unfinished search</b>: {finished} of "
              f"{settings.get('num_samples')} trials finished. The search was interrupted (or is still running): "
              f"trials shown as RUNNING, PENDING or PAUSED have not ended, and the best so far may not be the "
              f"search's best. Continue it with <code>--resume</code> (the same command).</div>")
    kinds = [trial_kind(r, planned[r.trial_id]) for r in rows]
    counts = [(kinds.count(k), words) for k, words in (
        ("completed", "ran all their epochs"), ("stopped", f"stopped early by {settings.get('scheduler')}"),
        ("error", "failed (ERROR)"), ("unfinished", "unfinished"))]
    what = (f"{settings.get('num_samples')} trials planned, each up to {settings.get('max_epochs')} epochs, "
            f"scheduler {settings.get('scheduler')}, searcher {settings.get('searcher')}")
    found = (f"Best: trial <b>{html.escape(best.label)}</b> ({best.trial_id}), validation MAP@R "
             f"<b>{best.best_map_at_r:.4f}</b> at epoch {best.best_epoch}." if best else
             f"No trial has reported without failing{html.escape(within(record.constraints))} yet.")
    return (banner + f"<p>{html.escape(what)}. {len(rows)} trials: "
            + ", ".join(f"{n} {words}" for n, words in counts if n) + f".</p><p>{found}</p>")


def _curves_caption(settings: dict, rungs: list[int], decisions: Optional[list[Decision]]) -> str:
    scheduler = settings["scheduler"]
    if scheduler == "fifo":
        return "Every trial runs all its epochs (scheduler fifo)."
    if scheduler != "asha":
        return f"A trial whose curve ends early was stopped there by the {scheduler} scheduler."
    where = f"Dotted lines: ASHA's rungs (epochs {', '.join(map(str, rungs))}), where it compares trials. "
    if decisions is None:
        return where + ("<b>This run recorded no ASHA decisions</b> (it predates their logging), so no cut-offs "
                        "are drawn: recomputed afterwards over all trials they would not be the ones ASHA applied.")
    keep = settings.get("reduction_factor")
    return where + (f"Bars are the cut-offs as ASHA applied them, from its logged decisions: when a trial first "
                    f"reached a rung, it was compared with the trials recorded there until then (the top 1/{keep} "
                    f"continue). Black: the trial was at or above the bar and went on; red: it fell below (x, "
                    f"joined to its bar) and was stopped. A trial judged early saw few others, so a later trial may "
                    f"continue below a bar that stopped an earlier one, or be stopped above it.")


def _figures(rows: list[TrialRow], record: SearchRecord, planned: dict[str, int],
             decisions: Optional[list[Decision]]) -> list[tuple[str, str, Optional[bytes], str]]:
    """(file key, title, PNG or None, caption) of every view of the trials (``decisions``: ASHA's log)."""
    from .ray_compat import asha_milestones

    settings, specs = record.settings, record.space_resolved
    asha = settings["scheduler"] == "asha"
    rungs = asha_milestones(settings["max_epochs"], settings["grace_period"], settings["reduction_factor"]) if asha \
        else []
    labels = ("Trials are named by the order Tune started them (#N), as in the table. Hollow or dashed: the trial "
              "did not run all its epochs (stopped early, unfinished or failed).")
    return [
        ("curves", "Learning curves and ASHA's decisions", figures.plot_curves(rows, rungs, decisions),
         _curves_caption(settings, rungs, decisions)),
        ("history", "Optimisation history", figures.plot_history(rows, planned),
         "Each trial at its best validation MAP@R, in the order the trials started; the line is the best so far. "
         + labels),
        ("importances", "Hyperparameter importances", figures.plot_importances(rows, specs),
         "Optuna's fANOVA importances over every trial that reported, at its best validation MAP@R."),
        ("parallel", "Parallel coordinates", figures.plot_parallel(rows, specs, planned),
         "One line per trial across the sampled parameters, coloured by its best validation MAP@R. " + labels),
        ("slice", "Slices", figures.plot_slices(rows, specs, planned),
         "One plot per sampled parameter: each trial's best validation MAP@R against its value. " + labels),
    ]


def _pareto_section(run_dir: Path, record: SearchRecord) -> tuple[list, str]:
    """The Pareto figure and the front as a list (multi-objective runs only)."""
    if len(parse_objectives(record.settings["objectives"], where=f"{run_dir / 'search.json'}: objectives")) < 2:
        return [], ""
    from .pareto import read_study_points

    points = read_study_points(run_dir)
    caption = "Every method its own colour; grey lines: the cost of trials stopped early (no comparable accuracy)."
    return [("pareto", "Accuracy against cost", figures.plot_pareto(points), caption)], _pareto_table(points)


def _pareto_table(points: "StudyPoints") -> str:
    """The front of ``points`` as an HTML table, one row per point: its study and Tune trials and its
    objective values (a count as 13,952, not 1.395e+04)."""
    from .pareto import format_objective

    names = [o.label for o in points.objectives]
    rows = "".join(f"<tr><td>{p.number}</td><td>{html.escape(str(p.tune_trial_id))}</td>"
                   + "".join(f"<td>{format_objective(v)}</td>" for v in p.values) + "</tr>" for p in points.front)
    return ("<h2>Pareto front</h2><p>Trials no other finished trial beats on every objective (Optuna's "
            "<code>study.best_trials</code>); pick one with <code>tune.py export --pareto-index I</code> or "
            "<code>--max-params N</code>.</p><div class='scroll'><table id='pareto-front'><thead><tr>"
            "<th>study trial</th><th>trial</th>"
            + "".join(f"<th>{html.escape(n)}</th>" for n in names)
            + f"</tr></thead><tbody>{rows}</tbody></table></div>")


def _image_sections(views, out: Path) -> list[str]:
    sections = []
    for key, title, png, caption in views:
        if png is None:
            sections.append(f"<h2>{title}</h2><p class='note'>Not enough trials have reported for this view yet.</p>")
            continue
        (out / f"{key}.png").write_bytes(png)
        data = base64.b64encode(png).decode()
        sections.append(f"<h2>{title}</h2><img id='{key}' alt='{html.escape(title)}' "
                        f"src='data:image/png;base64,{data}'><p class='caption'>{caption}</p>")
    return sections


def _best_section(run_dir: Path, best: Optional[TrialRow], record: SearchRecord) -> str:
    if best is None:
        return (f"<h2>Best trial</h2><p class='note'>No trial has reported without failing"
                f"{html.escape(within(record.constraints))} yet.</p>")
    params = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(format_value(v))}</td></tr>"
                     for k, v in sorted(best.params.items()))
    config = run_dir / "best_config.yaml"
    full = (f"<details><summary>Its full config, as exported (<code>best_config.yaml</code>: train it with "
            f"<code>python -m semproxy.train --config</code>)</summary><pre>{html.escape(config.read_text())}</pre>"
            f"</details>" if config.is_file() else "")
    return (f"<h2>Best trial: {html.escape(best.label)}</h2><p>{html.escape(best.trial_id)}, validation MAP@R "
            f"{best.best_map_at_r:.4f} at epoch {best.best_epoch}; its sampled parameters:</p>"
            f"<div class='scroll'><table id='best-params'>{params}</table></div>{full}")


def write_report(run_dir: str | Path, out_dir: Optional[str | Path] = None, *,
                 rows: Optional[list[TrialRow]] = None) -> Path:
    """Write ``report.html`` and its PNGs into ``out_dir`` (default RUN_DIR/report); returns the page.

    ``rows``: the run's trials when the caller has just read them (:func:`read_trials`)."""
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir).resolve()
    record = SearchRecord.read(run_dir)
    rows = read_trials(run_dir) if rows is None else rows
    best = best_trial_so_far(rows, record.constraints)
    out = Path(out_dir or run_dir / "report")
    out.mkdir(parents=True, exist_ok=True)
    planned = {r.trial_id: planned_epochs(r, int(record.settings["max_epochs"])) for r in rows}
    decisions = read_decisions(run_dir) if record.settings["scheduler"] == "asha" else None
    stops = {d.trial: d for d in decisions or [] if d.stopped}
    pareto_views, pareto_table = _pareto_section(run_dir, record)
    sections = _image_sections(pareto_views + _figures(rows, record, planned, decisions), out)
    shown = {k: getattr(record, k) for k in ("command", "space", "settings", "metric", "backbone", "data", "versions",
                                             "git_commit", "study")}
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>semproxy search report: {html.escape(run_dir.name)}</title><style>{STYLE}</style></head><body>
<h1>Search report: {html.escape(run_dir.name)}</h1>{_summary(rows, best, record, planned)}
<h2>Trials (best first)</h2>
<p class='caption'>Outcome: <i>completed</i> trials ran all their epochs; <i>stopped at epoch N of M</i>: the scheduler
ended the trial at N of its M planned epochs (for ASHA, its validation MAP@R there was below the cut-off shown);
<i>ERROR</i>: the trial failed, with its reason. The best value is over the epochs the trial ran.</p>
{_table_html(rows, planned, stops)}
{_best_section(run_dir, best, record)}
{pareto_table}{''.join(sections)}
<h2>Run record</h2><details><summary>The command, space, settings, backbone, data and versions of this run
(<code>search.json</code>)</summary><pre>{html.escape(json.dumps(shown, indent=2, default=str))}</pre></details>
</body></html>"""
    page_path = out / "report.html"
    page_path.write_text(page, encoding="utf-8")
    return page_path
