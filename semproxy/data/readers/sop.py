"""Stanford Online Products (Oh Song et al. 2016): Info_Files/Ebay_train.txt / Ebay_test.txt."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import Benchmark, DatasetError, ExpectedCounts, ImageList
from ._common import check_first_image, first_existing, read_rows, require_root

EXPECTED = ExpectedCounts(train_classes=11_318, train_images=59_551, test_classes=11_316, test_images=60_502)
HOW = ("expected Info_Files/Ebay_train.txt and Ebay_test.txt beside the image folders (or images/); "
       "get it with: python -m semproxy.data prepare sop --root DIR")


def _read_list(root: Path, listing: Path) -> ImageList:
    rows = read_rows(listing, "sop", 4, skip=1, integers={1: "class id"})  # image_id class_id super_class_id path
    base = root if (root / rows[0][3]).exists() or not (root / "images").is_dir() else root / "images"
    images = ImageList(tuple(str(base / row[3]) for row in rows), np.asarray([int(row[1]) for row in rows]))
    check_first_image("sop", images, listing)
    return images


def read(root: Path) -> Benchmark:
    root = require_root("sop", root, HOW)
    info = first_existing(root, ["Info_Files", "Stanford_Online_Products/Info_Files"])
    if info is None:
        raise DatasetError(f"sop: {root / 'Info_Files'} not found ({HOW})")
    lists = {split: info / f"Ebay_{split}.txt" for split in ("train", "test")}
    for path in lists.values():
        if not path.exists():
            raise DatasetError(f"sop: {path} not found ({HOW})")
    return Benchmark("sop", _read_list(info.parent, lists["train"]), _read_list(info.parent, lists["test"]))
