"""Everything a run needs from the data, built once: caches for each split plus image settings.

``prepare_data`` reads the benchmark, carves the validation classes, and decodes each split into
the shared cache. The result pickles by cache folder, so a search driver builds it once and every
trial on the node maps the same files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from timm.models import get_pretrained_cfg

from .config import Config, ModelConfig
from .data.cache import DeviceTrainImages, EvalImageCache, TrainImageCache, build_eval_cache, build_train_cache
from .data.datasets import get_dataset, load_benchmark
from .data.loader import TrainLoader, choose_path
from .data.readers import synthetic
from .data.splits import make_splits
from .data.transforms import BatchAugment, eval_resize_for
from .errors import BackboneError

__all__ = ["PreparedData", "ImageSettings", "image_settings", "resolve_data_root", "prepare_data"]


@dataclass(frozen=True)
class ImageSettings:
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def image_settings(model: ModelConfig) -> ImageSettings:
    """Input size (``img_size`` or the backbone's) and mean/std from the backbone's pretrained config."""
    import semproxy.models  # noqa: F401 - registers the micro ViT with timm (a layer below: imported for that)

    cfg = get_pretrained_cfg(model.backbone)
    if cfg is None:
        cfg = get_pretrained_cfg(model.backbone.split(".")[0])
    if cfg is None:
        raise BackboneError(f"unknown timm model '{model.backbone}'")
    return ImageSettings(model.img_size or cfg.input_size[-1], tuple(cfg.mean), tuple(cfg.std))


def resolve_data_root(config: Config) -> Path:
    """The dataset folder as an absolute path (``./data/<dataset>`` by default); generates synthetic data."""
    root = Path(config.data.data_root or Path("data") / config.data.dataset).expanduser().resolve()
    if config.data.dataset == "synthetic":
        synthetic.generate(root, num_classes=config.data.synthetic_classes,
                           images_per_class=config.data.synthetic_per_class, image_size=config.data.synthetic_size)
    return root


@dataclass
class PreparedData:
    """Cached splits of one benchmark at one image size; ``val`` / ``test`` None when not requested."""

    name: str
    train: TrainImageCache
    val: Optional[EvalImageCache]
    test: Optional[EvalImageCache]
    gallery: Optional[EvalImageCache]
    image: ImageSettings
    recall_ks: tuple[int, ...]
    fingerprint: dict

    def train_loader(self, config: Config, device: torch.device) -> TrainLoader:
        """The training loader of a run on ``device``; its ``path`` records how batches are made:
        the cache held on a GPU when it fits ``device_cache_mb`` (see :func:`choose_path`)."""
        augment = BatchAugment(self.image.size, self.image.mean, self.image.std, config.data.interpolation)
        path = choose_path(DeviceTrainImages.nbytes(self.train), device, config.data.device_cache_mb)
        return TrainLoader(self.train, config.data.batch_size, config.data.samples_per_class, augment,
                           device=device, seed=config.optim.seed, path=path)


def prepare_data(config: Config, *, with_test: bool = False, progress: bool = True) -> PreparedData:
    """Read, split and cache the configured benchmark (validation as configured, test on request);
    ``progress`` shows a bar per cache being built."""
    root = resolve_data_root(config)
    spec = get_dataset(config.data.dataset)
    splits = make_splits(load_benchmark(config.data.dataset, root), config.data.val_fraction)
    image = image_settings(config.model)
    resize = eval_resize_for(image.size, config.data.crop_pct)
    common = dict(cache_dir=Path(config.data.cache_dir).expanduser() if config.data.cache_dir else None,
                  interpolation=config.data.interpolation, workers=config.data.workers,
                  max_bad_fraction=config.data.max_bad_fraction, progress=progress)

    def evaluation(images, what):
        return build_eval_cache(images, image.size, resize, desc=f"caching {what} images", **common)

    return PreparedData(
        name=config.data.dataset,
        train=build_train_cache(splits.train, config.data.train_short_side or resize, desc="caching train images",
                                **common),
        val=evaluation(splits.val, "val") if splits.val is not None else None,
        test=evaluation(splits.test, "test" if splits.gallery is None else "query") if with_test else None,
        gallery=evaluation(splits.gallery, "gallery") if with_test and splits.gallery is not None else None,
        image=image,
        recall_ks=spec.recall_ks,
        fingerprint=splits.fingerprint(),
    )
