"""The search end to end with real Ray, Optuna, ASHA and TensorBoard files, on CPU."""
from __future__ import annotations

import glob
import os
import re
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from ray.tune.search.optuna import OptunaSearch

from conftest import fill_disk
from semproxy.cli.train import main as final_main
from semproxy.search.ray_compat import optuna_study
from semproxy.search.record import SearchRecord
from semproxy.search.results import best_trial, feasible, read_trials
from tune import main as tune_main

SPACES = Path(__file__).parent.parent / "search_spaces"
#: Splits the two-objective search's trials: linear and 1-prompt vpt fit under it, 16-prompt vpt does not.
CONSTRAINT_BOUND = 15000
SPACE = """params:
  method: vptsp_gru
  lr: {loguniform: [0.0005, 0.02]}
  lr_proxy: {choice: [0.01, 0.1, 0.5]}
  proxy_bias_ratio: {quniform: [0.1, 0.9, 0.1]}
"""


@pytest.fixture(scope="module")
def ray_session():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    # A logical GPU on a CPU-only machine: fractional placement is testable without CUDA. Ray refuses a
    # GPU that CUDA_VISIBLE_DEVICES hides (conftest hides CUDA from the tests): unhidden while Ray starts.
    hidden = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
                 log_to_driver=False)
    finally:
        if hidden is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = hidden
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "small.yaml"
    path.write_text(SPACE)
    return path


def _common(tmp: Path, space: Path, name: str) -> list[str]:
    return ["--space", str(space), "--dataset", "synthetic", "--data-root", str(tmp / "synthetic"),
            "--storage", str(tmp / "runs"), "--name", name, "--seed", "1"]


def _tb_tags(trial_dir: str) -> set[str]:
    from tensorboard.backend.event_processing import event_file_loader

    tags = set()
    for events in glob.glob(os.path.join(trial_dir, "events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(events).Load():
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_search_prunes_records_logs_and_exports(ray_session, space, tmp_path, capsys):
    args = _common(tmp_path, space, "e2e") + ["--num-samples", "6", "--max-epochs", "4", "--grace-period", "1",
                                              "--reduction-factor", "2", "--max-concurrent", "2"]
    assert tune_main(args) == 0
    out = capsys.readouterr().out
    assert "tensorboard --logdir" in out and "best config (final training, " in out
    run = tmp_path / "runs" / "e2e"
    rows = read_trials(run)
    assert len(rows) == 6 and all(r.status == "TERMINATED" for r in rows)
    stopped = [r for r in rows if r.epochs < 4]
    assert stopped, "ASHA stopped no trial"
    # the printed table says which trials ran all their epochs and where the others were stopped
    printed = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] and line.split()[0] in
               {r.trial_id for r in rows}}
    for row in rows:
        expected = f"stopped at epoch {row.epochs} of 4" if row.epochs < 4 else "completed (4 epochs)"
        assert expected in printed[row.trial_id] and "TERMINATED" not in printed[row.trial_id]
        assert printed[row.trial_id].split()[1] == row.label  # the report's name for it
    # Optuna saw those as PRUNED, the others as COMPLETE
    searcher = OptunaSearch()  # the run's searcher as Tune saved it, through the searcher's own restore
    searcher.restore(sorted(glob.glob(str(run / "searcher-state-*.pkl")))[-1])
    study = optuna_study(searcher)
    states = sorted(t.state.name for t in study.trials)
    assert states.count("PRUNED") == len(stopped) and states.count("COMPLETE") == 6 - len(stopped)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    # each knows the epoch it was stopped at
    assert sorted(max(t.intermediate_values) for t in pruned) == sorted(r.epochs for r in stopped)
    # the same study is a database in the run folder: every trial, its Tune id, epochs and where it stopped
    stored = optuna.load_study(study_name="e2e", storage=f"sqlite:///{run / 'study.db'}")
    by_id = {r.trial_id: r for r in rows}
    assert len(stored.trials) == 6 and {t.user_attrs["tune_trial_id"] for t in stored.trials} == set(by_id)
    for trial in stored.trials:
        row = by_id[trial.user_attrs["tune_trial_id"]]
        assert sorted(trial.intermediate_values) == list(range(1, row.epochs + 1))
        assert trial.user_attrs.get("stopped_at_epoch") == (row.epochs if row.epochs < 4 else None)
        assert trial.user_attrs["trainable_params"] > 0 and trial.user_attrs["step_ms"] > 0
    # TensorBoard: validation MAP@R for every trial, hyperparameters for the hparams view
    for row in rows:
        tags = _tb_tags(row.path)
        assert "ray/tune/val_map_at_r" in tags and "_hparams_/session_start_info" in tags
    # the first trial is the base config's point (the published setting, where it lies in the space)
    first = next(r for r in rows if Path(r.path).name.startswith(f"train_dml_{r.trial_id}_1_"))
    assert first.params == {"lr": 0.003, "lr_proxy": 0.1, "proxy_bias_ratio": 0.5}  # experiments/synthetic.yaml
    exported = tmp_path / "best.yaml"
    assert tune_main(["export", str(run), "-o", str(exported)]) == 0
    text = exported.read_text()
    assert text.startswith("# Best trial") and "val_fraction: 0.0" in text and "test_eval: true" in text
    best = rows[0]  # trained for its best validation epoch's count (the synthetic config has no warm-up)
    assert yaml.safe_load(text)["optim"]["epochs"] == best.best_epoch, (best.best_epoch, best.curve)
    assert final_main(["--config", str(exported), "--out", str(tmp_path / "final"), "--no-progress",
                       "--set", "epochs=2"]) == 0
    assert "MAP@R" in capsys.readouterr().out
    # the same command again without --resume refuses instead of overwriting
    assert tune_main(args) == 2
    assert "pass --resume" in capsys.readouterr().err


def _trial_number(row) -> int:
    """A trial's place in the search (Tune's folder ``train_dml_<id>_<number>_...``; ids differ per run)."""
    return int(Path(row.path).name.split("_")[3])


def test_a_deterministic_search_repeats_its_decisions_exactly(ray_session, tmp_path, capsys):
    """The same seeded smoke search twice, one trial at a time (the cluster would fit four): the same
    configurations in the same order, the same trials stopped by ASHA at the same rungs, the same
    metrics per epoch, the same best trial, and Optuna told the same."""
    def search(name: str):
        args = _common(tmp_path, SPACES / "vptsp.yaml", name) + ["--smoke", "--num-samples", "3", "--max-epochs", "2",
                                                                  "--deterministic"]  # ASHA: a rung at epoch 1
        assert tune_main(args) == 0
        assert "3 trials x up to 2 epochs, 1 at a time (deterministic)" in capsys.readouterr().out
        run = tmp_path / "runs" / name
        rows = sorted(read_trials(run), key=_trial_number)
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{run / 'study.db'}")
        assert SearchRecord.read(run).settings["deterministic"] is True
        return ([(r.params, r.status, r.epochs, r.curve) for r in rows], _trial_number(best_trial(rows)),
                [(t.params, t.state.name, t.intermediate_values) for t in study.trials])

    first = search("first")
    trials = first[0]
    assert len(trials) == 3 and all(status == "TERMINATED" for _, status, _, _ in trials)
    assert 0 < sum(epochs < 2 for _, _, epochs, _ in trials) < 3, "ASHA made no decisions to compare"
    again = search("again")
    assert again[0] == trials  # configs in order, epochs reached (where ASHA stopped each), MAP@R per epoch
    assert again[1:] == first[1:]  # the best trial; Optuna's trials, states (PRUNED) and reported values


def test_fractional_gpus_run_four_trials_at_once(ray_session, space, tmp_path, capsys):
    args = _common(tmp_path, space, "gpu") + ["--num-samples", "4", "--max-epochs", "2", "--scheduler", "fifo",
                                              "--gpus-per-trial", "0.25"]
    assert tune_main(args) == 0
    assert "4 at a time" in capsys.readouterr().out
    spans = []
    for row in read_trials(tmp_path / "runs" / "gpu"):
        progress = pd.read_csv(Path(row.path) / "progress.csv")
        spans.append((progress["timestamp"].iloc[0] - progress["time_this_iter_s"].iloc[0],
                      progress["timestamp"].iloc[-1]))
    assert len(spans) == 4
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all four overlapped


def test_the_median_rule_and_random_search_run_a_search(ray_session, space, tmp_path, capsys):
    args = _common(tmp_path, space, "median") + ["--num-samples", "4", "--max-epochs", "3", "--grace-period", "1",
                                                 "--scheduler", "median", "--searcher", "random",
                                                 "--max-concurrent", "2"]
    assert tune_main(args) == 0
    assert "4 trials x up to 3 epochs, 2 at a time, median on val_map_at_r" in capsys.readouterr().out
    rows = read_trials(tmp_path / "runs" / "median")
    assert len(rows) == 4 and all(r.status == "TERMINATED" for r in rows)
    record = SearchRecord.read(tmp_path / "runs" / "median")
    assert (record.settings["scheduler"], record.settings["searcher"]) == ("median", "random")


def test_a_two_objective_search_draws_optunas_pareto_front_and_exports_its_points(ray_session, tmp_path, capsys):
    space = tmp_path / "mo.yaml"
    space.write_text("params:\n  method: {choice: [linear, vpt]}\n"
                     "  num_prompts: {choice: [1, 16], when: {method: vpt}}\n"
                     "  prompt_depth: {choice: [2, 12], when: {method: vpt}}\n  lr: {loguniform: [0.001, 0.02]}\n")
    args = _common(tmp_path, space, "mo") + ["--num-samples", "5", "--max-epochs", "2", "--grace-period", "1",
                                             "--objectives", "map_at_r,trainable_params", "--max-concurrent", "2",
                                             "--constraints", f"trainable_params<={CONSTRAINT_BOUND}"]
    assert tune_main(args) == 0
    run = tmp_path / "runs" / "mo"
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{run / 'study.db'}")
    # The run's files judge each trial's constraint as Optuna did, and the exported best keeps it.
    rows, constraints = read_trials(run), SearchRecord.read(run).constraints
    optuna_feasible = {t.user_attrs["tune_trial_id"]: all(v <= 0 for v in t.constraints.values()) for t in study.trials}
    assert {r.trial_id: feasible(r, constraints) for r in rows} == optuna_feasible
    exported = best_trial(rows, constraints)
    assert exported.final["trainable_params"] <= CONSTRAINT_BOUND
    assert f"trial {exported.trial_id}" in (run / "best_config.yaml").read_text()
    front = {t.number for t in study.best_trials}
    assert front and len(study.directions) == 2
    assert all(t.state.name == "COMPLETE" for t in study.trials if t.number in front)  # stopped trials: PRUNED
    page = (run / "report" / "report.html").read_text()
    drawn = {int(n) for n in re.findall(r"<tr><td>(\d+)</td>", page.split("id='pareto-front'")[1].split("</table>")[0])}
    assert drawn == front
    assert tune_main(["export", str(run), "-o", str(tmp_path / "first.yaml"), "--pareto-index", "0"]) == 0
    assert "Pareto-front point" in (tmp_path / "first.yaml").read_text()
    smallest = min(t.values[1] for t in study.best_trials)
    assert tune_main(["export", str(run), "-o", str(tmp_path / "small.yaml"), "--max-params", str(smallest)]) == 0
    chosen = next(t for t in study.best_trials if t.values[1] == smallest)
    assert f"trial {chosen.user_attrs['tune_trial_id']}" in (tmp_path / "small.yaml").read_text()
    assert tune_main(["export", str(run), "-o", str(tmp_path / "x.yaml"), "--pareto-index", "99"]) == 2


def test_gpu_request_beyond_the_cluster_is_refused(ray_session, space, tmp_path, capsys):
    args = _common(tmp_path, space, "toomuch") + ["--gpus-per-trial", "2"]
    assert tune_main(args) == 2
    assert "--gpus-per-trial 2.0 but the Ray cluster has 1 GPUs" in capsys.readouterr().err


def test_resuming_a_finished_search_reruns_nothing(ray_session, space, tmp_path, capsys):
    args = _common(tmp_path, space, "again") + ["--num-samples", "3", "--max-epochs", "2", "--grace-period", "1"]
    assert tune_main(args) == 0
    run = tmp_path / "runs" / "again"
    before = {r.trial_id: len(pd.read_csv(Path(r.path) / "progress.csv")) for r in read_trials(run)}
    assert tune_main(args + ["--resume"]) == 0
    after = {r.trial_id: len(pd.read_csv(Path(r.path) / "progress.csv")) for r in read_trials(run)}
    assert after == before


def test_a_broken_trial_does_not_take_the_search_down(ray_session, tmp_path, capsys):
    space = tmp_path / "broken.yaml"
    space.write_text("params:\n  method: adapter\n  bitfit: false\n  adapter_layers: {choice: [2, 13]}\n"
                     "  lr: {choice: [0.001, 0.003]}\n"
                     "starts:\n  - {adapter_layers: 13, lr: 0.001}\n  - {adapter_layers: 2, lr: 0.003}\n")
    args = _common(tmp_path, space, "broken") + ["--num-samples", "3", "--max-epochs", "2", "--scheduler", "fifo"]
    assert tune_main(args) == 0
    out = capsys.readouterr().out
    rows = read_trials(tmp_path / "runs" / "broken")
    errored = [r for r in rows if r.status == "ERROR"]
    assert len(errored) >= 1 and all(r.params["adapter_layers"] == 13 for r in errored)
    assert "'adapter_layers' is 13 but backbone 'vit_micro_patch8_32.synthetic' has 12 blocks" in errored[0].error
    assert any(r.status == "TERMINATED" and r.epochs == 2 for r in rows)
    assert "errors:" in out and errored[0].trial_id in out.split("errors:")[1]


def test_a_filling_disk_under_storage_stops_the_search_resumably(ray_session, space, tmp_path, small_disk, capsys):
    import threading

    from semproxy.search.results import read_experiment_state

    disk = small_disk(48 * 1024)
    args = _common(tmp_path, space, "full") + ["--storage", str(disk), "--num-samples", "3", "--max-epochs", "3",
                                               "--scheduler", "fifo", "--max-concurrent", "1"]
    run = disk / "full"

    def fill_when_a_trial_has_reported() -> None:  # another program takes the space: 4 MB stay free
        deadline = time.time() + 120
        while time.time() < deadline and not glob.glob(str(run / "train_dml_*" / "progress.csv")):
            time.sleep(0.2)
        fill_disk(disk, leave=4 << 20)

    filler = threading.Thread(target=fill_when_a_trial_has_reported)
    filler.start()
    code = tune_main(args)
    filler.join()
    err = capsys.readouterr().err
    assert code == 1, err
    assert "MB free under --storage" in err and "free some space, then resume" in err and "Traceback" not in err
    assert read_experiment_state(run).path is not None  # whole, not cut short
    rows = read_trials(run)
    assert any(r.status in ("RUNNING", "PENDING") for r in rows) and not (run / "best_config.yaml").exists()
    (disk / "filler").unlink()
    assert tune_main(args + ["--resume"]) == 0
    rows = read_trials(run)
    assert len(rows) == 3 and all(r.status == "TERMINATED" and r.epochs == 3 for r in rows)


def _crash_once_at_epoch_two(params, *, base, data, marker):
    """train_dml whose first attempt dies right after reporting epoch 2 (a stand-in for a lost worker)."""
    import semproxy.search.trainable as dml

    original = dml.fit

    def fit_with_crash(*args, callbacks=(), **kwargs):
        def crash(result, trainer):
            if result.epoch == 2 and not os.path.exists(marker):
                Path(marker).touch()
                raise RuntimeError("injected crash after epoch 2")
        return original(*args, callbacks=[*callbacks, crash], **kwargs)

    dml.fit = fit_with_crash
    try:
        dml.train_dml(params, base=base, data=data)
    finally:
        dml.fit = original


def test_a_crashed_trial_restarts_from_its_checkpoint_and_ends_as_if_uninterrupted(ray_session, tmp_path):
    import sys

    import ray.cloudpickle
    from ray import tune

    from semproxy.config import Config
    from semproxy.prepared import prepare_data
    from semproxy.search.history import TrialHistoryCallback
    from semproxy.search.results import read_trials
    from trainables import train_dml

    base = Config.load(Path(__file__).parent.parent / "experiments" / "synthetic.yaml").replace(
        {"data_root": str(tmp_path / "data"), "epochs": 4, "eval_every": 1})
    data = prepare_data(base)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module

    def run(trainable, name, **extra):
        tuner = tune.Tuner(
            tune.with_parameters(trainable, base=base.to_mapping(), data=data, **extra),
            param_space={"lr": 0.004},
            run_config=tune.RunConfig(name=name, storage_path=str(tmp_path / "runs"), callbacks=[TrialHistoryCallback()],
                                      failure_config=tune.FailureConfig(max_failures=1)))
        return tuner.fit()[0]

    crashed = run(_crash_once_at_epoch_two, "flaky", marker=str(tmp_path / "crashed"))
    straight = run(train_dml, "straight")
    assert (tmp_path / "crashed").exists() and crashed.error is None
    for key in ("val_map_at_r", "val_recall_at_1", "loss"):
        assert crashed.metrics[key] == straight.metrics[key], key  # bit-identical resume on CPU
    [restarted], [uninterrupted] = read_trials(tmp_path / "runs" / "flaky"), read_trials(tmp_path / "runs" / "straight")
    # Every epoch once, though Tune's restart may have replaced progress.csv by an older copy.
    assert list(restarted.curve) == [1, 2, 3, 4] and restarted.curve == uninterrupted.curve
