"""The run report: a self-contained page with real PNGs, rendered by headless Chromium when present;
ASHA's decisions as it took them; what became of each trial; TensorBoard's hparams at each trial's best."""
from __future__ import annotations

import base64
import glob
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from semproxy.metric_names import BEST_OBJECTIVE, OBJECTIVE
from semproxy.search.results import DECISIONS_FILE, best_trial, read_decisions, read_trials
from tune import main as tune_main

MAX_EPOCHS = 3


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A small finished search (local Ray started and stopped by the command itself)."""
    import ray

    tmp = tmp_path_factory.mktemp("report")
    space = tmp / "space.yaml"
    space.write_text("params:\n  method: vptsp_gru\n  lr: {loguniform: [0.0005, 0.02]}\n"
                     "  lr_proxy: {choice: [0.01, 0.1, 0.5]}\n  proxy_bias_ratio: {quniform: [0.1, 0.9, 0.1]}\n")
    args = ["--space", str(space), "--dataset", "synthetic", "--data-root", str(tmp / "data"), "--storage",
            str(tmp / "runs"), "--name", "r", "--num-samples", "5", "--max-epochs", str(MAX_EPOCHS),
            "--grace-period", "1", "--reduction-factor", "2"]
    assert tune_main(args) == 0
    ray.shutdown()
    return tmp / "runs" / "r"


def _table_rows(page: str) -> dict[str, str]:
    """Trial id -> its row's HTML in the trials table."""
    table = page.split("<table id='trials'>")[1].split("</table>")[0]
    return {re.search(r"<td>([0-9a-f]{8})</td>", row).group(1): row for row in table.split("<tr")[2:]}


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def test_report_is_self_contained_with_every_view(finished_run, capsys):
    page = finished_run / "report" / "report.html"  # written at the end of the search
    assert page.is_file()
    page.unlink()
    assert tune_main(["report", str(finished_run)]) == 0
    text = page.read_text()
    assert "<h2>Trials (best first)</h2>" in text and "<h2>Best trial: #" in text
    for title in ("Learning curves and ASHA's decisions", "Optimisation history", "Hyperparameter importances",
                  "Parallel coordinates", "Slices"):
        assert f"<h2>{title}</h2><img" in text, title
    images = re.findall(r"src='data:image/png;base64,([^']+)'", text)
    assert len(images) >= 5 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not re.search(r"(src|href)=['\"](https?:|file:|/)", text)  # nothing outside the page
    assert {p.name for p in (finished_run / "report").glob("*.png")} >= {"curves.png", "history.png", "slice.png"}
    assert "id='partial'" not in text  # a finished search has no banner


def test_the_table_says_which_trials_asha_stopped_and_at_which_cutoff(finished_run):
    rows = read_trials(finished_run)
    decisions = read_decisions(finished_run)
    assert decisions is not None and (finished_run / DECISIONS_FILE).is_file()
    page = (finished_run / "report" / "report.html").read_text()
    shown = _table_rows(page)
    assert set(shown) == {r.trial_id for r in rows}
    stops = {d.trial: d for d in decisions if d.stopped}
    for row in rows:
        assert f"<td>{row.label}</td>" in shown[row.trial_id]  # the label the figures use
        if row.epochs < MAX_EPOCHS:  # stopped by ASHA: at a rung, below the cut-off it applied then
            stop = stops[row.trial_id]
            assert stop.rung == row.epochs and stop.value < stop.cutoff
            assert math.isclose(stop.value, row.curve[row.epochs])
            assert f"stopped at epoch {row.epochs} of {MAX_EPOCHS}" in _text(shown[row.trial_id])
            assert f"cut-off {stop.cutoff:.4f}" in _text(shown[row.trial_id])
            assert "TERMINATED" not in shown[row.trial_id]
        else:
            assert row.trial_id not in stops and f"completed ({MAX_EPOCHS} epochs)" in _text(shown[row.trial_id])


def test_asha_decisions_are_logged_as_asha_took_them(finished_run):
    """Every trial reaching a rung below max_t is judged once there, against the values recorded before it."""
    rows = read_trials(finished_run)
    decisions = read_decisions(finished_run)
    for rung in (1, 2):  # --grace-period 1 --reduction-factor 2 --max-epochs 3: rungs 1 and 2 decide
        judged = [d for d in decisions if d.rung == rung]
        assert sorted(d.trial for d in judged) == sorted(r.trial_id for r in rows if r.epochs >= rung)
        for i, d in enumerate(judged):
            earlier = [e.value for e in judged[:i]]
            assert d.compared == i
            if not earlier:
                assert d.cutoff is None and not d.stopped
                continue
            assert math.isclose(d.cutoff, float(np.nanpercentile(earlier, 50)))  # ASHA's quantile, at the time
            assert d.stopped == (d.value < d.cutoff)


def test_a_run_without_recorded_decisions_draws_no_cutoffs(finished_run, tmp_path):
    older = tmp_path / "older"
    shutil.copytree(finished_run, older)
    (older / DECISIONS_FILE).unlink()
    (older / "report").rename(tmp_path / "kept")
    assert tune_main(["report", str(older)]) == 0
    page = (older / "report" / "report.html").read_text()
    assert "This run recorded no ASHA decisions" in page and "cut-off 0." not in page
    assert (older / "report" / "curves.png").read_bytes() != (tmp_path / "kept" / "curves.png").read_bytes()


def _set_statuses(run: Path, statuses: dict[str, str]) -> None:
    """Rewrite Tune's experiment state as if the given trials had ended so."""
    state_file = max(run.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        trial["status"] = statuses.get(trial["trial_id"], trial["status"])
        entry[0] = json.dumps(trial)
    state_file.write_text(json.dumps(state))


def test_errors_and_an_unfinished_search_say_so(finished_run, tmp_path):
    run = tmp_path / "crafted"
    shutil.copytree(finished_run, run)
    rows = read_trials(run)
    failed, running = rows[-1], rows[0]
    _set_statuses(run, {failed.trial_id: "ERROR", running.trial_id: "RUNNING"})
    (Path(failed.path) / "error.txt").write_text("Traceback (most recent call last):\n  ...\n"
                                                 "TrainingError: the loss became NaN at epoch 1, step 3\n")
    assert tune_main(["report", str(run)]) == 0
    page = (run / "report" / "report.html").read_text()
    shown = _table_rows(page)
    assert "ERROR: TrainingError: the loss became NaN at epoch 1, step 3" in _text(shown[failed.trial_id])
    assert f"RUNNING at epoch {running.epochs} of {MAX_EPOCHS}" in _text(shown[running.trial_id])
    banner = page.split("id='partial'>")[1].split("</div>")[0]
    assert "Unfinished search" in banner and f"{len(rows) - 1} of 5 trials finished" in banner
    assert page.index("id='partial'") < page.index("<table id='trials'>")  # at the top


def test_the_best_trial_named_by_the_report_is_the_exported_one_never_a_failed_one(finished_run, tmp_path):
    run = tmp_path / "crafted"
    shutil.copytree(finished_run, run)
    top, runner_up = read_trials(run)[:2]
    _set_statuses(run, {top.trial_id: "ERROR"})
    assert tune_main(["report", str(run)]) == 0
    page = (run / "report" / "report.html").read_text()
    summary = page.split("<h2>")[0]
    assert f"Best: trial <b>{runner_up.label}</b> ({runner_up.trial_id})" in summary, summary[-600:]
    assert f"<h2>Best trial: {runner_up.label}</h2>" in page
    assert best_trial(read_trials(run)).trial_id == runner_up.trial_id


def test_tensorboard_hparams_show_each_trials_best_map_at_r(finished_run):
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.plugins.hparams import metadata
    from tensorboard.util import tensor_util  # the loader gives scalars as tensors

    tag = f"ray/tune/{BEST_OBJECTIVE}"
    for row in read_trials(finished_run):
        metrics, best = set(), []
        for events in glob.glob(str(Path(row.path) / "events.out.tfevents.*")):
            for event in event_file_loader.EventFileLoader(events).Load():
                for value in event.summary.value:
                    if value.tag == metadata.EXPERIMENT_TAG:
                        experiment = metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
                        metrics |= {m.name.tag for m in experiment.metric_infos}
                    elif value.tag == tag:
                        best.append((event.step, float(tensor_util.make_ndarray(value.tensor))))
        assert tag in metrics and f"ray/tune/{OBJECTIVE}" in metrics, (row.trial_id, metrics)
        # its last value, the one the hparams view shows, is the trial's best epoch, not its last
        assert math.isclose(max(best)[1], row.best_map_at_r, rel_tol=1e-6), (row.trial_id, best, row.curve)
        running = [max(list(row.curve.values())[:epoch]) for epoch in sorted(row.curve)]
        assert [v for _, v in sorted(best)] == pytest.approx(running, rel=1e-6)


def test_report_of_a_folder_that_is_no_run_is_an_error(tmp_path, capsys):
    assert tune_main(["report", str(tmp_path)]) == 2
    assert "not a semproxy search run" in capsys.readouterr().err


CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_report_renders_in_headless_chromium_without_horizontal_scroll(finished_run, tmp_path):
    shot = tmp_path / "shot.png"
    flags = [*CHROMIUM[1:], f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000"]
    url = (finished_run / "report" / "report.html").as_uri()
    dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "Search report: r" in dom.stdout and dom.stdout.count("<img") >= 5
    # The page as laid out at 1400 px: a copy that writes its own widths into the DOM once loaded.
    measured = tmp_path / "measured.html"
    script = ("<script>addEventListener('load', () => document.body.setAttribute('data-widths', "
              "document.documentElement.scrollWidth + ' ' + document.documentElement.clientWidth))</script>")
    measured.write_text((finished_run / "report" / "report.html").read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run(["chromium", *flags, "--dump-dom", measured.as_uri()], capture_output=True, text=True,
                         timeout=120)
    scroll, client = map(int, re.search(r'data-widths="(\d+) (\d+)"', dom.stdout).groups())
    assert 1300 <= client <= 1400 and scroll <= client, (scroll, client)  # no page-wide horizontal scroll
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_report_study_values_every_trial_that_reported_at_its_best():
    from semproxy.search.report_figures import report_study
    from semproxy.search.results import TrialRow

    curves = {"cccccccc": {1: 0.1, 2: 0.3}, "aaaaaaaa": {1: 0.2, 2: 0.5, 4: 0.6}, "bbbbbbbb": {1: 0.4},
              "dddddddd": {}}
    numbers = {"aaaaaaaa": 1, "bbbbbbbb": 2, "cccccccc": 3, "dddddddd": 4}
    rows = [TrialRow(t, "TERMINATED", {"lr": lr, "method": "vpt"}, max(c, default=0),
                     max(c.values(), default=math.nan), 1, math.nan, None, None,
                     f"/runs/x/train_dml_{t}_{numbers[t]}_lr={lr}", c)
            for (t, c), lr in zip(curves.items(), (3e-2, 1e-3, 1e-2, 5e-2))]
    assert [r.label for r in rows] == ["#3", "#1", "#2", "#4"]
    specs = [{"name": "lr", "kind": "loguniform", "args": [1e-4, 1e-1]}, {"name": "method", "kind": "fixed",
                                                                          "args": ["vpt"]}]
    study = report_study(rows, specs)
    assert [(t.params["lr"], t.value) for t in study.trials] == [(1e-3, 0.6), (1e-2, 0.4), (3e-2, 0.3)]


def test_the_pareto_table_prints_counts_as_integers_and_other_values_to_4_digits():
    from semproxy.search.objectives import OBJECTIVES
    from semproxy.search.pareto import FrontPoint, StudyPoints
    from semproxy.search.report import _pareto_table

    objectives = tuple(OBJECTIVES[n] for n in ("map_at_r", "trainable_params", "step_ms", "peak_mem_mb"))
    front = [FrontPoint(7, "ab12cd34", (0.72345, 13952.0, 12.3456, 1534.72), {}, None, True),
             FrontPoint(3, "ef56ab78", (0.5, 1_234_567.0, 8.0, 0.875), {}, None, True)]  # Optuna's values: floats
    table = _pareto_table(StudyPoints(objectives, front, front))
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    assert [re.findall(r"<td>(.*?)</td>", row) for row in rows] == [
        ["7", "ab12cd34", "0.7235", "13,952", "12.35", "1,535"], ["3", "ef56ab78", "0.5", "1,234,567", "8", "0.875"]]


def test_recording_asha_logs_each_decision_and_keeps_it_across_a_resume(tmp_path):
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from semproxy.search.schedulers import build_scheduler
    from semproxy.search.settings import SearchSettings

    settings = SearchSettings(max_epochs=4, grace_period=1, reduction_factor=2)
    asha, (callback,) = build_scheduler(settings, OBJECTIVE, "max")
    trials = {name: SimpleNamespace(trial_id=name, local_experiment_path=str(tmp_path)) for name in "abcd"}
    actions = {}
    for name, value in [("a", 0.5), ("b", 0.3), ("c", 0.6), ("d", 0.55)]:  # all at epoch 1, in this order
        asha.on_trial_add(None, trials[name])
        callback.on_trial_start(0, [], trials[name])
        actions[name] = asha.on_trial_result(None, trials[name], {"training_iteration": 1, OBJECTIVE: value})
    assert actions == {"a": TrialScheduler.CONTINUE, "b": TrialScheduler.STOP, "c": TrialScheduler.CONTINUE,
                       "d": TrialScheduler.CONTINUE}
    # each judged against the values recorded before it: not one cut-off over every trial afterwards
    logged = [(d["trial"], d["rung"], d["cutoff"], d["compared"], d["stopped"]) for d in asha.decisions]
    assert logged == [("a", 1, None, 0, False), ("b", 1, 0.5, 1, True), ("c", 1, 0.4, 2, False),
                      ("d", 1, 0.5, 3, False)]
    state = callback.get_state()  # an experiment checkpoint: the decisions as JSON beside the state
    assert json.loads((tmp_path / DECISIONS_FILE).read_text())["decisions"] == asha.decisions
    assert [d.trial for d in read_decisions(tmp_path)] == ["a", "b", "c", "d"]
    resumed, (again,) = build_scheduler(settings, OBJECTIVE, "max")
    again.set_state(state)
    assert resumed.decisions == asha.decisions
