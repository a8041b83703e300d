"""A final training run into a folder: ``fit`` with test evaluation, a checkpoint per epoch, TensorBoard
events, ``metrics.json`` and ``config.yaml``.

What ``python -m semproxy.train`` does after reading its flags, and what ``tune.py compare`` runs for
each seed of each method. ``metrics.json`` holds the test metrics, the per-epoch history, the config,
the data fingerprint and path, and the trained parameters counted as the search counts them
(:func:`semproxy.models.count_parameters`: ``learned`` over all classes).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import write_json_atomic
from ..checkpoint import CHECKPOINT_FILE
from ..config import Config
from ..metric_names import metric_name
from ..models import count_parameters

__all__ = ["METRICS_FILE", "FinalRun", "train_final"]

METRICS_FILE = "metrics.json"


@dataclass
class FinalRun:
    """What a final training wrote: its folder and test metrics, and the data's name and test size."""

    out: Path
    test: dict[str, float]
    dataset: str
    test_images: int
    recall_ks: tuple[int, ...]

    def summary(self) -> str:
        """The test metrics in one line, in percent as papers print them: ``test (cub200, 5924 images, %):
        R@1 86.6, ..., MAP@R 52.7 (paper's variant 51.9)``."""
        def percent(name: str) -> str:
            return f"{100 * self.test[metric_name('test', name)]:.1f}"

        recalls = ", ".join(f"R@{k} {percent(f'recall@{k}')}" for k in self.recall_ks)
        return (f"test ({self.dataset}, {self.test_images} images, %): {recalls}, MAP@R {percent('map@r')} "
                f"(paper's variant {percent('map@r_paper')})")


def train_final(config: Config, out: Path, *, resume: bool, progress: bool, source: str) -> FinalRun:
    """Train ``config`` (test evaluation on) into ``out``; ``resume`` continues from its checkpoint there.

    ``source`` names where the config came from, for ``config.yaml``'s header.
    """
    from torch.utils.tensorboard import SummaryWriter

    from ..prepared import prepare_data
    from . import EpochResult, Trainer, fit

    checkpoint = out / CHECKPOINT_FILE
    data = prepare_data(config, with_test=True, progress=progress)
    writer = SummaryWriter(str(out / "tensorboard"))

    def log_and_save(result: EpochResult, trainer: Trainer) -> None:
        for name, value in result.flat().items():
            if name not in ("epoch", "seconds"):
                writer.add_scalar(name, value, result.epoch)
        writer.flush()
        trainer.save(out)

    result = fit(config, data=data, callbacks=[log_and_save], resume_from=checkpoint if resume else None,
                 progress=progress)
    for name, value in result.test_metrics.items():
        writer.add_scalar(name, value, config.optim.epochs)
    writer.close()
    counted = count_parameters(result.model, config.data.batch_size // config.data.samples_per_class)
    config.dump(out / "config.yaml", header=f"final training of {source}")
    write_json_atomic(out / METRICS_FILE, {"test": result.test_metrics, "config": config.to_mapping(),
                                           "history": [h.flat() for h in result.history], "data": data.fingerprint,
                                           "data_path": result.data_path, "parameters": asdict(counted)})
    return FinalRun(out, result.test_metrics, data.name, len(data.test), tuple(data.recall_ks))
