"""Stopped searches: SIGKILL resumes without rerunning anything; Ctrl-C says so; a resume must be the same run."""
from __future__ import annotations

import glob
import ipaddress
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd

from processes import descendants, listening_sockets

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
    from semproxy.search.ray_compat import asha_rungs
    from semproxy.search.schedulers import build_scheduler
    from semproxy.search.settings import SearchSettings

    files = [f for f in glob.glob(str(run / "callback-states-*.pkl")) if f not in exclude]
    if not files:
        return "", {}
    newest = max(files, key=os.path.getmtime)
    saved = next(s for s in pickle.loads(Path(newest).read_bytes()).values() if s)  # the scheduler's state
    asha, (callback,) = build_scheduler(SearchSettings(max_epochs=6, grace_period=2, reduction_factor=2),
                                        "val_map_at_r", "max")
    callback.set_state(saved)
    return newest, asha_rungs(asha)


def test_sigkilled_driver_resumes_without_rerunning(tmp_path):
    from semproxy.search.results import read_history

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
    second = subprocess.run(command + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and f"is in use by PID {driver.pid} on " in second.stderr.strip().splitlines()[-1]
    assert driver.poll() is None  # the running search goes on undisturbed
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
    history = read_history(run)  # the driver's record came back with the resume too: epochs before the kill
    assert {trial: sorted(epochs) for trial, epochs in history.items()} == after
    assert file_after, "the resumed search saved no ASHA state of its own"
    for milestone, recorded in rungs_before.items():  # ASHA's rungs came back with the resume
        assert recorded.items() <= rungs_after[milestone].items()
    for trial, iterations in after.items():  # decisions consistent with the rungs
        stop = max(iterations)
        if stop < 6:
            rung = rungs_after[stop]
            assert trial in rung, (trial, stop)  # stopped only at a rung, where its value was recorded
            assert rung[trial] < max(rung.values()), (trial, rung)  # and never as the best of that rung
    assert "best config (final training, " in resumed.stdout


def _one_line_error(result: subprocess.CompletedProcess, *texts: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert all(text in lines[0] for text in texts), (texts, lines[0])


def test_an_interrupted_search_says_so_listens_on_loopback_and_resumes_only_as_itself(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "other.yaml").write_text(SPACE.replace("0.0005", "0.001"))
    command = [sys.executable, str(ROOT / "tune.py"), "--space", "space.yaml", "--dataset", "synthetic",
               "--data-root", str(tmp_path / "data"), "--num-samples", "4", "--max-epochs", "3",
               "--grace-period", "1", "--max-concurrent", "1", "--storage", str(tmp_path / "runs"), "--name", "i"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # the product's own defaults
    run = tmp_path / "runs" / "i"
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not _iterations(run):
        time.sleep(0.5)
    assert _iterations(run), "the search made no progress"
    # A local cluster is the driver's own, and listens on loopback only (Ray's default is every interface).
    listeners = listening_sockets(descendants({driver.pid}))
    assert len({pid for _, _, pid in listeners}) >= 3, listeners  # the driver, the GCS, a raylet, workers
    assert all(ipaddress.ip_address(host).is_loopback for host, _, _ in listeners), listeners

    os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground process group
    out, err = driver.communicate(timeout=180)
    assert driver.returncode == 130, err[-2000:]
    assert "interrupted: resume with --resume" in err and "PARTIAL" in out
    assert not (run / "best_config.yaml").exists()
    trials = set(glob.glob(str(run / "train_dml_*")))

    # --resume with another space is refused, naming what differs
    other = [a if a != "space.yaml" else "other.yaml" for a in command] + ["--resume"]
    _one_line_error(subprocess.run(other, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240),
                    "is another search", "space")
    # A truncated experiment state (a full disk) is refused, never restarted from scratch inside the run
    state = max(run.glob("experiment_state-*.json"), key=lambda p: p.name)
    saved = state.read_bytes()
    state.write_bytes(saved[:len(saved) // 2])
    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=240)
    _one_line_error(resumed, state.name, "damaged Tune experiment state")
    export = subprocess.run([sys.executable, str(ROOT / "tune.py"), "export", str(run), "-o", "best.yaml"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    _one_line_error(export, state.name)
    assert set(glob.glob(str(run / "train_dml_*"))) == trials and not (tmp_path / "best.yaml").exists()

    state.write_bytes(saved)
    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "best_config.yaml").is_file() and "best config (final training, " in resumed.stdout
    assert len(_iterations(run)) == 4
    # the resumed search continued the study in its database: the 4 trials once each, all finished
    study = optuna.load_study(study_name="i", storage=f"sqlite:///{run / 'study.db'}")
    assert sorted(t.user_attrs["tune_trial_id"] for t in study.trials) == sorted(_iterations(run))
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
