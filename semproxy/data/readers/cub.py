"""CUB-200-2011 (Wah et al. 2011): classes 1-100 train, 101-200 test."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import Benchmark, DatasetError, ExpectedCounts, ImageList
from ._common import check_first_image, first_existing, read_class_folders, read_rows, require_root

EXPECTED = ExpectedCounts(train_classes=100, train_images=5_864, test_classes=100, test_images=5_924)
IMAGE_ID = {0: "image id"}
HOW = ("expected CUB_200_2011/ with images.txt, image_class_labels.txt and images/, or images/NNN.Name/ "
       "class folders; get it with: python -m semproxy.data prepare cub200 --root DIR")


def split_by_class(name: str, images: ImageList, last_train_class: int) -> Benchmark:
    """Classes up to ``last_train_class`` train, the rest test (the CUB and Cars convention)."""
    train = images.labels <= last_train_class
    return Benchmark(name, images.subset(train), images.subset(~train))


def read_official_or_folders(name: str, root: Path, official_dir: str, how: str) -> ImageList:
    """The official list files (images.txt + image_class_labels.txt) or class folders under images/."""
    listing = first_existing(root, [f"{official_dir}/images.txt", "images.txt"])
    if listing is not None:
        base = listing.parent
        labels_file = base / "image_class_labels.txt"
        if not labels_file.is_file():
            raise DatasetError(f"{name}: {labels_file} not found ({how})")
        paths = {row[0]: str(base / "images" / row[1]) for row in read_rows(listing, name, 2, integers=IMAGE_ID)}
        label_rows = read_rows(labels_file, name, 2, integers={**IMAGE_ID, 1: "class id"})
        labels = {row[0]: int(row[1]) for row in label_rows}
        missing = sorted(set(paths) - set(labels))
        if missing:
            raise DatasetError(f"{name}: image id {missing[0]} of {listing} has no label in {labels_file}")
        ids = sorted(paths, key=int)
        images = ImageList(tuple(paths[i] for i in ids), np.asarray([labels[i] for i in ids]))
        check_first_image(name, images, listing)
        return images
    folders = first_existing(root, ["images", f"{official_dir}/images"])
    if folders is None or not folders.is_dir():
        raise DatasetError(f"{name}: neither {root / official_dir / 'images.txt'} nor {root / 'images'}/ found ({how})")
    return read_class_folders(name, folders, how)


def read(root: Path) -> Benchmark:
    root = require_root("cub200", root, HOW)
    return split_by_class("cub200", read_official_or_folders("cub200", root, "CUB_200_2011", HOW), 100)
