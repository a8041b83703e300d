"""The study as a database: warm starts from it, the dashboard over HTTP, and bad storage input (no Ray)."""
from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

import semproxy.prepared
import semproxy.search.runner as runner
from semproxy.config import Config
from semproxy.errors import SearchError
from semproxy.search.dashboard import make_dashboard_server
from semproxy.search.record import SearchRecord
from semproxy.search.settings import SearchSettings
from semproxy.search.space import load_space
from semproxy.search.warm_start import warm_start
from tune import main as tune_main

ROOT = Path(__file__).parent.parent


def _earlier_run(folder: Path, trials: list[tuple[dict, float]]) -> Path:
    """A run folder whose record points at a SQLite study holding ``trials`` (params, MAP@R)."""
    url = f"sqlite:///{folder / 'study.db'}"
    folder.mkdir(parents=True)
    SearchRecord(command="python tune.py", cwd="/", space="s.yaml", space_text="", space_resolved=[],
                 base=Config().to_mapping(), settings={}, starts=[], metric="val_map_at_r", mode="max",
                 backbone={"name": "vit", "sha256": "ab"}, data={"dataset": "cub200", "counts": {}},
                 study={"storage": url, "name": "earlier"}).write(folder)
    study = optuna.create_study(storage=url, study_name="earlier", direction="maximize")
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True),
                     "optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adam", "adamw"])}
    for params, value in trials:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    return folder


def test_a_warm_start_enqueues_the_best_configurations_the_new_space_can_represent(tmp_path):
    earlier = _earlier_run(tmp_path / "earlier", [({"lr": 0.1, "optimizer": "sgd"}, 0.9),
                                                  ({"lr": 0.5, "optimizer": "adam"}, 0.8),  # lr outside
                                                  ({"lr": 0.01, "optimizer": "adamw"}, 0.7),
                                                  ({"lr": 0.05, "optimizer": "sgd"}, 0.1)])  # not in the top 3
    (tmp_path / "new.yaml").write_text("params:\n  method: vpt\n  lr: {loguniform: [0.001, 0.2]}\n"
                                       "  optimizer: {choice: [sgd, adamw]}\n")
    warm = warm_start(str(earlier), 3, load_space(tmp_path / "new.yaml"), Config())
    assert warm.points == [{"lr": 0.1, "optimizer": "sgd"}, {"lr": 0.01, "optimizer": "adamw"}]
    assert len(warm.dropped) == 1 and warm.dropped[0].startswith("trial 1 (lr 0.5 is not in loguniform")
    url = f"sqlite:///{earlier / 'study.db'}"
    assert warm_start(url, 1, load_space(tmp_path / "new.yaml"), Config()).points == warm.points[:1]


@pytest.mark.parametrize("flags,message", [
    (["--optuna-storage", "mysql://someone@127.0.0.1:1/db"], "--optuna-storage mysql://someone@127.0.0.1:1/db: "),
    (["--objectives", "map_at_r,speed"], "--objectives: unknown objective 'speed'"),
    (["--objectives", "trainable_params"], "--objectives: give map_at_r first"),
    (["--constraints", "trainable_params<one"], "--constraints 'trainable_params<one': expected NAME<=NUMBER"),
    (["--warm-start", "no/such/run"], "--warm-start no/such/run: neither a semproxy run folder"),
    (["--warm-start", "sqlite:///nowhere.db", "--warm-top", "0"], "--warm-top must be at least 1"),
])
def test_bad_study_input_is_a_one_line_error_before_any_work(tmp_path, monkeypatch, capsys, flags, message):
    def reached(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(semproxy.prepared, "prepare_data", reached)
    monkeypatch.setattr(runner, "ray_session", reached)
    monkeypatch.chdir(tmp_path)
    code = tune_main(["--space", str(ROOT / "search_spaces" / "vptsp.yaml"), "--smoke", "--storage",
                      str(tmp_path / "runs"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "runs").exists()


def test_the_dashboard_serves_a_runs_study_over_http_on_loopback(tmp_path):
    run = _earlier_run(tmp_path / "run", [({"lr": 0.1, "optimizer": "sgd"}, 0.9), ({"lr": 0.2, "optimizer": "adam"},
                                                                                    0.5)])
    server = make_dashboard_server(run, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.server_address[0] == "127.0.0.1"
        base = f"http://127.0.0.1:{server.server_port}"
        studies = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=30).read())["study_summaries"]
        assert [s["study_name"] for s in studies] == ["earlier"]
        study = json.loads(urllib.request.urlopen(f"{base}/api/studies/{studies[0]['study_id']}", timeout=30).read())
        assert sorted(t["values"][0] for t in study["trials"]) == [0.5, 0.9]
    finally:
        server.shutdown()
        server.server_close()


def test_the_dashboard_of_a_folder_without_a_study_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert tune_main(["dashboard", str(tmp_path / "run"), "--port", "0"]) == 2
    assert "not a semproxy search run" in capsys.readouterr().err
    with pytest.raises(SearchError, match="no study named 'earlier'"):
        run = _earlier_run(tmp_path / "other", [])
        optuna.delete_study(study_name="earlier", storage=f"sqlite:///{run / 'study.db'}")
        make_dashboard_server(run, port=0)


def _constrained_run(folder: Path, constraints: str) -> Path:
    """A finished run of two trials: the better one (MAP@R 0.71) has 16,768 trainable parameters, the
    other (0.65) 13,952; ``constraints`` as the search was given them."""
    folder.mkdir(parents=True)
    SearchRecord(command="python tune.py", cwd="/", space="s.yaml", space_text="", space_resolved=[],
                 base=Config().to_mapping(), settings={"num_samples": 2, "max_epochs": 2, "constraints": constraints},
                 starts=[], metric="val_map_at_r", mode="max", backbone={"name": "vit", "sha256": "ab"},
                 data={"dataset": "cub200", "counts": {}}).write(folder)
    trial_data = []
    for number, (trial, lr, best, params) in enumerate([("aaaaaaaa", 0.001, 0.71, 16768),
                                                        ("bbbbbbbb", 0.003, 0.65, 13952)], 1):
        name = f"train_dml_{trial}_{number}_lr={lr}_2026-11-23_10-00-00"
        (folder / name).mkdir()
        (folder / name / "params.json").write_text(json.dumps({"lr": lr}))
        (folder / name / "progress.csv").write_text(
            "val_map_at_r,val_recall_at_1,trainable_params,training_iteration\n"
            f"{best},0.8,{params},1\n{best - 0.01},0.8,{params},2\n")
        trial_data.append([json.dumps({"trial_id": trial, "status": "TERMINATED", "relative_logdir": name}), "{}"])
    (folder / "experiment_state-2026-11-23_10-00-00.json").write_text(json.dumps({"trial_data": trial_data}))
    return folder


def test_the_best_trial_exported_and_reported_keeps_the_runs_constraints(tmp_path, capsys):
    free = _constrained_run(tmp_path / "free", "")
    bound = _constrained_run(tmp_path / "bound", "trainable_params<=15000")
    assert tune_main(["export", str(free), "-o", str(tmp_path / "free.yaml")]) == 0
    assert "lr: 0.001" in (tmp_path / "free.yaml").read_text()
    assert tune_main(["export", str(bound), "-o", str(tmp_path / "bound.yaml")]) == 0
    exported = (tmp_path / "bound.yaml").read_text()
    assert "lr: 0.003" in exported and "Best trial within trainable_params<=15000: trial bbbbbbbb" in exported
    assert "wrote" in capsys.readouterr().out
    out = tmp_path / "report"
    assert tune_main(["report", str(bound), "-o", str(out)]) == 0
    assert "<h2>Best trial: #2</h2>" in (out / "report.html").read_text()
    none_fit = _constrained_run(tmp_path / "tight", "trainable_params<=1000")
    assert tune_main(["export", str(none_fit), "-o", str(tmp_path / "tight.yaml")]) == 2
    assert "within trainable_params<=1000" in capsys.readouterr().err
    # The search's own summary says so, still writes the report, and exports nothing.
    plan = SimpleNamespace(run_dir=none_fit, settings=SearchSettings(num_samples=2, max_epochs=2,
                                                                    constraints="trainable_params<=1000"))
    assert runner.summarise(plan, concurrent=1) == 1
    out = capsys.readouterr().out
    assert "0 of 2 trials finished within them" in out and "nothing exported" in out
    assert "without failing within trainable_params&lt;=1000 yet" in (none_fit / "report" / "report.html").read_text()
    assert not (none_fit / "best_config.yaml").exists()
