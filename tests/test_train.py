"""fit(): learning, exact resume, non-finite losses, checkpoints, and the final-training commands."""
from __future__ import annotations

import importlib.util
import json
import math
import shlex
import sys
import types
from pathlib import Path

import pytest
import torch

from semproxy import host_memory
from semproxy.checkpoint import CheckpointError, load_checkpoint
from semproxy.config import Config
from semproxy.evaluation import amp_dtype
from semproxy.cli.evaluate import main as evaluate_main
from semproxy.cli.train import main as final_main
from semproxy.prepared import prepare_data
from semproxy.optim import lr_factor
from semproxy.train import NonFiniteLossError, Trainer, fit

EXPERIMENT = Path(__file__).parent.parent / "experiments" / "synthetic.yaml"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


def small_config(workdir: Path, **values) -> Config:
    """The synthetic experiment, shrunk: 20 classes of 8 images, a few epochs."""
    base = {"data_root": str(workdir / "synthetic"), "cache_dir": str(workdir / "cache"), "synthetic_classes": 20,
            "synthetic_per_class": 8, "batch_size": 16, "epochs": 3, "gru_dropout": 0.2, "adapter_dropout": 0.2}
    return Config.load(EXPERIMENT).replace({**base, **values})


def test_vptsp_gru_learns_on_synthetic_data(workdir):
    cfg = Config.load(EXPERIMENT).replace({"data_root": str(workdir / "demo"), "cache_dir": str(workdir / "cache")})
    data = prepare_data(cfg)
    torch.manual_seed(cfg.optim.seed)  # the model fit() starts from (a Trainer draws from the caller's RNG)
    before = Trainer(cfg, data, torch.device("cpu"), progress=False).validate()["val_map_at_r"]
    result = fit(cfg, data=data, progress=False)
    after = result.history[-1].metrics["val_map_at_r"]
    assert after > before + 0.06, (before, after)   # measured: 0.61 -> 0.69 (bench_demo.py); linear: 0.53 -> 0.69
    assert result.history[-1].loss < result.history[0].loss - 1.0
    loader = data.train_loader(cfg, torch.device("cpu"))
    for epoch in result.history:  # where each epoch's time went
        assert epoch.images == len(loader) * cfg.data.batch_size
        assert 0 < epoch.data_wait < epoch.seconds
        assert (epoch.val_seconds > 0) == bool(epoch.metrics)


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method,optimizer", [("vptsp_gru", "adamw"), ("adapter", "sgd")])
def test_resume_from_epoch_k_equals_never_stopping(workdir, method, optimizer):
    cfg = small_config(workdir, method=method, optimizer=optimizer, lr=0.01, adapter_layers=2, warmup_epochs=1)
    data = prepare_data(cfg)
    straight = fit(cfg, data=data, progress=False)

    saved = {}

    def save_at_two(result, trainer):
        if result.epoch == 2:
            saved["dir"] = trainer.save(workdir / f"ckpt-{method}")

    fit(cfg.replace({"epochs": 3}), data=data, progress=False, callbacks=[save_at_two])
    torch.manual_seed(12345)  # resuming must not depend on the process's RNG state
    resumed = fit(cfg, data=data, progress=False, resume_from=saved["dir"])
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert [h.metrics for h in resumed.history] == [h.metrics for h in straight.history]
    assert [h.loss for h in resumed.history] == [h.loss for h in straight.history]
    a, b = _params(straight.model), _params(resumed.model)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_the_mixed_precision_path_resumes_exactly(workdir, monkeypatch):
    """A GPU's amp path, run on the CPU's bf16 autocast: the Trainer lowers the frozen weights, steps and
    validates under autocast, and resumes from a checkpoint (checked against the weights as loaded)
    to the same run as never stopping."""
    import semproxy.evaluation

    def cpu_bf16(device, enabled):
        return torch.bfloat16 if enabled else None

    monkeypatch.setattr(semproxy.evaluation, "amp_dtype", cpu_bf16)
    cfg = small_config(workdir, method="vptsp_gru", optimizer="adamw", epochs=2)
    data = prepare_data(cfg)
    def save_first(result, trainer):
        if result.epoch == 1:
            trainer.save(workdir / "amp")

    straight = fit(cfg, data=data, progress=False, callbacks=[save_first])
    assert straight.model.backbone.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in straight.model.parameters() if p.requires_grad)
    assert all(math.isfinite(h.metrics["val_map_at_r"]) for h in straight.history)
    torch.manual_seed(12345)  # resuming must not depend on the process's RNG state
    resumed = fit(cfg, data=data, progress=False, resume_from=workdir / "amp")
    assert [h.metrics for h in resumed.history] == [h.metrics for h in straight.history]
    assert [h.loss for h in resumed.history] == [h.loss for h in straight.history]
    a, b = _params(straight.model), _params(resumed.model)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_fit_seeds_its_run_and_keeps_freed_host_memory(workdir, monkeypatch):
    """fit() owns what a Trainer leaves alone: the same config trains the same whatever the RNG was."""
    calls = []
    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setattr(host_memory, "_set_thresholds", lambda: calls.append("mallopt") or True)
    cfg = small_config(workdir, epochs=1, seed=3)
    data = prepare_data(cfg)
    losses = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        losses.append([h.loss for h in fit(cfg, data=data, progress=False).history])
    assert losses[0] == losses[1] and calls == ["mallopt"]  # set once per process


def test_checkpoint_holds_only_what_is_trained(workdir):
    cfg = small_config(workdir, epochs=1)
    result = {}
    fit(cfg, progress=False, callbacks=[lambda r, t: result.setdefault("path", t.save(workdir / "small"))])
    payload = load_checkpoint(result["path"])
    backbone_keys = [k for k in payload["trained"] if k.startswith("backbone.")]
    assert backbone_keys and all(k.endswith("bias") for k in backbone_keys)  # BitFit: biases, no weights
    assert "semantic.state" in payload["trained"] and "semantic.bank.table_0" in payload["trained"]
    assert payload["backbone"]["name"] == "vit_micro_patch8_32.synthetic" and len(payload["backbone"]["sha256"]) == 64
    assert Config.from_mapping(payload["config"]) == cfg
    assert not list((workdir / "small").glob(".checkpoint.*"))  # written atomically


def test_checkpoint_of_another_config_or_backbone_is_refused(workdir):
    cfg = small_config(workdir, epochs=1)
    saved = {}
    fit(cfg, progress=False, callbacks=[lambda r, t: saved.setdefault("p", t.save(workdir / "refuse"))])
    with pytest.raises(CheckpointError, match=r"made with another config \(num_prompts=5, now 2\)"):
        fit(cfg.replace({"num_prompts": 2}), progress=False, resume_from=saved["p"])
    with pytest.raises(CheckpointError, match="made for backbone 'vit_micro_patch8_32.synthetic', not 'vit_micro_patch8_32'"):
        fit(cfg.replace({"backbone": "vit_micro_patch8_32", "pretrained": False}), progress=False,
            resume_from=saved["p"])
    payload = load_checkpoint(saved["p"])
    payload["backbone"]["sha256"] = "0" * 64
    with pytest.raises(CheckpointError, match="backbone weights differ"):
        fit(cfg, progress=False, resume_from=payload)
    (workdir / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt is not a semproxy checkpoint \\(torch cannot read it: "):
        load_checkpoint(workdir / "junk.pt")


def test_non_finite_loss_names_epoch_and_step(workdir):
    cfg = small_config(workdir, optimizer="sgd", lr=1e38, momentum=0.0, epochs=1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 1, step \d+"):
        fit(cfg, progress=False)


def test_cosine_schedule_with_warmup():
    assert [lr_factor(e, 5, 0) for e in (0, 5)] == [1.0, 0.0]
    assert lr_factor(2, 4, 0) == pytest.approx(0.5)
    assert [lr_factor(e, 6, 2) for e in (0, 1, 2)] == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]
    assert lr_factor(4, 6, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


@pytest.mark.parametrize("optimizer, cosine_epochs, lr_min", [("sgd", 50, 1e-8), ("adamw", None, 1e-6),
                                                           ("sgd", 4, 2e-3)])
def test_each_groups_rate_follows_torchs_cosine_annealing(optimizer, cosine_epochs, lr_min):
    """The paper code's schedule: CosineAnnealingLR(T_max=lr_cosine_length, eta_min=lr_cosine_min) stepped
    per epoch, for the dense groups (lr, lr_proxy) and the class-prompt rows alike, past its length too."""
    from conftest import NUM_CLASSES, micro_config
    from semproxy.config import OptimConfig
    from semproxy.models import build_model
    from semproxy.optim import build_optimizers

    cfg = OptimConfig(optimizer=optimizer, lr=5e-3, lr_proxy=0.1, epochs=15, cosine_epochs=cosine_epochs,
                      lr_min=lr_min)
    optimizers = build_optimizers(build_model(micro_config(method="vptsp_gru"), NUM_CLASSES), cfg)
    assert optimizers.bank is not None
    reference = torch.optim.SGD([{"params": [torch.zeros(1)], "lr": cfg.lr},
                                 {"params": [torch.zeros(1)], "lr": cfg.lr_proxy}], lr=cfg.lr)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=cosine_epochs or cfg.epochs,
                                                           eta_min=lr_min)
    for epoch in range(cfg.epochs):
        expected = [g["lr"] for g in reference.param_groups]
        assert [g["lr"] for g in optimizers.dense.param_groups] == pytest.approx(expected, rel=1e-9, abs=1e-15)
        assert optimizers.bank.param_groups[0]["lr"] == pytest.approx(expected[0], rel=1e-9, abs=1e-15)
        last = optimizers.dense.param_groups[0]["lr"]
        reference.step()
        annealing.step()
        optimizers.end_epoch()
    if cosine_epochs == 50:  # the paper code's CUB run trains its last epoch at 82% of its rates
        assert last / cfg.lr == pytest.approx(0.5 * (1 + math.cos(math.pi * 14 / 50))) and last / cfg.lr > 0.81


def test_final_training_command_and_evaluate(workdir, capsys):
    out = workdir / "final"
    args = ["--config", str(EXPERIMENT), "--out", str(out), "--no-progress",
            "--set", f"data_root={workdir / 'demo'}", "--set", f"cache_dir={workdir / 'final-cache'}", "--set", "epochs=2"]
    assert final_main(args) == 0
    printed = capsys.readouterr()
    assert "caching" not in printed.err  # --no-progress: not even the image caches' bars
    metrics = json.loads((out / "metrics.json").read_text())
    test = {k: 100 * v for k, v in metrics["test"].items()}  # printed in percent, as metrics.json holds them
    assert (f"test (synthetic, 320 images, %): R@1 {test['test_recall_at_1']:.1f}, R@2 {test['test_recall_at_2']:.1f}"
            in printed.out and f"MAP@R {test['test_map_at_r']:.1f} (paper's variant "
            f"{test['test_map_at_r_paper']:.1f})" in printed.out), printed.out
    assert metrics["config"]["data"]["val_fraction"] == 0.0 and len(metrics["history"]) == 2
    assert metrics["data_path"].startswith("host-crops (")  # the CPU's path, with its reason
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    before = (out / "metrics.json").read_bytes()
    assert final_main(args) == 2  # refuses to overwrite
    assert "pass --resume" in capsys.readouterr().err and (out / "metrics.json").read_bytes() == before
    assert evaluate_main(["--checkpoint", str(out), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(metrics["test"])
    # a learning field is no --set of an evaluation: named as such, not as a checkpoint of another config
    assert evaluate_main(["--checkpoint", str(out), "--no-progress", "--set", "lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set lr: not a field evaluation may change") and "another config" not in err
    assert "may change cache_dir, compile, data_root, device," in err and err.count("\n") == 1


def test_ctrl_c_during_final_training_says_how_to_resume_and_resume_finishes(workdir, capsys, monkeypatch):
    out = workdir / "interrupted"
    args = ["--config", str(EXPERIMENT), "--out", str(out), "--no-progress",
            "--set", f"data_root={workdir / 'demo'}", "--set", f"cache_dir={workdir / 'cache'}", "--set", "epochs=2"]
    train_epoch = Trainer.train_epoch

    def interrupted_in_epoch_two(trainer):
        if trainer.epoch == 1:
            raise KeyboardInterrupt
        return train_epoch(trainer)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_two)
    # as `python -m semproxy.train ARGS` starts it: argv[0] is the module's file, __main__ has its spec
    main_spec = importlib.util.find_spec("semproxy.train.__main__")
    monkeypatch.setattr(sys, "argv", [main_spec.origin, *args])
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=main_spec))
    assert final_main(args) == 130
    err = capsys.readouterr().err
    assert err.strip().endswith(f"interrupted: resume with: python -m semproxy.train {shlex.join(args)} --resume")
    assert "Traceback" not in err
    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    assert final_main(args + ["--resume"]) == 0
    assert [h["epoch"] for h in json.loads((out / "metrics.json").read_text())["history"]] == [1, 2]


def _write_numpy_torch_file(path: Path) -> None:
    import numpy as np

    torch.save({"format": 1, "trained": np.zeros(3)}, path)


@pytest.mark.parametrize("name,content,expected", [
    ("metrics.json", b'{"test": {"test_map_at_r": 0.5}}',
     "metrics.json is not a semproxy checkpoint (torch cannot read it: "),
    ("empty.pt", b"", "empty.pt is not a semproxy checkpoint (the file is empty)"),
    ("cut.pt", "cut", "cut.pt cannot be read: the file is corrupt or cut short (torch: "),
    ("numpy.pt", "numpy", "numpy.pt is not a semproxy checkpoint (it holds more than tensors; torch: "),
])
def test_evaluate_of_a_file_that_is_no_checkpoint_is_one_short_line(tmp_path, capsys, name, content, expected):
    """torch's own message runs to hundreds of characters of weights_only advice: only its first clause is kept."""
    path = tmp_path / name
    if content == "numpy":
        _write_numpy_torch_file(path)
    elif content == "cut":
        _write_numpy_torch_file(path)
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.write_bytes(content)
    assert evaluate_main(["--checkpoint", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint {tmp_path / expected}"), err
    assert err.count("\n") == 1 and len(err.strip()) <= len("error: ") + 280 and "weights_only" not in err, err
    if name == "metrics.json":  # torch's clause, then what to give instead
        assert err.strip().endswith("); give a run folder or its checkpoint.pt") and "Unsupported operand" in err, err


def test_bad_config_file_exits_2_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr_proxi: 0.1\n")
    assert final_main(["--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: unknown key 'optim.lr_proxi' (did you mean 'optim.lr_proxy'?)"
    assert not (tmp_path / "o").exists()
    deep = tmp_path / "deep.yaml"
    deep.write_text("model:\n  backbone: vit_micro_patch8_32\n  pretrained: false\n  prompt_depth: 20\n")
    assert final_main(["--config", str(deep), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {deep}: key 'prompt_depth' is 20 but backbone "
                                               "'vit_micro_patch8_32' has 12 blocks")
    assert not (tmp_path / "o").exists()
    space = Path(__file__).parent.parent / "search_spaces" / "vptsp.yaml"
    assert final_main(["--config", str(space), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().startswith(
        f"error: {space} is a search space (for tune.py --space), not a training config (it has top-level 'extends'")
    assert not (tmp_path / "o").exists()


def test_gradient_clipping_bounds_each_update(workdir):
    cfg = small_config(workdir, optimizer="sgd", lr=1.0, lr_proxy=1.0, momentum=0.0, weight_decay=0.0,
                       grad_clip=1e-3, epochs=1, gru_dropout=0.0, adapter_dropout=0.0)
    data = prepare_data(cfg)
    torch.manual_seed(0)
    trainer = Trainer(cfg, data, torch.device("cpu"), progress=False)
    before = [p.detach().clone() for p in trainer.model.encoder_parameters() + trainer.model.proxy_parameters()]
    trainer.train_epoch()
    after = trainer.model.encoder_parameters() + trainer.model.proxy_parameters()
    moved = torch.sqrt(sum(((a.detach() - b) ** 2).sum() for a, b in zip(after, before)))
    steps = len(trainer.loader)
    assert 0 < moved <= steps * 1e-3 * 1.0001  # each step's whole update is at most lr * clip
    torch.manual_seed(0)  # the same start
    unclipped = Trainer(cfg.replace({"grad_clip": None}), data, torch.device("cpu"), progress=False)
    unclipped.train_epoch()
    free = torch.sqrt(sum(((a.detach() - b) ** 2).sum() for a, b in zip(
        unclipped.model.encoder_parameters() + unclipped.model.proxy_parameters(), before)))
    assert free > 10 * moved


@pytest.mark.gpu
def test_a_vptsp_checkpoint_resumes_on_a_gpu(workdir):
    """The first GPU run crashed here: the row optimiser's per-row step table came back on the CPU."""
    cfg = small_config(workdir, method="vptsp_gru", optimizer="adamw", epochs=2, device="cuda")
    data = prepare_data(cfg)
    def save_first(result, trainer):
        if result.epoch == 1:
            trainer.save(workdir / "gpu-ckpt")

    fit(cfg, data=data, progress=False, callbacks=[save_first])
    trainer = Trainer(cfg, data, torch.device("cuda"), progress=False)
    # amp lowered the frozen weights (semproxy.models.precision); the resume checks the weights as loaded
    qkv = trainer.model.backbone.blocks[0].attn.qkv
    assert qkv.weight.dtype == amp_dtype(trainer.device, True) and not qkv.weight.requires_grad
    trainer.restore(load_checkpoint(workdir / "gpu-ckpt"))
    states = [t for state in trainer.optimizers.bank.state.values() for t in state.values()]
    assert states and all(t.device.type == "cuda" for t in states)
    result = trainer.train_epoch()  # indexed across devices before the fix
    assert result.epoch == 2 and math.isfinite(result.loss)
