"""The training cache held on the device: the same batches as the host paths, and when it is used.

The reference is the ``host-batch`` path (today's GPU path: the padded uint8 batch assembled on the
host, resampled by ``BatchAugment.resample``). ``device-cache`` must give its images pixel for
pixel; both run here with device=cpu. ``host-crops`` (the CPU path) draws the same crops and flips
but resizes with antialiasing, so only its labels and groups are the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semproxy.config import Config
from semproxy.data import BatchAugment, ImageList, TrainLoader, build_train_cache
from semproxy.data.cache import DeviceTrainImages
from semproxy.data.transforms import CropParams
from semproxy.data.loader import FREE_MEMORY_SHARE, DataPath, choose_path
from semproxy.prepared import prepare_data

EXPERIMENT = Path(__file__).parent.parent / "experiments" / "synthetic.yaml"
GB = 10**9


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """24 images of 6 classes in many sizes and both orientations (one very elongated: capped)."""
    folder = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for index in range(24):
        height, width = (20, 100) if index == 7 else rng.integers(24, 72, 2)
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
        labels.append(index % 6)
    return build_train_cache(ImageList(tuple(paths), np.array(labels)), 32, cache_dir=folder / "cache", workers=1,
                             progress=False)


@dataclass
class RecordingAugment(BatchAugment):
    """A BatchAugment that keeps the sizes and flips of every batch it drew crops for."""

    drawn: list = field(default_factory=list)

    def sample(self, sizes, rng):
        params = super().sample(sizes, rng)
        self.drawn.append((sizes.copy(), params.flip.copy()))
        return params


def loader(cache, path: str, interpolation: str = "bicubic") -> TrainLoader:
    augment = RecordingAugment(24, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), interpolation=interpolation)
    return TrainLoader(cache, batch_size=8, samples_per_class=2, augment=augment, device="cpu", seed=5,
                       path=DataPath(path, "test"))


def epochs(train_loader: TrainLoader, count: int = 3) -> list:
    batches = []
    for epoch in range(count):
        train_loader.set_epoch(epoch)
        batches += list(train_loader)
    return batches


def assert_same_labels_and_groups(a, b) -> None:
    assert torch.equal(a.labels, b.labels)
    for f in fields(a.groups):
        left, right = getattr(a.groups, f.name), getattr(b.groups, f.name)
        assert torch.equal(left, right) if isinstance(left, torch.Tensor) else left == right, f.name


def test_the_cache_has_images_of_many_sizes(cache):
    assert len(np.unique(cache.shapes, axis=0)) > 10 and (cache.shapes[:, 0] > cache.shapes[:, 1]).any()
    assert cache.shapes.max() == 64  # the elongated image, capped at twice the shorter side


def test_device_images_gather_the_host_padded_batch_byte_for_byte(cache, monkeypatch):
    empty = torch.empty
    with monkeypatch.context() as patch:  # device memory that held something else before
        patch.setattr(torch, "empty", lambda *args, **kwargs: empty(*args, **kwargs).fill_(77))
        images = DeviceTrainImages.upload(cache, "cpu", chunk_bytes=1000)  # many chunks
    assert images.pixels.numel() == DeviceTrainImages.nbytes(cache) == len(cache.pixels) + 3 * 64
    rng = np.random.default_rng(1)
    last = len(cache) - 1  # its rows run into the zero tail
    for indices in [np.array([last]), np.array([7, last, 0, 7]), *(rng.integers(0, len(cache), 8) for _ in range(5))]:
        expected, _ = cache.batch(indices)
        assert torch.equal(images.batch(images.rows(indices)), torch.from_numpy(expected))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_an_image_in_a_padded_batch_is_resampled_as_it_would_be_alone(cache, interpolation):
    """Crops that reach an image's right or bottom edge read its edge, never the batch's padding."""
    augment = BatchAugment(24, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation=interpolation)
    images = DeviceTrainImages.upload(cache, "cpu")
    heights, widths = cache.shapes[:, 0], cache.shapes[:, 1]
    indices = np.flatnonzero((heights < heights.max()) & (widths < widths.max()))[:12]
    assert len(indices) == 12  # each padded below and to the right, in a batch with the tallest and the widest
    padding = [int(heights.argmax()), int(widths.argmax())]
    sizes = cache.shapes[indices]
    # whole images and crops of their bottom-right corner, flipped and not
    boxes = np.concatenate([np.stack([np.zeros(6), np.zeros(6), sizes[:6, 1], sizes[:6, 0]], 1),
                            np.stack([sizes[6:, 1] / 2, sizes[6:, 0] / 2, sizes[6:, 1] / 2, sizes[6:, 0] / 2], 1)])
    params = CropParams(boxes, np.arange(12) % 2 == 1)
    padded, _ = cache.batch(np.append(indices, padding))
    on_device = images.batch(images.rows(np.append(indices, padding)))
    assert torch.equal(on_device, torch.from_numpy(padded))  # both paths pad alike
    batched = augment.on_device(torch.from_numpy(padded[:12]), sizes, params)
    for slot, index in enumerate(indices):
        alone = augment.on_device(torch.from_numpy(cache.batch(index[None])[0]), sizes[slot:slot + 1],
                                  CropParams(boxes[slot:slot + 1], params.flip[slot:slot + 1]))
        torch.testing.assert_close(batched[slot:slot + 1], alone, atol=2e-3, rtol=0)  # float rounding of the grid


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_device_cache_path_gives_the_host_batch_path_pixel_for_pixel(cache, interpolation):
    host, device = loader(cache, "host-batch", interpolation), loader(cache, "device-cache", interpolation)
    reference, resident = epochs(host), epochs(device)
    assert len(reference) == len(resident) == 3 * len(host) == device.host_batches and device.host_seconds > 0
    for a, b in zip(reference, resident):
        assert a.images.shape == (8, 3, 24, 24) and torch.equal(a.images, b.images)
        assert_same_labels_and_groups(a, b)
    # what was compared: batches mixing image sizes, flipped and unflipped crops, different epochs
    flips = np.concatenate([f for _, f in device.augment.drawn])
    assert flips.any() and not flips.all()
    assert all(len(np.unique(sizes, axis=0)) > 1 for sizes, _ in device.augment.drawn)
    assert not torch.equal(reference[0].images, reference[len(host)].images)
    assert [s.tolist() for s, _ in host.augment.drawn] == [s.tolist() for s, _ in device.augment.drawn]


def test_host_crops_draw_the_same_batches_but_resize_with_antialiasing(cache):
    crops, resident = epochs(loader(cache, "host-crops"), 1), epochs(loader(cache, "device-cache"), 1)
    for a, b in zip(crops, resident):
        assert_same_labels_and_groups(a, b)
        assert not torch.equal(a.images, b.images)


def test_choose_path_keeps_the_cache_on_the_device_only_within_the_budget():
    cuda = torch.device("cuda")  # a device name only: nothing here touches a GPU
    fits = choose_path(GB, cuda, 4000, free_bytes=80 * GB)
    assert fits.name == "device-cache" and fits.images_on_device
    assert "fits device_cache_mb 4000" in fits.reason and "80.0 GB free on cuda" in fits.reason
    over_budget = choose_path(GB, cuda, 999, free_bytes=80 * GB)
    assert over_budget.name == "host-batch" and "exceeds device_cache_mb 999" in over_budget.reason
    assert choose_path(GB, cuda, 1000, free_bytes=80 * GB).name == "device-cache"  # MB of 10^6 bytes
    assert choose_path(1, cuda, 0, free_bytes=80 * GB).name == "host-batch"         # 0: never
    short_of_memory = choose_path(GB, cuda, 4000, free_bytes=int(GB / FREE_MEMORY_SHARE) - 1)
    assert short_of_memory.name == "host-batch" and "free on cuda" in short_of_memory.reason
    assert choose_path(GB, cuda, 4000, free_bytes=int(GB / FREE_MEMORY_SHARE)).name == "device-cache"
    assert choose_path(GB, torch.device("cpu"), 4000).name == "host-crops"


def test_a_run_records_its_path_and_falls_back_when_the_budget_is_too_small(tmp_path):
    config = Config.load(EXPERIMENT).replace({"data_root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "c"),
                                              "img_size": 64})
    data = prepare_data(config, progress=False)
    assert 10**6 < DeviceTrainImages.nbytes(data.train) < 10**7
    small = data.train_loader(config.replace({"device_cache_mb": 1}), torch.device("cuda"))  # builds, uploads nothing
    assert small.path.name == "host-batch" and "exceeds device_cache_mb 1" in small.path.reason
    assert data.train_loader(config, torch.device("cpu")).path.name == "host-crops"


def test_training_images_are_cached_at_train_short_side_else_at_the_evaluation_resize(tmp_path):
    config = Config.load(EXPERIMENT).replace({"data_root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "c"),
                                              "img_size": 32, "crop_pct": 0.5})
    default = prepare_data(config, progress=False)
    larger = prepare_data(config.replace({"train_short_side": 96}), progress=False)
    assert (default.train.shapes.min(1) == 64).all() and (larger.train.shapes.min(1) == 96).all()  # 32 / 0.5; 96
    assert larger.train.folder != default.train.folder  # caches of their own
    assert np.array_equal(larger.val.pixels, default.val.pixels)  # evaluation images are unchanged


def test_an_upload_that_runs_out_of_device_memory_falls_back_to_host_batch(cache, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(DeviceTrainImages, "upload", out_of_memory)
    fallen = loader(cache, "device-cache")
    assert fallen.path.name == "host-batch" and "ran out of device memory" in fallen.path.reason
    assert all(torch.equal(a.images, b.images) for a, b in zip(fallen, loader(cache, "host-batch")))


@pytest.mark.gpu
def test_on_a_gpu_both_device_paths_give_the_same_images_and_never_wait_for_the_gpu(cache):
    augment = BatchAugment(24, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    batches = {}
    for path in ("host-batch", "device-cache"):
        on_gpu = TrainLoader(cache, 8, 2, augment, device="cuda", seed=5, path=DataPath(path, "test"))
        list(on_gpu)  # the first epoch makes the per-device constants and the pinned buffers
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host-device sync while batches are made raises
        try:
            batches[path] = list(on_gpu)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    reference = epochs(loader(cache, "host-batch"), 1)  # on the CPU
    for a, b, c in zip(reference, batches["host-batch"], batches["device-cache"]):
        assert torch.equal(b.images, c.images) and torch.equal(b.labels, c.labels)
        assert torch.equal(a.labels, b.labels.cpu())
        torch.testing.assert_close(a.images, b.images.cpu(), rtol=0, atol=1e-4)  # CPU vs CUDA grid_sample
