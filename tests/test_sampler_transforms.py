"""Class-balanced sampler, RandomResizedCrop boxes and the batched augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semproxy.config import ConfigError
from semproxy.data import BatchAugment, ClassBalancedBatchSampler
from semproxy.data.transforms import normalise, sample_crop_boxes


def test_batches_hold_distinct_classes_with_adjacent_samples():
    labels = np.repeat(np.arange(10), 6)
    sampler = ClassBalancedBatchSampler(labels, batch_size=8, samples_per_class=2, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 60 // 8
    for batch in batches:
        classes = labels[batch]
        assert len(batch) == 8
        assert all(classes[i] == classes[i + 1] for i in range(0, 8, 2))       # K adjacent
        assert len(set(classes[::2].tolist())) == 4                            # B/K distinct
        assert all(len(set(batch[i:i + 2])) == 2 for i in range(0, 8, 2))       # no repeats when enough


def test_sampler_is_seeded_per_epoch():
    labels = np.repeat(np.arange(10), 4)
    a = ClassBalancedBatchSampler(labels, 8, 2, seed=1)
    b = ClassBalancedBatchSampler(labels, 8, 2, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)


def test_small_classes_are_sampled_with_repetition():
    labels = np.array([0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    sampler = ClassBalancedBatchSampler(labels, 6, 3, seed=0)
    for _ in range(20):
        for batch in sampler:
            assert len(batch) == 6
        sampler.set_epoch(sampler.epoch + 1)


@pytest.mark.parametrize("batch,k,classes,message", [
    (7, 2, 10, "batch_size 7 is not a multiple of samples_per_class 2"),
    (24, 2, 10, "batch_size 24 / samples_per_class 2 = 12 classes per batch, but the training split has only 10 classes"),
])
def test_impossible_batches_are_one_line_config_errors(batch, k, classes, message):
    with pytest.raises(ConfigError, match=message) as info:
        ClassBalancedBatchSampler(np.repeat(np.arange(classes), 4), batch, k)
    assert "\n" not in str(info.value)


def test_crop_boxes_follow_random_resized_crop():
    rng = np.random.default_rng(0)
    heights, widths = np.full(4000, 256.0), rng.integers(200, 600, 4000).astype(float)
    x0, y0, w, h = sample_crop_boxes(heights, widths, rng).T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= widths).all() and (y0 + h <= heights).all()
    area = w * h / (heights * widths)
    assert area.min() >= 0.07 and area.max() <= 1.0
    inside = (w / h >= 3 / 4 - 0.02) & (w / h <= 4 / 3 + 0.02)
    assert inside.mean() > 0.97  # the fall-back centre crops may clamp, rounding may nudge


def test_full_crop_of_an_exact_size_image_is_the_image_itself():
    rng = np.random.default_rng(0)
    images = torch.zeros(2, 3, 20, 24, dtype=torch.uint8)
    first = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    second = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8)
    images[0, :, :16, :16], images[1] = first, second
    sizes = np.array([[16, 16], [20, 24]])
    identity = BatchAugment(16, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear", scale=(1, 1),
                            ratio=(1, 1), flip_p=0.0)
    out = identity(images, sizes, rng)
    torch.testing.assert_close(out[0], normalise(first[None], (0.5,) * 3, (0.5,) * 3)[0], rtol=0, atol=1e-5)
    flipped = BatchAugment(16, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear", scale=(1, 1),
                           ratio=(1, 1), flip_p=1.0)(images, sizes, rng)
    torch.testing.assert_close(flipped[0], out[0].flip(-1), rtol=0, atol=1e-5)


def test_crops_never_sample_the_padding():
    rng = np.random.default_rng(1)
    images = torch.zeros(8, 3, 64, 64, dtype=torch.uint8)
    images[:, :, :32, :40] = 255  # each image is 32 x 40 of white; the rest is padding
    sizes = np.tile([32, 40], (8, 1))
    for interpolation in ("bilinear", "bicubic"):
        out = BatchAugment(24, mean=(0.0,) * 3, std=(1 / 255,) * 3, interpolation=interpolation)(images, sizes, rng)
        assert out.min() > 254.9


def test_downscaled_crop_matches_interpolate():
    rng = np.random.default_rng(2)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    out = BatchAugment(16, mean=(0.0,) * 3, std=(1 / 255,) * 3, interpolation="bilinear", scale=(1, 1),
                       ratio=(1, 1), flip_p=0.0)(image, np.array([[32, 32]]), rng)
    expected = F.interpolate(image.float(), size=16, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-3)
