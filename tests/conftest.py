"""Shared fixtures: a micro ViT configuration and a fixed small batch (CPU, no downloads)."""
from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch

from semproxy.config import ModelConfig

NUM_CLASSES = 6


def _gpu_run(config) -> bool:
    """Whether this run selects the ``gpu`` tests (``-m gpu``, as bench/gpu_check.py runs them)."""
    expression = config.getoption("markexpr") or ""
    return "gpu" in expression and "not gpu" not in expression


def pytest_configure(config) -> None:
    """Every other run keeps CUDA hidden, from this process and from what it starts (Ray's workers, the
    bench scripts): its tests compare runs exactly, which a CPU guarantees and a GPU's kernels do not
    (the device setting's default is ``auto``). Set before anything asks CUDA for its devices. (The
    Ray cluster of tests/test_search_e2e.py starts unhidden, for its logical GPU: its workers may see a
    machine's GPUs.)"""
    if not _gpu_run(config):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` need CUDA: skipped (with the reason) where there is none, or in a run that
    did not select them."""
    if torch.cuda.is_available():
        return
    reason = ("needs a CUDA GPU (run on one: python bench/gpu_check.py)" if _gpu_run(config)
              else "GPU tests run on their own: python -m pytest -m gpu (here CUDA is hidden, or absent)")
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def micro_config(**overrides) -> ModelConfig:
    """The micro ViT (32 px, D=64, 12 blocks) with small prompt counts and depths."""
    base = ModelConfig(
        backbone="vit_micro_patch8_32", pretrained=False, embedding_dim=32, num_prompts=3,
        prompt_depth=4, prompt_step=1, adapter_layers=2, adapter_dim=8, class_prompts=2,
        class_prompt_depth=3, class_prompt_step=0, bitfit=False,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """8 images of 4 classes, 2 adjacent samples each, as the class-balanced sampler gives them."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 32, 32, generator=generator)
    labels = torch.tensor([4, 4, 0, 0, 2, 2, 5, 5])
    return images, labels


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Callable[[int], Path]]:
    """Mounts a tmpfs of the given size in kB (skips when not root or mount fails); unmounts after."""
    mounted = []

    def mount(kilobytes: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _free(folder: Path) -> int:
    stats = os.statvfs(folder)  # not shutil.disk_usage, which some tests replace
    return stats.f_bavail * stats.f_frsize


def fill_disk(folder: Path, leave: int = 0) -> Path:
    """Write zeros into ``folder/filler`` until its filesystem has at most ``leave`` bytes free."""
    filler = folder / "filler"
    with open(filler, "ab", buffering=0) as handle:
        try:
            while _free(folder) > leave:
                handle.write(bytes(min(1 << 20, max(4096, _free(folder) - leave))))
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler
