"""tune.py's command line without Ray: flags checked before any work, honest errors, safe run folders.

Every bad flag must be a one-line error naming it, exit status 2, before data preparation or Ray
(both replaced here by functions that fail the test if reached); ``export`` and ``report`` read a
run folder's plain files and never execute what it holds.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

import semproxy.prepared
import semproxy.search.runner as runner
from semproxy.errors import SearchError
from semproxy.search.plan import plan_search
from semproxy.config import Config, ConfigError
from semproxy.search.record import SearchRecord
from tune import main as tune_main

ROOT = Path(__file__).parent.parent
SPACE = ROOT / "search_spaces" / "vptsp.yaml"


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Fail the test if data preparation or Ray is reached; returns the storage folder to watch."""
    def reached(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(semproxy.prepared, "prepare_data", reached)
    monkeypatch.setattr(runner, "ray_session", reached)
    return tmp_path / "runs"


def _run(args: list[str], capsys) -> tuple[int, str]:
    """tune.py's exit status and stderr (argparse's usage errors exit through SystemExit)."""
    try:
        code = tune_main(args)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flags,named", [
    (["--num-samples", "0"], "--num-samples"), (["--num-samples", "-1"], "--num-samples"),
    (["--max-epochs", "0"], "--max-epochs"), (["--grace-period", "0"], "--grace-period"),
    (["--reduction-factor", "1"], "--reduction-factor"), (["--reduction-factor", "100000"], "--reduction-factor"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial"), (["--gpus-per-trial", "1.5"], "--gpus-per-trial"),
    (["--gpus-per-trial", "nan"], "--gpus-per-trial"), (["--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["--max-concurrent", "-5"], "--max-concurrent"), (["--max-failures", "-1"], "--max-failures"),
    (["--seed", "-3"], "--seed"), (["--num-samples", "many"], "--num-samples"),
    (["--grace-period", "9"], "--grace-period"), (["--storage", "s3://bucket/runs"], "--storage"),
    (["--name", "../../escape"], "--name"), (["--name", "a/b"], "--name"), (["--name", ".."], "--name"),
    (["--address", "foo"], "--address"), (["--address", "host:99999"], "--address"),
    (["--address", "127.0.0.1:1"], "nothing answers at 127.0.0.1:1"),
])
def test_bad_flags_are_one_line_errors_before_any_work(no_work, tmp_path, capsys, flags, named):
    code, err = _run(["--space", str(SPACE), "--smoke", "--storage", str(no_work), *flags], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and named in err and len(err) < 300, err
    assert not no_work.exists() and not any(tmp_path.glob("s3*"))


@pytest.mark.parametrize("args,hint", [(["exprot", "runs/x", "-o", "best.yaml"], " (did you mean 'export'?)"),
                                       (["reprot", "runs/x"], " (did you mean 'report'?)"), (["runs/x"], "")])
def test_an_unknown_command_is_named_with_the_closest_and_every_command(no_work, capsys, args, hint):
    code, err = _run(args, capsys)
    assert code == 2 and err == (f"error: unknown command '{args[0]}'{hint}; the commands are compare, export, "
                                 f"report, dashboard, or none for a search (see python tune.py --help)\n")


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_a_storage_that_cannot_hold_runs_is_refused_before_any_work(no_work, tmp_path, capsys, kind):
    blocked = tmp_path / "blocked"
    if kind == "file":
        blocked.write_text("not a folder")
        storage, said = blocked / "runs", "blocked is a file, not a folder"
    else:
        blocked.mkdir()
        blocked.chmod(0o500)
        if os.access(blocked, os.W_OK):  # root ignores permission bits: a read-only bind mount needs privileges
            pytest.skip("this user can write a folder whatever its mode")
        storage, said = blocked, "is not writable"
    code, err = _run(["--space", str(SPACE), "--smoke", "--storage", str(storage)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--storage" in err and said in err, err


def test_a_misspelled_space_lists_the_spaces_there_are(no_work, capsys):
    code, err = _run(["--space", str(ROOT / "search_spaces" / "vptp.yaml"), "--smoke"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "did you mean" in err and "vptsp.yaml" in err and "adapter.yaml" in err


def test_invalid_search_values_of_a_space_are_refused_even_with_smoke(no_work, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  lr: {loguniform: [0.001, 0.01]}\nsearch:\n  num_samples: -1\n")
    code, err = _run(["--space", str(space), "--smoke"], capsys)
    assert code == 2 and "search.num_samples" in err and str(space) in err


def _args(tmp_path: Path, space_text: str, *flags: str):
    """Parsed tune.py arguments for a space written from ``space_text``."""
    from tune import search_parser

    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    return search_parser().parse_args(["--space", str(space), "--dataset", "synthetic", "--storage",
                                       str(tmp_path / "runs"), *flags])


def test_a_space_that_fixes_epochs_sets_the_trials_length(tmp_path):
    fixed = "params:\n  epochs: 3\n  lr: {loguniform: [0.001, 0.01]}\n"
    plan = plan_search(_args(tmp_path, fixed))
    assert plan.settings.max_epochs == 3 and plan.base.optim.epochs == 3  # ASHA's max_t is the trial's length
    with pytest.raises(SearchError, match="fixes every trial at 3 epochs but max_epochs is 5"):
        plan_search(_args(tmp_path, fixed, "--max-epochs", "5"))
    assert plan_search(_args(tmp_path, fixed, "--smoke")).settings.max_epochs == 3  # --smoke's 4 yields to the space
    sampled = "params:\n  epochs: {randint: [2, 20]}\n"
    with pytest.raises(SearchError, match="reaches beyond max_epochs 15"):
        plan_search(_args(tmp_path, sampled))


def test_impossible_model_settings_name_the_files_they_come_from(tmp_path):
    plan = plan_search(_args(tmp_path, "params:\n  prompt_depth: 13\n  lr: {loguniform: [0.001, 0.01]}\n"))
    with pytest.raises(ConfigError, match=r"synthetic.yaml with .*space.yaml's fixed values: key 'prompt_depth' is 13"):
        runner._check_model(plan.base, 10, plan.config_source)


def test_flags_override_the_space_which_overrides_the_defaults(tmp_path):
    text = "params:\n  lr: {loguniform: [0.001, 0.01]}\nsearch:\n  num_samples: 7\n  seed: 4\n"
    plan = plan_search(_args(tmp_path, text, "--seed", "9"))
    assert (plan.settings.num_samples, plan.settings.seed, plan.settings.max_epochs) == (7, 9, 15)


@pytest.mark.parametrize("search,flags,said", [
    ("", ["--deterministic", "--max-concurrent", "2"], "--max-concurrent 2 conflicts with --deterministic, "),
    ("search:\n  deterministic: true\n", ["--max-concurrent", "3"],
     "--max-concurrent 3 conflicts with --deterministic (set by space.yaml search.deterministic), "),
])
def test_deterministic_with_more_than_one_trial_at_a_time_is_refused(no_work, tmp_path, capsys, search, flags, said):
    space = tmp_path / "space.yaml"
    space.write_text(f"params:\n  lr: {{loguniform: [0.001, 0.01]}}\n{search}")
    code, err = _run(["--space", str(space), "--smoke", "--storage", str(no_work), *flags], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and said in err, err


def test_deterministic_is_a_setting_of_the_space_and_the_command_line(tmp_path):
    text = "params:\n  lr: {loguniform: [0.001, 0.01]}\nsearch:\n  deterministic: true\n"
    assert plan_search(_args(tmp_path, text, "--max-concurrent", "1")).settings.deterministic is True
    plan = plan_search(_args(tmp_path, text, "--no-deterministic", "--max-concurrent", "4"))
    assert plan.settings.deterministic is False and plan.resources.max_concurrent == 4
    assert plan_search(_args(tmp_path, "params:\n  lr: 0.01\n")).settings.deterministic is False


def _record(**changes) -> SearchRecord:
    values = dict(command="python tune.py", cwd="/", space="s.yaml", space_text="", space_resolved=[{"name": "lr"}],
                  base=Config().to_mapping(), settings={"num_samples": 4, "seed": 0}, starts=[], metric="val_map_at_r",
                  mode="max", backbone={"name": "vit", "sha256": "ab"}, data={"dataset": "cub200", "counts": {}})
    return SearchRecord(**{**values, **changes})


def test_a_resume_refuses_other_image_files_where_both_records_hash_them_relative_to_their_folder():
    data = {"dataset": "cub200", "counts": {"train": {"classes": 2, "images": 4}}}
    saved = _record(data={**data, "files_sha256": "aa" * 32, "paths": "relative"})
    assert saved.differences(_record(data={**data, "files_sha256": "aa" * 32, "paths": "relative"})) == []
    assert saved.differences(_record(data={**data, "files_sha256": "bb" * 32, "paths": "relative"})) == [
        f"the cub200 data (its image files or labels differ: files_sha256 {'a' * 12}... -> {'b' * 12}...)"]
    # a record from before the paths were relative hashed where the data lay: only the counts compare
    assert _record(data={**data, "files_sha256": "cc" * 32}).differences(
        _record(data={**data, "files_sha256": "bb" * 32, "paths": "relative"})) == []


def test_a_resume_may_move_the_run_but_not_change_what_it_searches():
    saved = _record()
    moved = Config().replace({"data_root": "/elsewhere", "cache_dir": "/c", "device": "cpu"}).to_mapping()
    assert saved.differences(_record(base=moved, command="other", cwd="/x")) == []
    changed = saved.differences(_record(space="a.yaml", space_resolved=[{"name": "adapter_dim"}],
                                        base=Config().replace({"lr": 0.1}).to_mapping(),
                                        settings={"num_samples": 8, "seed": 0}, metric="val_recall_at_1"))
    assert changed == ["space s.yaml -> a.yaml", "base config lr 0.005 -> 0.1", "num_samples 4 -> 8",
                       "objective max val_map_at_r -> max val_recall_at_1"]
    # a record from before the setting existed reads as not deterministic
    assert saved.differences(_record(settings={"num_samples": 4, "seed": 0, "deterministic": True})) == [
        "deterministic False -> True"]


class _Exploit:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted_run(folder: Path, marker: Path, state_text: str | None = None) -> Path:
    """A run folder as a search writes it, its pickles replaced by exploits (run folders live on shared disks)."""
    record = _record(base=Config().replace({"dataset": "synthetic"}).to_mapping(),
                     space_resolved=[{"name": "lr", "kind": "loguniform", "args": [0.001, 0.01], "when": {}}])
    record.write(folder)
    trial = folder / "train_dml_1a2b3c4d_1_lr=0.0050_2026-11-23_10-00-00"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"lr": 0.005}))
    (trial / "progress.csv").write_text("val_map_at_r,val_recall_at_1,training_iteration,checkpoint_dir_name\n"
                                        "0.4,0.8,1,checkpoint_000000\n0.5,0.9,2,checkpoint_000001\n")
    exploit = pickle.dumps(_Exploit(marker))
    for name in ("tuner.pkl", "searcher-state-x.pkl", "callback-states-x.pkl", "trial/params.pkl"):
        (folder / name.replace("trial/", trial.name + "/")).write_bytes(exploit)
    trial_json = json.dumps({"trial_id": "1a2b3c4d", "status": "TERMINATED", "relative_logdir": trial.name,
                             "storage": {"_type": "CLOUDPICKLE_FALLBACK", "value": exploit.hex()}})
    (folder / "experiment_state-2026-11-23_10-00-00.json").write_text(
        state_text if state_text is not None else json.dumps({"trial_data": [[trial_json, "{}"]]}))
    return folder


def test_export_and_report_of_a_crafted_run_folder_execute_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = _crafted_run(tmp_path / "run", marker)
    assert tune_main(["export", str(run), "-o", str(tmp_path / "best.yaml")]) == 0
    assert "lr: 0.005" in (tmp_path / "best.yaml").read_text()
    assert tune_main(["report", str(run)]) == 0
    assert (run / "report" / "report.html").is_file()
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Exploit(marker)))  # the exploit is real: unpickling it does run the command
    assert marker.exists()


@pytest.mark.parametrize("state", ['{"trial_data": [["{\\"trial_id\\": \\"1a2', "", "\x00\x01garbage"])
def test_export_and_report_of_a_damaged_experiment_state_are_one_line_errors(tmp_path, capsys, state):
    run = _crafted_run(tmp_path / "run", tmp_path / "pwned", state_text=state)
    for command in (["export", str(run), "-o", str(tmp_path / "best.yaml")], ["report", str(run)]):
        code, err = _run(command, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "experiment_state-2026-11-23_10-00-00.json: damaged Tune experiment state" in err
    assert not (tmp_path / "best.yaml").exists()


def test_a_damaged_state_names_an_older_snapshot_only_when_that_one_reads(tmp_path, capsys):
    run = _crafted_run(tmp_path / "run", tmp_path / "pwned")
    whole = (run / "experiment_state-2026-11-23_10-00-00.json").read_text()
    (run / "experiment_state-2026-11-23_11-00-00.json").write_text(whole[:40])  # the newest, cut short
    code, err = _run(["export", str(run), "-o", str(tmp_path / "best.yaml")], capsys)
    assert code == 2 and "an older snapshot, experiment_state-2026-11-23_10-00-00.json, reads" in err, err
    (run / "experiment_state-2026-11-23_10-00-00.json").write_text(whole[:60])  # damaged too
    code, err = _run(["export", str(run), "-o", str(tmp_path / "best.yaml")], capsys)
    assert code == 2 and "no older snapshot reads" in err and "an older snapshot," not in err, err


def test_epochs_a_restarted_trials_progress_file_lost_come_from_the_drivers_record(tmp_path):
    from semproxy.search.results import HISTORY_FILE, read_trials

    run = _crafted_run(tmp_path / "run", tmp_path / "pwned")
    trial = next(run.glob("train_dml_*"))
    (trial / "checkpoint_000001").mkdir()
    # Tune's restart copied a stale progress.csv (header only) over the trial's, then appended epoch 3.
    (trial / "progress.csv").write_text("val_map_at_r,val_recall_at_1,training_iteration,checkpoint_dir_name\n"
                                        "0.45,0.85,3,checkpoint_000002\n")
    epochs = {"1": {"training_iteration": 1, "val_map_at_r": 0.4, "val_recall_at_1": 0.8,
                    "checkpoint_dir_name": "checkpoint_000000"},
              "2": {"training_iteration": 2, "val_map_at_r": 0.5, "val_recall_at_1": 0.9,
                    "checkpoint_dir_name": "checkpoint_000001"},
              "3": {"training_iteration": 3, "val_map_at_r": 0.1, "val_recall_at_1": 0.2}}  # before the restart
    (run / HISTORY_FILE).write_text(json.dumps({"trials": {"1a2b3c4d": epochs}}))
    [row] = read_trials(run)
    assert row.curve == {1: 0.4, 2: 0.5, 3: 0.45}  # the file's own line is the newer report of epoch 3
    assert (row.epochs, row.best_epoch, row.recall_at_1) == (3, 2, 0.9)
    assert row.checkpoint == str(trial / "checkpoint_000001")
    (run / HISTORY_FILE).unlink()
    assert read_trials(run)[0].curve == {3: 0.45}  # what the progress file alone says


@pytest.mark.parametrize("history", ['{"trials": {"1a2b3c4d": {"x": {}}}}', '{"trials": [1]}', "\x00garbage"])
def test_export_of_a_damaged_trial_history_is_a_one_line_error(tmp_path, capsys, history):
    from semproxy.search.results import HISTORY_FILE

    run = _crafted_run(tmp_path / "run", tmp_path / "pwned")
    (run / HISTORY_FILE).write_text(history)
    code, err = _run(["export", str(run), "-o", str(tmp_path / "best.yaml")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{HISTORY_FILE}: damaged trial history" in err and not (tmp_path / "best.yaml").exists()


def test_every_flag_of_every_tune_command_says_its_default():
    from tune import export_parser, report_parser, search_parser

    for parser in (search_parser(), export_parser(), report_parser()):
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:  # positionals, --help and on/off switches
                continue
            assert action.required or "default" in (action.help or ""), (parser.prog, action.option_strings)


def test_the_search_command_imports_no_ray_before_it_starts_one():
    """Ray reads the settings that bind a local cluster to loopback when it is imported."""
    import subprocess
    import sys

    code = "import sys, tune, semproxy.search.runner, semproxy.search.plan; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_searchs_budget_reads_as_english():
    from semproxy.search.settings import SearchSettings

    assert SearchSettings(num_samples=1, max_epochs=1).budget == "1 trial x up to 1 epoch"
    assert SearchSettings(num_samples=6, max_epochs=4).budget == "6 trials x up to 4 epochs"


def test_a_sampled_model_setting_with_no_value_that_builds_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("Ray was started for a space whose every trial would fail")

    monkeypatch.setattr(runner, "ray_session", reached)
    never = "params:\n  method: vpt\n  prompt_depth: {randint: [13, 20]}\n"
    args = _args(tmp_path, never, "--smoke", "--data-root", str(tmp_path / "data"))
    with pytest.raises(SearchError, match=r"no value of prompt_depth \(randint \[13, 20\]\) gives a model.* 12 blocks"):
        runner.run_search(args)
    some = plan_search(_args(tmp_path, "params:\n  method: {choice: [vpt, vptsp_gru]}\n"
                                       "  prompt_depth: {randint: [10, 13]}\n"
                                       "  class_prompt_depth: {choice: [4, 14], when: {method: vptsp_gru}}\n"))
    runner._check_sampled_models(some, num_classes=8)  # values that build exist: the space is the user's choice
