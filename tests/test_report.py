"""The run report: a self-contained page with real PNGs, rendered by headless Chromium when present."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tune import main as tune_main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A small finished search (local Ray started and stopped by the command itself)."""
    import ray

    tmp = tmp_path_factory.mktemp("report")
    space = tmp / "space.yaml"
    space.write_text("params:\n  method: vptsp_gru\n  lr: {loguniform: [0.0005, 0.02]}\n"
                     "  lr_proxy: {choice: [0.01, 0.1, 0.5]}\n  proxy_bias_ratio: {quniform: [0.1, 0.9, 0.1]}\n")
    args = ["--space", str(space), "--dataset", "synthetic", "--data-root", str(tmp / "data"), "--storage",
            str(tmp / "runs"), "--name", "r", "--num-samples", "5", "--max-epochs", "3", "--grace-period", "1"]
    assert tune_main(args) == 0
    ray.shutdown()
    return tmp / "runs" / "r"


def test_report_is_self_contained_with_every_view(finished_run, capsys):
    page = finished_run / "report" / "report.html"  # written at the end of the search
    assert page.is_file()
    page.unlink()
    assert tune_main(["report", str(finished_run)]) == 0
    text = page.read_text()
    assert "<h2>Trials (best first)</h2>" in text and "<h2>Best config</h2>" in text
    for title in ("Learning curves and ASHA rungs", "Optimisation history (every trial, at its best reported MAP@R)",
                  "Hyperparameter importances",
                  "Parallel coordinates", "Slice view"):
        assert f"<h2>{title}</h2><img" in text, title
    images = re.findall(r"src='data:image/png;base64,([^']+)'", text)
    assert len(images) >= 5 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not re.search(r"(src|href)=['\"](https?:|file:|/)", text)  # nothing outside the page
    assert {p.name for p in (finished_run / "report").glob("*.png")} >= {"curves.png", "history.png"}


def test_report_of_a_folder_that_is_no_run_is_an_error(tmp_path, capsys):
    assert tune_main(["report", str(tmp_path)]) == 2
    assert "not a semproxy search run" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (finished_run / "report" / "report.html").as_uri()
    dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "Search report: r" in dom.stdout and dom.stdout.count("<img") >= 5
    subprocess.run(["chromium", *flags, "--window-size=1280,2000", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_report_study_and_rungs_cover_every_trial_that_reported():
    import math

    from semproxy.search.report import asha_rungs, report_study
    from semproxy.search.results import TrialRow

    curves = {"a": {1: 0.2, 2: 0.5, 4: 0.6}, "b": {1: 0.4}, "c": {1: 0.1, 2: 0.3}}
    rows = [TrialRow(t, "TERMINATED", {"lr": lr, "method": "vpt"}, max(c), max(c.values()), 1, math.nan, None,
                     None, "", c) for (t, c), lr in zip(curves.items(), (1e-3, 1e-2, 3e-2))]
    specs = [{"name": "lr", "kind": "loguniform", "args": [1e-4, 1e-1]}, {"name": "method", "kind": "fixed",
                                                                          "args": ["vpt"]}]
    study = report_study(rows, curves, specs)
    assert sorted((t.params["lr"], t.value) for t in study.trials) == [(1e-3, 0.6), (1e-2, 0.4), (3e-2, 0.3)]
    rungs = asha_rungs(curves, {"grace_period": 1, "reduction_factor": 2, "max_epochs": 4})
    assert rungs == {1: {"a": 0.2, "b": 0.4, "c": 0.1}, 2: {"a": 0.5, "c": 0.3}, 4: {"a": 0.6}}
