"""The comparison's page: ``RUN/report/compare.html`` with the table, test MAP@R against trained
parameters (``compare.png`` beside it and embedded), and a link to each space's search report."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..atomic import write_text_atomic
from .compare_table import HEADER, TEST_MAP, MethodResult, table_cells, table_note
from .report import STYLE

if TYPE_CHECKING:
    from .compare import ComparePlan

__all__ = ["plot_map_against_params", "write_compare_page"]

def plot_map_against_params(results: list[MethodResult]) -> Optional[bytes]:
    """Test MAP@R (mean, 95% interval as error bars) against trained parameters on a log axis; None
    when no space counted its parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report_figures import png

    shown = [r for r in results if r.trainable_params]
    if not shown:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, r in enumerate(shown):
        interval = r.test[TEST_MAP]
        axis.errorbar([r.trainable_params], [100 * interval.mean], capsize=4, marker="o", color=f"C{index % 10}",
                      yerr=None if interval.half_width is None else [[100 * interval.half_width]] * 2,
                      label=f"{r.name} ({r.method})" + ("" if interval.half_width is not None else ", n/a"))
    axis.set_xscale("log")
    axis.set_xlabel("trained parameters (log scale)")
    axis.set_ylabel("test MAP@R (%)")
    axis.set_title("Test MAP@R against trained parameters (95% t-intervals over the seeds)")
    axis.grid(alpha=.3)
    axis.legend(fontsize=8)
    return png(figure)


def write_compare_page(results: list[MethodResult], plan: "ComparePlan", run_dir: Path) -> Path:
    """Write ``RUN/report/compare.html`` (self-contained; ``compare.png`` beside it); returns the page."""
    out = run_dir / "report"
    image = plot_map_against_params(results)
    figure = "<p>No space counted its trained parameters: no figure.</p>"
    if image is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.png").write_bytes(image)
        figure = (f"<img alt='test MAP@R against trained parameters' "
                  f"src='data:image/png;base64,{base64.b64encode(image).decode()}'>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in table_cells(r)) + "</tr>" for r in results)
    note = html.escape(table_note(results))
    links = "".join(f"<li><a href='../searches/{html.escape(r.name)}/report/report.html'>{html.escape(r.name)}</a>"
                    f" ({html.escape(r.method)}): {r.trials} trials, final configuration in "
                    f"<code>final/{html.escape(r.name)}/config.yaml</code></li>" for r in results)
    budget = ", ".join(f"{k} {v}" for k, v in plan.budget.items() if v != "")
    page = f"""<!doctype html><html><head><meta charset='utf-8'>
<title>semproxy comparison: {html.escape(run_dir.name)}</title><style>{STYLE}</style></head><body>
<h1>Comparison: {html.escape(run_dir.name)}</h1>
<p>Dataset {html.escape(plan.dataset)}; every search with the same budget ({html.escape(budget)}); each search's best
configuration trained {plan.repeats} times on train + validation classes (seeds
{html.escape(', '.join(map(str, plan.final_seeds)))}) and tested.</p>
<h2>Results</h2><div class='scroll'><table id='compare'><tr>{head}</tr>{rows}</table></div>
<p class='small'>{note}</p>
<h2>Test MAP@R against trained parameters</h2>{figure}
<h2>Search reports</h2><ul>{links}</ul>
<p class='small'>Command: <code>{html.escape(plan.command)}</code></p>
</body></html>
"""
    return write_text_atomic(out / "compare.html", page)
