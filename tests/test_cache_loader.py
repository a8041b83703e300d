"""The image cache (decode once, shared, corrupt files reported) and the train/eval batch streams."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from semproxy.data import (DatasetError, ImageList, TrainLoader, BatchAugment, build_eval_cache,
                           build_train_cache, eval_batches, load_benchmark)
from semproxy.data.cache import UnreadableImageWarning
from semproxy.data.readers import synthetic


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("synthetic"), num_classes=8, images_per_class=6, image_size=48)


@pytest.fixture(scope="module")
def train_images(synthetic_root):
    return load_benchmark("synthetic", synthetic_root).train


def test_train_cache_keeps_aspect_and_is_reused(tmp_path, train_images):
    cache = build_train_cache(train_images, 36, cache_dir=tmp_path)
    assert len(cache) == len(train_images) and cache.shapes.min() == 36
    decoded = np.asarray(Image.open(train_images.paths[0]).convert("RGB").resize((36, 36), Image.BICUBIC))
    assert np.array_equal(cache.image(0), decoded)
    assert isinstance(cache.pixels, np.memmap) and not cache.pixels.flags.writeable
    folders = list(tmp_path.iterdir())
    again = build_train_cache(train_images, 36, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == folders and np.array_equal(again.image(3), cache.image(3))
    other = build_train_cache(train_images, 40, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2 and other.shapes.min() == 40


def test_eval_cache_equals_torchvision_resize_center_crop(tmp_path, train_images):
    cache = build_eval_cache(train_images, 32, 36, cache_dir=tmp_path)
    reference = T.Compose([T.Resize(36, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32)])
    for i in (0, 5, 17):
        expected = np.asarray(reference(Image.open(train_images.paths[i]).convert("RGB")))
        assert np.array_equal(cache.pixels[i], expected)


def test_unreadable_images_are_skipped_by_path_or_refused(tmp_path, train_images):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    images = ImageList(train_images.paths + (str(broken),), np.append(train_images.labels, 1))
    with pytest.warns(UnreadableImageWarning, match="broken.jpg"):
        cache = build_train_cache(images, 32, cache_dir=tmp_path / "c", max_bad_fraction=0.1)
    assert len(cache) == len(train_images) and str(broken) not in cache.paths
    with pytest.warns(UnreadableImageWarning, match="broken.jpg"):
        eval_cache = build_eval_cache(images, 32, 36, cache_dir=tmp_path / "c", max_bad_fraction=0.1)
    assert len(eval_cache) == len(train_images)
    few = ImageList(train_images.paths[:3] + (str(broken),), np.append(train_images.labels[:3], 1))
    with pytest.raises(DatasetError, match=r"1 of 4 images unreadable .*broken.jpg"):
        build_train_cache(few, 32, cache_dir=tmp_path / "d", max_bad_fraction=0.1)
    assert not any((tmp_path / "d").glob("*/index.npz"))  # nothing half-written is published


def test_train_loader_batches_are_augmented_deterministic_and_contiguous(tmp_path, train_images):
    cache = build_train_cache(train_images, 36, cache_dir=tmp_path)
    augment = BatchAugment(32, mean=(0.5,) * 3, std=(0.5,) * 3)
    loader = TrainLoader(cache, batch_size=8, samples_per_class=2, augment=augment, seed=3)
    assert loader.num_classes == 4 and len(loader) == 24 // 8
    first = list(loader)
    assert len(first) == len(loader)  # every batch of the epoch, none dropped by the prefetch
    images, labels, groups = first[0]
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert labels.min() >= 0 and labels.max() < 4 and torch.equal(labels[::2], labels[1::2])
    assert groups.classes.tolist() == sorted(set(labels.tolist())) and groups.mask is None
    assert torch.equal(groups.classes[groups.inverse], labels)
    again = list(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], images)


def test_eval_batches_are_the_cached_crops_in_order(tmp_path, train_images):
    cache = build_eval_cache(train_images, 32, 36, cache_dir=tmp_path)
    batches = list(eval_batches(cache, 10, mean=(0.5,) * 3, std=(0.5,) * 3))
    assert [len(b) for b in batches] == [10, 10, 4]
    expected = (torch.from_numpy(np.array(cache.pixels[12])).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(batches[1][2], expected)


def test_caches_pickle_by_folder_not_by_pixels(tmp_path, train_images):
    import pickle

    train = build_train_cache(train_images, 36, cache_dir=tmp_path)
    evaluation = build_eval_cache(train_images, 32, 36, cache_dir=tmp_path)
    for cache in (train, evaluation):
        blob = pickle.dumps(cache)
        assert len(blob) < cache.pixels.nbytes / 4
        restored = pickle.loads(blob)
        assert isinstance(restored.pixels, np.memmap) and np.array_equal(restored.pixels, cache.pixels)
        assert np.array_equal(restored.labels, cache.labels) and restored.paths == cache.paths
