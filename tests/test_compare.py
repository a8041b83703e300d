"""tune.py compare: two real smoke searches with one budget, final runs with two seeds, a driver killed
with SIGKILL twice (during the second search, then during the final runs) and resumed, the table's
intervals against an independent float64 recomputation, the page in headless Chromium, and the refusals."""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from semproxy.run_lock import LOCK_FILE
from test_report import CHROMIUM
from tune import main as tune_main

ROOT = Path(__file__).parent.parent
SPACES = ROOT / "search_spaces"
SEEDS = (0, 1)
METRICS = ("test_recall_at_1", "test_map_at_r", "test_map_at_r_paper")


def _command(tmp: Path) -> list[str]:
    return [sys.executable, str(ROOT / "tune.py"), "compare", "--smoke", "--spaces", str(SPACES / "linear.yaml"),
            str(SPACES / "vpt.yaml"), "--num-samples", "2", "--max-epochs", "2", "--repeats", "2",
            "--max-concurrent", "1", "--storage", str(tmp / "runs"), "--name", "c", "--data-root", str(tmp / "data")]


def _trial_files(search: Path) -> dict[str, tuple[float, bytes]]:
    """Each trial's progress.csv: (mtime, contents), by trial folder name."""
    return {Path(f).parent.name: (os.path.getmtime(f), Path(f).read_bytes())
            for f in glob.glob(str(search / "train_dml_*" / "progress.csv"))}


def _wait_for(condition, driver: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        assert driver.poll() is None, "the comparison ended before it could be killed"
        time.sleep(0.1)
    assert condition(), "the comparison made no progress"


def _kill(driver: subprocess.Popen) -> None:
    os.killpg(driver.pid, signal.SIGKILL)  # the driver, its Ray cluster and its trials
    driver.wait()
    time.sleep(1)


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> dict:
    """A comparison killed during its second search, resumed and killed during its final runs, resumed
    to the end; what was on disk at each kill."""
    tmp = tmp_path_factory.mktemp("compare")
    run, command = tmp / "runs" / "c", _command(tmp)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    searches, final = run / "searches", run / "final"

    def start() -> subprocess.Popen:
        return subprocess.Popen(command + (["--resume"] if (run / "compare.json").exists() else []), cwd=tmp, env=env,
                                stdout=open(tmp / f"out{len(list(tmp.glob('out*')))}.txt", "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)

    driver = start()  # 1: killed once the second search's first trial has reported an epoch
    _wait_for(lambda: any(rows for _, rows in _trial_files(searches / "vpt").values()), driver)
    _kill(driver)
    first_kill = {"linear": _trial_files(searches / "linear"), "vpt": _trial_files(searches / "vpt")}

    driver = start()  # 2: killed once the first final run has finished and the second saved a checkpoint
    seed0 = final / "linear" / "seed0" / "metrics.json"
    _wait_for(lambda: seed0.is_file() and (final / "linear" / "seed1" / "checkpoint.pt").is_file(), driver)
    _kill(driver)
    second_kill = {"linear": _trial_files(searches / "linear"), "vpt": _trial_files(searches / "vpt"),
                   "seed0": (os.path.getmtime(seed0), seed0.read_bytes()),
                   "seed1": {name: (final / "linear" / "seed1" / name).is_file()
                             for name in ("checkpoint.pt", "metrics.json")}}

    driver = start()  # 3: to the end
    assert driver.wait(timeout=300) == 0, (tmp / "out2.txt").read_text()[-3000:]
    outputs = [(tmp / f"out{i}.txt").read_text() for i in range(3)]
    return {"run": run, "tmp": tmp, "command": command, "first": first_kill, "second": second_kill,
            "outputs": outputs}


def test_a_killed_comparison_resumes_without_rerunning_what_finished(compared):
    run, first, second, outputs = compared["run"], compared["first"], compared["second"], compared["outputs"]
    assert first["linear"] and len(first["linear"]) == 2, "the first search had not finished at the first kill"
    assert "search 1/2 linear: finished before, skipped" in outputs[1]
    assert "search 2/2 vpt: resuming" in outputs[1]
    # the finished search was never touched again; the interrupted one continued its trials, repeating no epoch
    assert _trial_files(run / "searches" / "linear") == first["linear"] == second["linear"]
    vpt = _trial_files(run / "searches" / "vpt")
    assert len(vpt) == 2 and vpt == second["vpt"]
    for name, (_, rows) in first["vpt"].items():
        before = pd.read_csv(run / "searches" / "vpt" / name / "progress.csv")["training_iteration"].tolist()
        assert before == sorted(set(before)) and len(before) <= 2, (name, before)
        assert vpt[name][1].startswith(rows) or not rows
    # the final run that had finished was not rerun; the interrupted one went on as its files said
    for text in ("search 1/2 linear: finished before, skipped", "search 2/2 vpt: finished before, skipped",
                 "linear seed 0: finished before, skipped"):
        assert text in outputs[2], text
    seed0 = run / "final" / "linear" / "seed0" / "metrics.json"
    assert (os.path.getmtime(seed0), seed0.read_bytes()) == second["seed0"]
    said = re.search(r"linear seed 1: (finished before|resuming from its checkpoint|training)", outputs[2]).group(1)
    state = second["seed1"]
    assert said == ("finished before" if state["metrics.json"] else
                    "resuming from its checkpoint" if state["checkpoint.pt"] else "training"), (said, state)
    for space in ("linear", "vpt"):
        for seed in SEEDS:
            assert (run / "final" / space / f"seed{seed}" / "metrics.json").is_file()
    plan = json.loads((run / "compare.json").read_text())
    assert plan["final_seeds"] == list(SEEDS) and plan["budget"]["num_samples"] == 2
    assert plan["budget"]["max_epochs"] == 2 and list(plan["spaces"]) == ["linear", "vpt"]
    # every search ran with that one budget, as its own record says
    for space in ("linear", "vpt"):
        record = json.loads((run / "searches" / space / "search.json").read_text())
        assert {k: record["settings"][k] for k in plan["budget"]} == plan["budget"]
        assert (run / "searches" / space / "report" / "report.html").is_file()


def _csv_rows(run: Path) -> dict[str, dict[str, str]]:
    with open(run / "compare.csv", newline="") as handle:
        return {row["space"]: row for row in csv.DictReader(handle)}


def test_the_table_matches_an_independent_recomputation(compared):
    run = compared["run"]
    rows = _csv_rows(run)
    markdown = (run / "compare.md").read_text()
    assert set(rows) == {"linear", "vpt"}
    for space, row in rows.items():
        runs = [json.loads((run / "final" / space / f"seed{s}" / "metrics.json").read_text()) for s in SEEDS]
        assert [r["config"]["optim"]["seed"] for r in runs] == list(SEEDS)  # the seeds differ, the rest does not
        assert runs[0]["config"] | {"optim": None} == runs[1]["config"] | {"optim": None}
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {space} |"))
        for metric in METRICS:
            values = np.array([r["test"][metric] for r in runs], dtype=np.float64)
            n = len(values)
            mean, sd = values.mean(), values.std(ddof=1)
            half = scipy.stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
            assert float(row[f"{metric}_mean"]) == pytest.approx(mean, rel=1e-12, abs=1e-15)
            assert float(row[f"{metric}_ci95_half_width"]) == pytest.approx(half, rel=1e-9, abs=1e-15)
            assert float(row[f"{metric}_ci95_low"]) == pytest.approx(mean - half, rel=1e-9, abs=1e-15)
            assert float(row[f"{metric}_ci95_high"]) == pytest.approx(mean + half, rel=1e-9, abs=1e-15)
            assert f" {100 * mean:.2f} ± {100 * half:.2f} " in line, (metric, line)
        # the search's spending and its best validation MAP@R, from its trials' own files
        progress = [pd.read_csv(f) for f in glob.glob(str(run / "searches" / space / "train_dml_*" / "progress.csv"))]
        assert int(row["trial_epochs"]) == sum(int(p["training_iteration"].max()) for p in progress) == 4
        best_val = max(float(p["val_map_at_r"].max()) for p in progress)
        assert float(row["best_val_map_at_r"]) == pytest.approx(best_val, rel=1e-12)
        test_mean = np.mean([r["test"]["test_map_at_r"] for r in runs])
        assert float(row["val_test_gap"]) == pytest.approx(best_val - test_mean, rel=1e-9)
        assert 0 < float(row["search_wall_s"]) < 600
        # trained parameters: every parameter the final model trains (neither space has class prompts)
        from semproxy.config import Config
        from semproxy.models import build_model

        config = Config.from_mapping(runs[0]["config"])
        model = build_model(config.model, num_classes=int(runs[0]["data"]["counts"]["train"]["classes"]))
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert int(row["trainable_params"]) == trained == runs[0]["parameters"]["learned"]
    assert int(rows["vpt"]["trainable_params"]) > int(rows["linear"]["trainable_params"])  # prompts cost parameters


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_the_comparison_page_renders_in_headless_chromium(compared, tmp_path):
    page = compared["run"] / "report" / "compare.html"
    assert (page.parent / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    flags = [*CHROMIUM[1:], f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1200"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0 and "Comparison: c" in dom.stdout
    table = dom.stdout.split("<table id=\"compare\">")[1].split("</table>")[0]
    assert table.count("<tr>") == 3 and table.count("±") == 6  # a header and two spaces, three intervals each
    assert re.search(r"<img [^>]*src=\"data:image/png;base64,", dom.stdout)
    links = re.findall(r"href=\"([^\"]+report\.html)\"", dom.stdout)
    assert len(links) == 2 and all((page.parent / link).resolve().is_file() for link in links), links
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120,
                   check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 30_000


def test_a_resume_with_another_plan_is_refused_naming_what_differs(compared, capsys):
    run, command = compared["run"], compared["command"][2:]

    def written() -> dict[Path, float]:  # the lock file names whoever last held the folder: not the run's
        return {p: p.stat().st_mtime for p in run.rglob("*") if p.is_file() and p.name != LOCK_FILE}

    before = written()
    changed = command[:]
    changed[changed.index("--repeats") + 1] = "3"
    assert tune_main(changed + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is another comparison (--repeats 2 -> 3)" in err[0], err
    changed = command[:]
    changed[changed.index("--num-samples") + 1] = "3"
    assert tune_main(changed + ["--resume", "--seed", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--num-samples 2 -> 3" in err[0] and "--seed 0 -> 7" in err[0], err
    assert tune_main(command) == 2  # without --resume: never a second comparison in the folder
    assert "pass --resume" in capsys.readouterr().err
    assert written() == before


# -- without running anything ---------------------------------------------------------------------------
def _refused(args: list[str], tmp: Path, capsys, *texts: str) -> None:
    assert tune_main(["compare", "--smoke", "--storage", str(tmp / "runs"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and all(t in err[0] for t in texts), err
    assert not (tmp / "runs").exists()  # refused before anything was written


def test_bad_input_is_one_line_before_any_work(tmp_path, capsys):
    vpt, linear = str(SPACES / "vpt.yaml"), str(SPACES / "linear.yaml")
    _refused(["--repeats", "0"], tmp_path, capsys, "--repeats must be at least 1, got 0")
    _refused(["--spaces", vpt, str(tmp_path / "nope.yaml")], tmp_path, capsys, "nope.yaml: no such file")
    _refused(["--spaces", vpt, linear, vpt], tmp_path, capsys, "vpt.yaml is given twice")
    (tmp_path / "other").mkdir()
    shutil.copy(SPACES / "linear.yaml", tmp_path / "other" / "vpt.yaml")
    shutil.copy(SPACES / "global.yaml", tmp_path / "other" / "global.yaml")
    _refused(["--spaces", vpt, str(tmp_path / "other" / "vpt.yaml")], tmp_path, capsys, "has the name of")
    _refused(["--spaces", str(SPACES / "peft_compare.yaml")], tmp_path, capsys, "samples the method")
    _refused(["--spaces", str(SPACES / "global.yaml")], tmp_path, capsys, "does not fix the method")
    # spaces whose own budgets differ: the flag must decide, else the comparison would not be fair
    (tmp_path / "other" / "seeded.yaml").write_text((SPACES / "vpt.yaml").read_text() + "search: {seed: 3}\n")
    _refused(["--spaces", linear, str(tmp_path / "other" / "seeded.yaml")], tmp_path, capsys,
             "search.seed differently", "linear.yaml: unset", "seeded.yaml: 3", "give --seed")
    assert tune_main(["compare", "--smoke", "--storage", str(tmp_path / "runs"), "--spaces", linear,
                      str(tmp_path / "other" / "seeded.yaml"), "--seed", "3", "--resume"]) == 2  # --seed decides
    assert "no comparison at" in capsys.readouterr().err
    _refused(["--spaces", linear, "--resume"], tmp_path, capsys, "--resume: no comparison at")
    _refused(["--spaces", linear, "--dataset", "cub200", "--data-root", str(tmp_path / "no-cub")], tmp_path, capsys,
             "no-cub")  # the data is checked (preflight) before the comparison writes its plan


def test_the_default_spaces_are_table_9s_and_share_one_budget(tmp_path):
    from semproxy.cli.tune import compare_parser
    from semproxy.search.compare import TABLE9, plan_compare
    from semproxy.search.settings import SMOKE

    args = compare_parser().parse_args(["--smoke", "--storage", str(tmp_path), "--num-samples", "5", "--seed", "4",
                                        "--repeats", "3"])
    plan, run_dir, searches = plan_compare(args)
    assert list(plan.spaces) == list(TABLE9) == ["full", "linear", "bitfit", "adapter", "vpt", "vptsp"]
    assert [s["method"] for s in plan.spaces.values()] == ["full", "linear", "bitfit", "adapter", "vpt", "vptsp_gru"]
    assert plan.budget["num_samples"] == 5 and plan.budget["seed"] == 4  # flags over --smoke over the spaces
    assert {k: plan.budget[k] for k in SMOKE if k != "num_samples"} == {k: v for k, v in SMOKE.items()
                                                                         if k != "num_samples"}
    assert plan.final_seeds == [4, 5, 6] and run_dir == tmp_path / "compare-synthetic"
    assert all(s.settings.to_mapping() == plan.budget for s in searches)
    assert [s.run_dir for s in searches] == [run_dir / "searches" / name for name in TABLE9]
    assert not run_dir.exists()


def test_t_interval_against_published_t_quantiles():
    from semproxy.search.intervals import t_interval

    interval = t_interval([1.0, 2.0, 3.0])  # s = 1, t(0.975, 2) = 4.303 (any t table)
    assert interval.mean == 2.0 and interval.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert (interval.low, interval.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), rel=1e-6)
    five = t_interval([0.5, 0.7, 0.6, 0.4, 0.8])  # s = 0.158114, t(0.975, 4) = 2.776
    assert five.half_width == pytest.approx(2.776445 * 0.1581139 / math.sqrt(5), rel=1e-6)
    assert t_interval([0.3, 0.3]).half_width == 0.0
    one = t_interval([0.42])
    assert (one.mean, one.half_width, one.low, one.n) == (0.42, None, None, 1)
    assert one.format(100) == "42.00 ± n/a" and interval.format(1, 3) == "2.000 ± 2.484"
    for bad in ([], [1.0, math.nan]):
        with pytest.raises(ValueError):
            t_interval(bad)
