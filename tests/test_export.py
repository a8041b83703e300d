"""A trial's score is its best epoch's validation MAP@R everywhere: the searcher tells Optuna that value,
the trials table ranks and judges constraints by it, and ``export`` trains that many epochs on the
trial's own learning-rate schedule (``--all-epochs``: all it planned)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from semproxy.config import Config
from semproxy.metric_names import BEST_OBJECTIVE, OBJECTIVE
from semproxy.optim import group_schedule
from semproxy.search.export import best_epoch_schedule
from semproxy.search.objectives import parse_constraints
from semproxy.search.ray_compat import optuna_study
from semproxy.search.record import SearchRecord
from semproxy.search.results import feasible, read_trials
from semproxy.search.searcher import PruningAwareOptunaSearch, make_sampler
from tune import main as tune_main


def _rates(config: Config, epochs: int) -> list[float]:
    factor = group_schedule(config.optim.lr, config.optim)
    return [config.optim.lr * factor(epoch) for epoch in range(epochs)]


@pytest.mark.parametrize("changes", [{"epochs": 10}, {"epochs": 10, "warmup_epochs": 2},
                                     {"epochs": 10, "cosine_epochs": 30, "lr_min": 1e-4}])
def test_the_best_epochs_config_trains_each_of_its_epochs_at_the_trials_rates(changes):
    trial = Config().replace(changes)
    exported, note = best_epoch_schedule(trial, 6)
    assert exported.optim.epochs == 6 and "best validation epoch of its 10" in note
    assert _rates(exported, 6) == pytest.approx(_rates(trial, 6), rel=1e-12)
    if trial.optim.cosine_epochs is None:  # a cosine over the rest of 6 epochs would decay faster
        assert _rates(trial.replace({"epochs": 6}), 6) != pytest.approx(_rates(trial, 6), rel=1e-6)


@pytest.mark.parametrize("best,why", [(10, "is its last"), (2, "warm-up")])
def test_a_best_epoch_that_is_the_last_or_in_the_warm_up_keeps_the_planned_epochs(best, why):
    trial = Config().replace({"epochs": 10, "warmup_epochs": 2})
    exported, note = best_epoch_schedule(trial, best)
    assert exported == trial and why in note


def _run(folder: Path, curve: list[float], epochs: int) -> Path:
    """A run folder as a search writes it: one finished trial with validation MAP@R ``curve``."""
    base = Config().replace({"dataset": "synthetic", "epochs": epochs, "warmup_epochs": 1})
    SearchRecord(command="python tune.py", cwd="/", space="s.yaml", space_text="",
                 space_resolved=[{"name": "lr", "kind": "loguniform", "args": [0.001, 0.01], "when": {}}],
                 base=base.to_mapping(), settings={"num_samples": 1, "seed": 0, "max_epochs": epochs}, starts=[],
                 metric=OBJECTIVE, mode="max", backbone={"name": "vit", "sha256": "ab"},
                 data={"dataset": "synthetic", "counts": {}}).write(folder)
    trial = folder / "train_dml_1a2b3c4d_1_lr=0.0050_2026-11-23_10-00-00"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"lr": 0.005}))
    lines = [f"{value},{epoch},{epochs * 1000}" for epoch, value in enumerate(curve, 1)]
    (trial / "progress.csv").write_text(f"{OBJECTIVE},training_iteration,trainable_params\n" + "\n".join(lines) + "\n")
    trial_json = json.dumps({"trial_id": "1a2b3c4d", "status": "TERMINATED", "relative_logdir": trial.name})
    (folder / "experiment_state-2026-11-23_10-00-00.json").write_text(json.dumps({"trial_data": [[trial_json, "{}"]]}))
    return folder


def test_export_trains_the_best_validation_epochs_unless_told_all(tmp_path, capsys):
    run = _run(tmp_path / "run", [0.30, 0.52, 0.61, 0.58, 0.55], epochs=5)
    assert tune_main(["export", str(run), "-o", str(tmp_path / "best.yaml")]) == 0
    assert "at epoch 3; trains 3 epochs" in capsys.readouterr().out
    text = (tmp_path / "best.yaml").read_text()
    exported = yaml.safe_load(text)
    assert exported["optim"]["epochs"] == 3 and exported["optim"]["cosine_epochs"] == 4  # 5 - 1 warm-up epoch
    assert "# trains 3 epochs, the trial's best validation epoch of its 5" in text
    assert tune_main(["export", str(run), "-o", str(tmp_path / "all.yaml"), "--all-epochs"]) == 0
    everything = yaml.safe_load((tmp_path / "all.yaml").read_text())
    assert everything["optim"]["epochs"] == 5 and everything["optim"]["cosine_epochs"] is None


def test_a_trials_row_is_judged_on_its_best_epoch_as_the_searcher_judged_it(tmp_path):
    row, = read_trials(_run(tmp_path / "run", [0.30, 0.61, 0.40], epochs=3))
    assert row.best_epoch == 2 and row.final[OBJECTIVE] == 0.61 and row.final["trainable_params"] == 3000
    assert feasible(row, parse_constraints(["map_at_r>=0.6"]))  # its last epoch (0.40) would not keep it
    assert not feasible(row, parse_constraints(["map_at_r>=0.7"]))


def _space(trial) -> None:
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)


def _searcher(constraint: str) -> PruningAwareOptunaSearch:
    searcher = PruningAwareOptunaSearch(_space,
                                        metric=OBJECTIVE, mode="max", sampler=make_sampler(0), max_t=3,
                                        constraints=parse_constraints([constraint]))
    searcher.set_search_properties(None, None, {})
    return searcher


def test_optuna_is_told_a_completed_trials_best_epoch_and_keeps_each_epochs_own_value():
    searcher = _searcher("map_at_r>=0.6")
    searcher.suggest("t")
    best = 0.0
    for epoch, value in enumerate([0.30, 0.61, 0.40], 1):
        best = max(best, value)
        result = {OBJECTIVE: value, BEST_OBJECTIVE: best, "training_iteration": epoch, "config": {}}
        if epoch < 3:
            searcher.on_trial_result("t", result)
    searcher.on_trial_complete("t", result)
    trial, = optuna_study(searcher).trials
    assert trial.state.name == "COMPLETE" and trial.value == 0.61
    assert trial.intermediate_values == {1: 0.30, 2: 0.61, 3: 0.40}
    assert trial.constraints == {"val_map_at_r>=0.6": pytest.approx(0.6 - 0.61)}  # kept, judged on the best


def test_export_refuses_a_folder_or_a_file_it_did_not_write_and_says_why_it_cannot_write(tmp_path, capsys):
    run = _run(tmp_path / "run", [0.30, 0.52], epochs=2)
    readme = tmp_path / "README.md"
    readme.write_text("# my notes\n")
    blocked = tmp_path / "file"
    blocked.write_text("")
    for target, expected in [(tmp_path, "is a folder; give the YAML file to write"),
                             (readme, "exists and is not a config exported from a search; not overwritten"),
                             (blocked / "x.yaml", "cannot write the exported config")]:
        assert tune_main(["export", str(run), "-o", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1, err
    assert readme.read_text() == "# my notes\n"
    # an earlier export is replaced
    assert tune_main(["export", str(run), "-o", str(tmp_path / "best.yaml")]) == 0
    assert tune_main(["export", str(run), "-o", str(tmp_path / "best.yaml"), "--all-epochs"]) == 0
    assert "--all-epochs" in (tmp_path / "best.yaml").read_text()
