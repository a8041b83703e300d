"""A search whose driver is killed with SIGKILL resumes to completion without rerunning anything."""
from __future__ import annotations

import glob
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).parent.parent
SPACE = "params:\n  method: vptsp_gru\n  lr: {loguniform: [0.0005, 0.02]}\n  lr_proxy: {choice: [0.01, 0.1, 0.5]}\n"


def _iterations(run: Path) -> dict[str, list[int]]:
    out = {}
    for folder in glob.glob(str(run / "train_dml_*")):
        progress = Path(folder) / "progress.csv"
        if progress.is_file() and progress.stat().st_size:
            out[Path(folder).name.split("_")[2]] = pd.read_csv(progress)["training_iteration"].tolist()
    return out


def _rungs(run: Path, exclude: set[str] = frozenset()) -> tuple[str, dict[int, dict[str, float]]]:
    """The newest saved ASHA state (file name, milestone -> recorded) not among ``exclude``."""
    files = [f for f in glob.glob(str(run / "callback-states-*.pkl")) if f not in exclude]
    if not files:
        return "", {}
    newest = max(files, key=os.path.getmtime)
    state = pickle.loads(Path(newest).read_bytes())
    asha = next(s for s in state.values() if s)
    return newest, {int(m): dict(rec) for m, rec in asha["rungs"][0]}


def test_sigkilled_driver_resumes_without_rerunning(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    command = [sys.executable, str(ROOT / "tune.py"), "--space", "space.yaml", "--dataset", "synthetic",
               "--data-root", str(tmp_path / "data"), "--num-samples", "6", "--max-epochs", "6",
               "--grace-period", "2", "--reduction-factor", "2", "--max-concurrent", "1",
               "--storage", str(tmp_path / "runs"), "--name", "k"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    run = tmp_path / "runs" / "k"
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(_iterations(run)) < 3:  # kill with the third trial under way
        time.sleep(0.5)
    assert len(_iterations(run)) >= 3, "the search made no progress"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    before, (file_before, rungs_before) = _iterations(run), _rungs(run)

    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after, (file_after, rungs_after) = _iterations(run), _rungs(run, exclude={file_before})
    assert len(after) == 6
    for trial, iterations in before.items():
        # nothing restarted from scratch: the iterations before the kill continue, never repeat
        assert after[trial][:len(iterations)] == iterations
        assert after[trial] == sorted(set(after[trial])), (trial, after[trial])
        assert max(after[trial]) <= 6
    assert file_after, "the resumed search saved no ASHA state of its own"
    for milestone, recorded in rungs_before.items():  # ASHA's rungs came back with the resume
        assert recorded.items() <= rungs_after[milestone].items()
    for trial, iterations in after.items():  # decisions consistent with the rungs
        stop = max(iterations)
        if stop < 6:
            rung = rungs_after[stop]
            assert trial in rung, (trial, stop)  # stopped only at a rung, where its value was recorded
            assert rung[trial] < max(rung.values()), (trial, rung)  # and never as the best of that rung
    assert "best config (final training)" in resumed.stdout
