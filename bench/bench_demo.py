"""The CPU demo (``experiments/synthetic.yaml``, VPTSP-G on the synthetic benchmark) over seeds, with
the GRU accumulator initialised as semproxy does (torch.nn.GRU's uniform +-1/sqrt(E)) and as the
paper code did (xavier-uniform per gate matrix, zero biases): validation MAP@R before and after
training (deterministic on a CPU, so a loaded machine gives the same table; the demo's wall time is in
RESULTS.md's table of the README's commands). The numbers docs/method.md and the demo's comments cite.

    python bench/bench_demo.py [--seeds 0 1 2] [--out bench/results/demo.md]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _tables import RESULTS, machine, publish

ROOT = Path(__file__).resolve().parent.parent
INITS = ("torch", "paper code")


def paper_code_init(accumulator) -> None:
    """The paper code's GRU init: each gate's E x E matrix xavier-uniform, the biases zero."""
    import torch
    from torch import nn

    with torch.no_grad():
        for weight in (accumulator.input_proj.weight, accumulator.hidden_proj.weight):
            for gate in weight.chunk(3, dim=0):
                nn.init.xavier_uniform_(gate)
        accumulator.input_proj.bias.zero_()


def run(seed: int, init: str, workdir: Path) -> dict:
    import torch

    from semproxy.config import Config
    from semproxy.prepared import prepare_data
    from semproxy.train import Trainer, fit

    config = Config.load(ROOT / "experiments" / "synthetic.yaml").replace(
        {"data_root": str(workdir / "synthetic"), "cache_dir": str(workdir / "cache"), "seed": seed})
    data = prepare_data(config, progress=False)
    torch.manual_seed(seed)
    before = Trainer(config, data, torch.device("cpu"), progress=False).validate()["val_map_at_r"]

    original = Trainer.__init__  # fit() builds its Trainer itself: re-initialise the GRU as it is built

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if init == "paper code":
            paper_code_init(self.model.semantic.accumulator)

    Trainer.__init__ = patched
    try:
        result = fit(config, data=data, progress=False)
    finally:
        Trainer.__init__ = original
    return {"before": before, "after": result.history[-1].metrics["val_map_at_r"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(RESULTS / "demo.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = {(seed, init): run(seed, init, Path(folder)) for seed in args.seeds for init in INITS}
    lines = [f"The CPU demo (experiments/synthetic.yaml, vptsp_gru, 8 epochs) per seed and GRU init; "
             f"validation MAP@R; {machine()}. Command: python bench/bench_demo.py --seeds "
             f"{' '.join(map(str, args.seeds))}", "",
             "| seed | GRU init | MAP@R before training | MAP@R after |", "|---:|---|---:|---:|"]
    lines += [f"| {seed} | {init} | {r['before']:.3f} | {r['after']:.3f} |" for (seed, init), r in rows.items()]
    for init in INITS:
        after = [r["after"] for (_, i), r in rows.items() if i == init]
        lines.append(f"| mean | {init} | | {statistics.mean(after):.3f} (min {min(after):.3f}, max {max(after):.3f}) |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
