"""CARS196 (Krause et al. 2013): classes 1-98 train, 99-196 test."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import Benchmark, DatasetError, ExpectedCounts, ImageList
from ._common import check_first_image, first_existing, read_class_folders, require_root
from .cub import split_by_class

EXPECTED = ExpectedCounts(train_classes=98, train_images=8_054, test_classes=98, test_images=8_131)
HOW = ("expected car_ims/ with cars_annos.mat, or images/NNN.Name/ class folders; "
       "get it with: python -m semproxy.data prepare cars196 --root DIR --archive car_ims.tgz")


def _read_annotations(path: Path) -> ImageList:
    from scipy.io import loadmat

    try:
        annotations = loadmat(str(path), squeeze_me=True)["annotations"]
        rel_paths = [str(a) for a in annotations["relative_im_path"]]
        labels = np.asarray(annotations["class"], dtype=np.int64).reshape(-1)
    except Exception as error:  # noqa: BLE001 - any structural problem of the .mat file
        raise DatasetError(f"cars196: {path} is not a readable cars_annos.mat "
                           f"({type(error).__name__}: {error})") from None
    return ImageList(tuple(str(path.parent / p) for p in rel_paths), labels)


def read(root: Path) -> Benchmark:
    root = require_root("cars196", root, HOW)
    annotations = first_existing(root, ["cars_annos.mat"])
    if annotations is not None:
        images = _read_annotations(annotations)
        check_first_image("cars196", images, annotations)
    else:
        folders = first_existing(root, ["images"])
        if folders is None:
            raise DatasetError(f"cars196: neither {root / 'cars_annos.mat'} nor {root / 'images'}/ found ({HOW})")
        images = read_class_folders("cars196", folders, HOW)
    return split_by_class("cars196", images, 98)
