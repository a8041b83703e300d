"""In-Shop Clothes Retrieval (Liu et al. 2016): list_eval_partition.txt, train / query / gallery."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import Benchmark, DatasetError, ExpectedCounts, ImageList
from ._common import check_first_image, first_existing, is_integer, read_rows, require_root

EXPECTED = ExpectedCounts(train_classes=3_997, train_images=25_882, test_classes=3_985, test_images=14_218,
                          gallery_images=12_612)
HOW = ("expected list_eval_partition.txt (or Eval/list_eval_partition.txt) and the img/ folder; "
       "get it with: python -m semproxy.data prepare inshop --root DIR --archive img.zip")


def _item_id(text: str, listing: Path) -> int:
    """'id_00000002' -> 2: one integer id per item, shared by query and gallery."""
    number = text.rsplit("_", 1)[-1]
    if not is_integer(number):
        raise DatasetError(f"inshop: {listing}: expected an item id like id_00000002, got '{text}'")
    return int(number)


def read(root: Path) -> Benchmark:
    root = require_root("inshop", root, HOW)
    listing = first_existing(root, ["list_eval_partition.txt", "Eval/list_eval_partition.txt"])
    if listing is None:
        raise DatasetError(f"inshop: {root / 'list_eval_partition.txt'} not found ({HOW})")
    rows = read_rows(listing, "inshop", 3, skip=2)  # a count line, a header, then rows
    base = root / "Img" if (root / "Img" / rows[0][0]).exists() else root  # the official zip nests img/ in Img/
    parts: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "query": ([], []), "gallery": ([], [])}
    for path, item, status in (row[:3] for row in rows):
        if status not in parts:
            raise DatasetError(f"inshop: {listing}: unknown evaluation status '{status}' "
                               "(expected train, query, gallery)")
        parts[status][0].append(str(base / path))
        parts[status][1].append(_item_id(item, listing))
    train, query, gallery = (ImageList(tuple(p), np.asarray(l)) for p, l in parts.values())
    check_first_image("inshop", train, listing)
    return Benchmark("inshop", train, query, gallery)
