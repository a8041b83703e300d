"""One process at a time in a run folder (semproxy.run_lock): a second search, comparison or final
training there is refused with a one-line error naming the holder, before Ray starts or anything is
written; a killed holder never blocks the resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

import semproxy.search.runner as runner
from semproxy.cli.train import main as train_main
from semproxy.errors import RunInUseError, SearchError
from semproxy.run_lock import LOCK_FILE, run_lock
from tune import main as tune_main

ROOT = Path(__file__).resolve().parent.parent
HOLD = ("import sys, time\nfrom pathlib import Path\nfrom semproxy.run_lock import run_lock\n"
        "with run_lock(Path(sys.argv[1]), 'search'):\n    print('held', flush=True)\n    time.sleep(300)\n")


@contextmanager
def held(folder: Path) -> Iterator[subprocess.Popen]:
    """Another process holding ``folder``'s lock for the block."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait()


def _one_line_error(code: int, err: str, *texts: str) -> None:
    """Exit status 2 and one ``error:`` line (after any progress bars of the preflight), no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert all(text in errors[0] for text in texts), (texts, errors[0])


def test_a_held_folder_is_refused_naming_its_holder_and_free_once_the_holder_is_killed(tmp_path):
    folder = tmp_path / "run"
    with held(folder) as child:
        with pytest.raises(RunInUseError, match=rf"{folder} is in use by PID {child.pid} on \S+: one search at a"):
            with run_lock(folder, "search"):
                pass
        os.kill(child.pid, signal.SIGKILL)  # the kernel releases a lock however its holder ends
        child.wait()
        with run_lock(folder, "search"):
            assert (folder / LOCK_FILE).read_text().startswith(f"PID {os.getpid()} on ")


def test_a_second_search_in_a_held_run_is_refused_before_ray_and_writes_nothing(tmp_path, capsys, monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("Ray was started for a run another process holds")

    monkeypatch.setattr(runner, "ray_session", reached)
    run = tmp_path / "runs" / "busy"
    args = ["--space", str(ROOT / "search_spaces" / "linear.yaml"), "--smoke", "--data-root", str(tmp_path / "data"),
            "--storage", str(tmp_path / "runs"), "--name", "busy"]
    with held(run) as child:
        _one_line_error(tune_main(args), capsys.readouterr().err, f"is in use by PID {child.pid}")
        _one_line_error(tune_main(args + ["--resume"]), capsys.readouterr().err, f"is in use by PID {child.pid}")
    assert [path.name for path in run.iterdir()] == [LOCK_FILE]
    _one_line_error(tune_main(args + ["--resume"]), capsys.readouterr().err, "not a semproxy search run")
    assert not any(run.iterdir())  # the killed holder's lock file is gone with the refused resume

    def refuse(*args):
        raise SearchError("refused by the preflight")

    monkeypatch.setattr(runner, "preflight", refuse)  # a run refused under the lock leaves no folder behind
    elsewhere = [*args[:-4], "--storage", str(tmp_path / "new" / "runs"), "--name", "fresh"]
    _one_line_error(tune_main(elsewhere), capsys.readouterr().err, "refused by the preflight")
    assert not (tmp_path / "new").exists()


def test_a_second_final_training_into_a_held_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "final"
    args = ["--config", str(ROOT / "experiments" / "synthetic.yaml"), "--out", str(out), "--no-progress",
            "--set", f"data_root={tmp_path / 'data'}"]
    with held(out) as child:
        _one_line_error(train_main(args), capsys.readouterr().err, f"is in use by PID {child.pid}")
    assert [path.name for path in out.iterdir()] == [LOCK_FILE]


def test_a_folder_that_cannot_be_made_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("in the way")
    args = ["--config", str(ROOT / "experiments" / "synthetic.yaml"), "--out", str(tmp_path / "file" / "final"),
            "--no-progress", "--set", f"data_root={tmp_path / 'data'}"]
    _one_line_error(train_main(args), capsys.readouterr().err, "file/final: cannot make the run folder")


def test_a_folder_removed_by_a_releasing_holder_just_before_the_lock_is_made_again(tmp_path, monkeypatch):
    import semproxy.run_lock as module

    folder, calls = tmp_path / "runs" / "race", []

    def open_after_the_holder_left(path, *args, **kwargs):
        if not calls:  # the other process released its lock and removed the folder it had made
            Path(path).parent.rmdir()
        calls.append(path)
        return open(path, *args, **kwargs)

    monkeypatch.setattr(module, "open", open_after_the_holder_left, raising=False)
    with run_lock(folder, "search"):
        assert (folder / LOCK_FILE).is_file() and len(calls) == 2
