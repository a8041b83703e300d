"""Pretrain the micro ViT that the synthetic demo starts from: ``python -m semproxy.tools.pretrain_micro``.

Parameter-efficient tuning presumes a pretrained backbone; a random one gives prompts nothing to
steer. So the package ships ``vit_micro_patch8_32.synthetic``: the micro ViT fully trained with
Proxy-Anchor on 1,536 generated images (all 256 synthetic class designs, seed 11) labelled by SHAPE
AND TEXTURE ONLY. Its features know shapes and textures but were never asked to tell colours apart,
which the synthetic benchmark's classes need: the same situation as an ImageNet backbone meeting
fine-grained birds, where tuning has something real to learn. This module regenerates the file
(a few minutes on 2 CPU cores; deterministic for a given machine).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..models.backbone import MICRO_SYNTHETIC_WEIGHTS

if TYPE_CHECKING:
    from ..data import TrainLoader

__all__ = ["pretrain_micro", "build_parser", "main"]


def pretrain_micro(out: Path, *, epochs: int = 30, lr: float = 3e-3, seed: int = 0,
                   workdir: Path | None = None) -> Path:
    """Train the micro ViT on shape-and-texture labels and save its backbone as safetensors.

    The training step is the trainer's (method ``full``, AdamW at ``lr`` with the proxies at
    10 x ``lr``, weight decay 0.05, Proxy-Anchor's defaults) at a constant learning rate: this loop
    never ends a schedule epoch. A process entry point, it begins the run as ``fit`` does.
    """
    from safetensors.torch import save_file

    from ..config import Config
    from ..train import Trainer, begin_run

    loader = _shape_texture_loader(Path(workdir or tempfile.mkdtemp(prefix="semproxy-pretrain-")), seed)
    config = Config().replace({"backbone": "vit_micro_patch8_32", "pretrained": False, "method": "full",
                               "embedding_dim": 64, "optimizer": "adamw", "lr": lr, "lr_proxy": 10 * lr,
                               "weight_decay": 0.05, "epochs": epochs, "seed": seed})
    device = torch.device("cpu")
    begin_run(config, device)
    trainer = Trainer(config, None, device, num_classes=loader.num_classes)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            terms = trainer.step(batch)
        print(f"epoch {epoch + 1}/{epochs}: loss {terms.loss.item():.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in trainer.model.backbone.state_dict().items()}, str(out))
    return out


def _shape_texture_loader(workdir: Path, seed: int) -> TrainLoader:
    """Batches of 64 (8 per class) of all 256 synthetic designs, labelled by shape and texture only."""
    from ..data import BatchAugment, ImageList, TrainLoader, build_train_cache, load_benchmark
    from ..data.readers import synthetic

    root = synthetic.generate(workdir / "images", num_classes=256, images_per_class=6, image_size=48, seed=11)
    benchmark = load_benchmark("synthetic", root)
    designs = np.concatenate([benchmark.train.labels, benchmark.test.labels]) - 1
    labels = np.array([synthetic.SHAPES.index(s) * len(synthetic.TEXTURES) + synthetic.TEXTURES.index(t)
                       for s, _, t in map(synthetic.class_design, designs)])
    images = ImageList(benchmark.train.paths + benchmark.test.paths, labels)
    cache = build_train_cache(images, 36, cache_dir=workdir / "cache")
    return TrainLoader(cache, 64, 8, BatchAugment(32, (0.5,) * 3, (0.5,) * 3), seed=seed)


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag's help says its default."""
    parser = argparse.ArgumentParser(prog="python -m semproxy.tools.pretrain_micro",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MICRO_SYNTHETIC_WEIGHTS,
                        help="weights file to write (default: %(default)s, the shipped weights, which it replaces)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"wrote {pretrain_micro(args.out, epochs=args.epochs, lr=args.lr)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
