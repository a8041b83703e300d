"""The report's figures, as PNG bytes: learning curves with ASHA's decisions, the optimisation
history, parallel coordinates, one slice per parameter in a grid, and accuracy against cost.

Every figure names a trial by its label (``#N``, the order Tune started it in), as the report's
table does, and values a trial at its best validation MAP@R. Figures that need more trials than
the run has return None (the page says so).
"""
from __future__ import annotations

import io
import math
import warnings
from typing import Any, Callable, Optional

from .results import Decision, TrialRow, trial_kind
from .space import distribution

__all__ = ["png", "ran_all", "plot_curves", "plot_history", "plot_parallel", "plot_slices", "plot_importances",
           "plot_pareto", "report_study"]

MAP_LABEL = "best validation MAP@R"
STOPPED_STYLE = {"facecolors": "none", "edgecolors": "tab:orange"}  # hollow: did not run all its epochs
RAN_ALL, NOT_ALL = "ran all its epochs", "stopped early, unfinished or failed"


def png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def ran_all(row: TrialRow, planned: dict[str, int]) -> bool:
    """Whether the trial trained all its planned epochs (not stopped early, unfinished or failed)."""
    return trial_kind(row, planned[row.trial_id]) == "completed"


def _order(row: TrialRow) -> tuple[int, str]:
    return (row.number if row.number is not None else 1 << 30, row.trial_id)


def _scored(rows: list[TrialRow]) -> list[TrialRow]:
    """Trials that reported a validation MAP@R, in the order they were started."""
    return sorted((r for r in rows if r.curve), key=_order)


def _integer_epochs(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_curves(rows: list[TrialRow], rungs: list[int], decisions: Optional[list[Decision]]) -> Optional[bytes]:
    """Validation MAP@R per epoch of every trial; ASHA's rungs, and each cut-off as ASHA applied it."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    drawn = _scored(rows)
    if not drawn:
        return None
    figure, axis = plt.subplots(figsize=(11, 5))
    colours = {}
    for row in drawn:
        (line,) = axis.plot(list(row.curve), list(row.curve.values()), marker="o", ms=3, lw=1.2, label=row.label)
        colours[row.trial_id] = line.get_color()
    for rung in rungs:
        axis.axvline(rung, color="grey", ls=":", lw=1, zorder=0)
    labels = {r.trial_id: r.label for r in rows}
    judged = [d for d in decisions or [] if d.cutoff is not None]
    for rung in sorted({d.rung for d in judged}):  # side by side at their rung, in the order ASHA took them
        here = [d for d in judged if d.rung == rung]
        step = min(0.12, 0.6 / len(here))
        for k, d in enumerate(here):
            x = rung + step * (k - (len(here) - 1) / 2)
            colour, width = ("red", 2.0) if d.stopped else ("black", 1.4)
            axis.hlines(d.cutoff, x - 0.42 * step, x + 0.42 * step, color=colour, lw=width, zorder=4)
            if d.stopped:  # the value that fell below it, joined to its bar
                axis.plot([x, x], [d.value, d.cutoff], color="red", ls="--", lw=0.8, zorder=4)
                axis.plot(x, d.value, marker="x", color="red", ms=7, mew=2, zorder=5)
                if len(judged) <= 40:
                    axis.annotate(f"{labels.get(d.trial, d.trial)} stopped", (x, d.value), xytext=(6, -3),
                                  textcoords="offset points", fontsize=7, color="red")
    last = max(max(r.curve) for r in drawn)
    axis.set_xlim(0.5, max([last, *rungs]) + 0.5)
    _integer_epochs(axis)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation MAP@R")
    handles = axis.get_legend_handles_labels()[0] if len(drawn) <= 40 else []
    if judged:
        handles += [Line2D([], [], color="black", lw=1.4, label="cut-off cleared"),
                    Line2D([], [], color="red", lw=2, marker="x", mew=2, label="cut-off missed: stopped")]
    if handles:
        axis.legend(handles=handles, title="trial", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
                    ncol=1 + len(handles) // 22)
    return png(figure)


def plot_history(rows: list[TrialRow], planned: dict[str, int]) -> Optional[bytes]:
    """Each trial's best validation MAP@R in the order the trials started, and the best so far."""
    import matplotlib.pyplot as plt

    scored = _scored(rows)
    if len(scored) < 2:
        return None
    x = [r.number if r.number is not None else i + 1 for i, r in enumerate(scored)]
    y = [r.best_map_at_r for r in scored]
    early = [not ran_all(r, planned) for r in scored]
    figure, axis = plt.subplots(figsize=(11, 4))
    axis.scatter([a for a, e in zip(x, early) if not e], [b for b, e in zip(y, early) if not e], s=36,
                 color="tab:blue", label=RAN_ALL, zorder=3)
    axis.scatter([a for a, e in zip(x, early) if e], [b for b, e in zip(y, early) if e], s=36, lw=1.5,
                 label=NOT_ALL, zorder=3, **STOPPED_STYLE)
    axis.step(x, [max(y[:i + 1]) for i in range(len(y))], where="post", color="tab:green", lw=1.2,
              label="best so far")
    if len(scored) <= 40:
        for a, b, r in zip(x, y, scored):
            axis.annotate(r.label, (a, b), xytext=(4, 4), textcoords="offset points", fontsize=7)
    _integer_epochs(axis)
    axis.set_xlabel("trial (in the order Tune started them)")
    axis.set_ylabel(MAP_LABEL)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return png(figure)


def _sampled(specs: list[dict]) -> list[dict]:
    return [s for s in specs if s["kind"] != "fixed"]


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class _Scale:
    """A parameter's axis: its values in [0, 1] (log where the space samples log-uniformly or its
    numeric choices span two orders of magnitude; choices of words evenly spaced) and tick labels."""

    def __init__(self, spec: dict) -> None:
        kind, args = spec["kind"], list(spec["args"])
        self.choices = args if kind == "choice" and not _numeric(args) else None
        bounds = args if kind == "choice" else args[:2]
        if self.choices is None:
            self.low, self.high = float(min(bounds)), float(max(bounds))
            self.log = kind == "loguniform" or (kind == "choice" and self.low > 0 and self.high / self.low >= 30)
            shown = sorted(args) if kind == "choice" and len(args) <= 7 else [self.low, self.high]
            self.ticks = [(self(v), _short(v)) for v in shown]
        else:
            self.log = False
            self.ticks = [(self(v), _short(v)) for v in self.choices]

    def _f(self, value: float) -> float:
        return math.log(value) if self.log else value

    def __call__(self, value: Any) -> float:
        if value is None:
            return math.nan
        if self.choices is not None:
            return self.choices.index(value) / max(1, len(self.choices) - 1) if value in self.choices else math.nan
        if not isinstance(value, (int, float)) or (self.log and value <= 0):
            return math.nan  # not a value of this axis (a trial folder written by hand, say)
        span = self._f(self.high) - self._f(self.low)
        return (self._f(float(value)) - self._f(self.low)) / span if span else 0.5


def _axis_name(name: str, width: int = 12) -> str:
    """A parameter name on at most two lines, broken at the underscore nearest its middle."""
    if len(name) <= width or "_" not in name:
        return name
    cuts = [i for i, c in enumerate(name) if c == "_"]
    cut = min(cuts, key=lambda i: abs(i - len(name) / 2))
    return name[:cut + 1] + "\n" + name[cut + 1:]


def plot_parallel(rows: list[TrialRow], specs: list[dict], planned: dict[str, int]) -> Optional[bytes]:
    """One vertical axis per sampled parameter and one for the result; a line per trial, coloured by
    its best validation MAP@R (dashed: it did not run all its epochs)."""
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    params, scored = _sampled(specs), _scored(rows)
    if len(scored) < 2 or not params:
        return None
    scales = [_Scale(s) for s in params]
    values = [r.best_map_at_r for r in scored]
    low, high = min(values), max(values)
    result = _Scale({"kind": "uniform", "args": [low, high if high > low else low + 1e-9]})
    result.ticks = [(result(v), f"{v:.3f}") for v in (low, (low + high) / 2, high)]
    norm, cmap = colors.Normalize(low, high if high > low else low + 1e-9), cm.viridis
    names = [s["name"] for s in params] + ["best val MAP@R"]
    figure, axis = plt.subplots(figsize=(max(9.0, 1.3 * len(names)), 5))
    for row in sorted(scored, key=lambda r: r.best_map_at_r):  # the best drawn last, on top
        y = [scale(row.params.get(s["name"])) for scale, s in zip(scales, params)] + [result(row.best_map_at_r)]
        axis.plot(range(len(names)), y, color=cmap(norm(row.best_map_at_r)), lw=1.6, alpha=0.85,
                  ls="-" if ran_all(row, planned) else "--")
    for i, scale in enumerate([*scales, result]):
        axis.axvline(i, color="black", lw=0.8, zorder=0)
        for position, text in scale.ticks:
            axis.text(i + 0.04, position, text, fontsize=7, va="center", ha="left",
                      bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    axis.set_xticks(range(len(names)), [_axis_name(n) for n in names], fontsize=8)
    axis.set_xlim(-0.2, len(names) - 0.4)
    axis.set_ylim(-0.05, 1.05)
    axis.set_yticks([])
    for side in ("top", "right", "left"):
        axis.spines[side].set_visible(False)
    figure.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=axis, label=MAP_LABEL, pad=0.02)
    return png(figure)


def plot_slices(rows: list[TrialRow], specs: list[dict], planned: dict[str, int]) -> Optional[bytes]:
    """A grid of small plots, one per sampled parameter: each trial's best validation MAP@R against
    the parameter's value (hollow: it did not run all its epochs)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    params, scored = _sampled(specs), _scored(rows)
    if not scored or not params:
        return None
    columns = min(4, len(params))
    lines = math.ceil(len(params) / columns)
    figure, grid = plt.subplots(lines, columns, figsize=(3.1 * columns, 2.5 * lines), sharey=True, squeeze=False)
    for axis, spec in zip(grid.flat, params):
        scale = _Scale(spec)
        shown = [r for r in scored if spec["name"] in r.params]
        x = [r.params[spec["name"]] for r in shown]
        if scale.choices is not None:
            x = [scale.choices.index(v) if v in scale.choices else math.nan for v in x]
            axis.set_xticks(range(len(scale.choices)), [_short(c) for c in scale.choices], fontsize=7)
            axis.set_xlim(-0.5, len(scale.choices) - 0.5)
        elif scale.log:
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.margins(x=0.15, y=0.12)
        early = [not ran_all(r, planned) for r in shown]
        for stopped in (False, True):
            style = STOPPED_STYLE if stopped else {"color": "tab:blue"}
            axis.scatter([a for a, e in zip(x, early) if e == stopped],
                         [r.best_map_at_r for r, e in zip(shown, early) if e == stopped], s=28, lw=1.3,
                         label=NOT_ALL if stopped else RAN_ALL, **style)
        if len(shown) <= 16:
            for a, r in zip(x, shown):
                axis.annotate(r.label, (a, r.best_map_at_r), xytext=(3, 3), textcoords="offset points", fontsize=6)
        axis.set_title(spec["name"], fontsize=9)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in grid[:, 0]:
        axis.set_ylabel(MAP_LABEL, fontsize=8)
    for axis in list(grid.flat)[len(params):]:
        axis.set_visible(False)
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, 1.0 + 0.12 / lines))
    figure.tight_layout()
    return png(figure)


def report_study(rows: list[TrialRow], specs: list[dict]):
    """An Optuna study of every trial that reported, valued at its best validation MAP@R.

    Built from Tune's own records (params and progress.csv), so trials ASHA stopped early count
    too: Optuna's views use COMPLETE trials only, and after ASHA most trials were stopped.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {spec["name"]: distribution(spec["kind"], spec["args"]) for spec in specs}
    study = optuna.create_study(direction="maximize")
    for row in _scored(rows):  # in the order the trials were created: a history
        params = {k: v for k, v in row.params.items() if k in distributions}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params}, value=row.best_map_at_r,
            intermediate_values=row.curve))
    return study


def _optuna_plot(plot: Callable, study, **kwargs) -> Optional[bytes]:
    """An Optuna matplotlib plot as PNG, or None when the study cannot support it yet."""
    import matplotlib.pyplot as plt

    try:  # Optuna switches matplotlib to its own style: the other figures keep theirs
        with warnings.catch_warnings(), plt.rc_context():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
            axes = plot(study, **kwargs)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
    figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
    figure.set_size_inches(8, max(3.0, 0.4 * len({k for t in study.trials for k in t.params}) + 1.5))
    return png(figure)


def plot_importances(rows: list[TrialRow], specs: list[dict]) -> Optional[bytes]:
    """Optuna's hyperparameter importances (fANOVA) over every trial that reported."""
    from optuna.visualization import matplotlib as ovm

    study = report_study(rows, specs)
    return _optuna_plot(ovm.plot_param_importances, study, target_name=MAP_LABEL) if len(study.trials) >= 2 else None


def plot_pareto(points) -> Optional[bytes]:
    """Validation MAP@R against the first cost objective: every method its own colour, the front joined."""
    import matplotlib.pyplot as plt

    finished = [p for p in points.points if p.values[0] == p.values[0]]  # NaN: stopped early, not comparable
    if len(points.objectives) < 2 or not finished:
        return None
    cost = points.objectives[1]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    methods = sorted({str(p.params.get("method", "base config")) for p in points.points})
    for method in methods:
        mine = [p for p in finished if str(p.params.get("method", "base config")) == method]
        axis.scatter([p.values[1] for p in mine], [p.values[0] for p in mine], s=24, label=method)
    for p in points.points:
        if p.values[0] != p.values[0]:
            axis.axvline(p.values[1], color="lightgrey", lw=0.6, zorder=0)
    front = sorted(points.front, key=lambda p: p.values[1])
    axis.plot([p.values[1] for p in front], [p.values[0] for p in front], color="black", lw=1, marker="o",
              mfc="none", ms=9, label="Pareto front")
    axis.set_xlabel(cost.label + (" (log)" if cost.name == "trainable_params" else ""))
    if cost.name == "trainable_params":
        axis.set_xscale("log")
    axis.set_ylabel("validation MAP@R")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return png(figure)
