"""Tiny copies of each benchmark's real on-disk layout, with generated JPEG files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (24, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def make_cub_official(root: Path, classes=(1, 2, 101, 102), per_class: int = 3) -> Path:
    base = root / "CUB_200_2011"
    images, labels, n = [], [], 0
    for c in classes:
        for k in range(per_class):
            n += 1
            rel = f"{c:03d}.Bird_{c}/Bird_{c}_{k}.jpg"
            write_jpeg(base / "images" / rel, n)
            images.append(f"{n} {rel}")
            labels.append(f"{n} {c}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    return root


def make_class_folders(root: Path, classes=(1, 2, 101, 102), per_class: int = 3) -> Path:
    for c in classes:
        for k in range(per_class):
            write_jpeg(root / "images" / f"{c:03d}.Name_{c}" / f"{k}.jpg", c * 100 + k)
    return root


def make_cars_official(root: Path, classes=(1, 2, 99, 100), per_class: int = 3) -> Path:
    from scipy.io import savemat

    dtype = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"),
             ("bbox_y2", "O"), ("class", "O"), ("test", "O")]
    rows, n = [], 0
    for c in classes:
        for _ in range(per_class):
            n += 1
            rel = f"car_ims/{n:06d}.jpg"
            write_jpeg(root / rel, n)
            rows.append((rel, 1, 1, 10, 10, c, int(c > 98)))
    savemat(str(root / "cars_annos.mat"), {"annotations": np.array([tuple(r) for r in rows], dtype=dtype)[None, :]})
    return root


def make_sop(root: Path, train=(1, 2, 3), test=(4, 5), per_class: int = 2) -> Path:
    for split, classes in (("train", train), ("test", test)):
        lines, n = ["image_id class_id super_class_id path"], 0
        for c in classes:
            for k in range(per_class):
                n += 1
                rel = f"bicycle_final/{c}_{k}.JPG"
                write_jpeg(root / rel, c * 10 + k)
                lines.append(f"{n} {c} 1 {rel}")
        (root / "Info_Files").mkdir(parents=True, exist_ok=True)
        (root / "Info_Files" / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_inshop(root: Path) -> Path:
    rows = []
    for item, status, count in ((1, "train", 2), (2, "train", 2), (7, "query", 1), (7, "gallery", 2),
                                (9, "query", 2), (9, "gallery", 1)):
        for k in range(count):
            rel = f"img/WOMEN/Dresses/id_{item:08d}/{status}_{k}_front.jpg"
            write_jpeg(root / rel, item * 10 + k + len(rows))
            rows.append(f"{rel} id_{item:08d} {status}")
    (root / "list_eval_partition.txt").write_text(f"{len(rows)}\nimage_name item_id evaluation_status\n"
                                                  + "\n".join(rows) + "\n")
    return root


def make_inat(root: Path) -> Path:
    for split, classes in (("train", (7477, 7478)), ("test", (9001, 9002))):
        lines = []
        for c in classes:
            for k in range(2):
                rel = f"train_val2018/Plantae/{c}/{c}_{k}.jpg"
                write_jpeg(root / rel, c + k)
                lines.append(rel)
        (root / f"Inaturalist_{split}_set1.txt").write_text("\n".join(lines) + "\n")
    return root
