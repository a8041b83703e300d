"""iNaturalist 2018 with the Smooth-AP split (Brown et al. 2020): 5,690 / 2,452 classes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import Benchmark, DatasetError, ExpectedCounts, ImageList
from ._common import check_first_image, first_existing, is_integer, read_lines, require_root

EXPECTED = ExpectedCounts(train_classes=5_690, train_images=325_846, test_classes=2_452, test_images=136_093)
HOW = ("expected Inaturalist_train_set1.txt and Inaturalist_test_set1.txt (the Smooth-AP split files) "
       "beside train_val2018/; see: python -m semproxy.data prepare inat --root DIR")


def _read_list(root: Path, listing: Path) -> ImageList:
    paths, labels = [], []
    for number, line in read_lines(listing, "inat"):
        rel = line.strip()
        if not rel:
            continue
        parent = Path(rel).parent.name
        if not is_integer(parent):
            raise DatasetError(f"inat: {listing} line {number}: expected .../<category id>/<file>, got '{rel}'")
        paths.append(str(root / rel))
        labels.append(int(parent))
    images = ImageList(tuple(paths), np.asarray(labels))
    check_first_image("inat", images, listing)
    return images


def read(root: Path) -> Benchmark:
    root = require_root("inat", root, HOW)
    lists = {}
    for split in ("train", "test"):
        lists[split] = first_existing(root, [f"Inaturalist_{split}_set1.txt"])
        if lists[split] is None:
            raise DatasetError(f"inat: {root / f'Inaturalist_{split}_set1.txt'} not found ({HOW})")
    return Benchmark("inat", _read_list(root, lists["train"]), _read_list(root, lists["test"]))
