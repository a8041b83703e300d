"""A generated, class-structured image set written as real JPEG files in CUB's class-folder layout.

Each class is a combination of a shape, a colour and a background texture; each image jitters the
position, size, rotation and colours and adds noise, so classes are learnable but not trivial.
Generation is deterministic for a seed. The first half of the classes is the training split, the
second half the test split, as in CUB. ``synthetic.json`` beside ``images/`` records the arguments
and counts, so the reader checks what it finds against what was written.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..records import Benchmark, DatasetError, ExpectedCounts
from ._common import read_class_folders, require_root
from .cub import split_by_class

__all__ = ["generate", "read", "expected_counts", "class_design", "SHAPES", "COLOURS", "TEXTURES"]

HOW = "generate it with: python -m semproxy.data synthetic --root DIR"
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "bar")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
    "magenta": (200, 50, 200), "cyan": (40, 200, 210), "orange": (240, 140, 20), "white": (235, 235, 235),
}
TEXTURES = ("plain", "stripes", "dots", "checks")


def class_design(index: int) -> tuple[str, str, str]:
    """Class ``index`` -> (shape, colour, texture), varying the shape fastest so neighbours differ."""
    shape = SHAPES[index % len(SHAPES)]
    colour = list(COLOURS)[(index // len(SHAPES) + index) % len(COLOURS)]
    texture = TEXTURES[(index // (len(SHAPES) * len(COLOURS)) + index // 2) % len(TEXTURES)]
    return shape, colour, texture


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        corners = [angle - math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if shape in ("square", "diamond"):
        offset = angle + (math.pi / 4 if shape == "square" else 0.0)
        return [(cx + r * math.cos(offset + k * math.pi / 2), cy + r * math.sin(offset + k * math.pi / 2)) for k in range(4)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            a = angle - math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        return points
    raise ValueError(shape)


def _draw_background(draw: ImageDraw.ImageDraw, size: int, texture: str, tone: np.ndarray, rng: np.random.Generator) -> None:
    line = tuple(int(v) for v in np.clip(tone + 50, 0, 255))
    step = max(4, size // int(rng.integers(5, 9)))
    if texture == "stripes":
        for x in range(-size, 2 * size, step):
            draw.line([(x, 0), (x + size, size)], fill=line, width=max(1, step // 3))
    elif texture == "dots":
        for y in range(step // 2, size, step):
            for x in range(step // 2, size, step):
                draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=line)
    elif texture == "checks":
        for y in range(0, size, step):
            for x in range((y // step) % 2 * step, size, 2 * step):
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=line)


def _render(class_index: int, size: int, rng: np.random.Generator) -> Image.Image:
    shape, colour, texture = class_design(class_index)
    tone = rng.integers(30, 110, size=3)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in tone))
    draw = ImageDraw.Draw(image)
    _draw_background(draw, size, texture, tone, rng)
    fill = tuple(int(v) for v in np.clip(np.asarray(COLOURS[colour]) + rng.normal(0, 18, 3), 0, 255))
    r = size * rng.uniform(0.22, 0.34)
    cx, cy = size / 2 + rng.uniform(-0.15, 0.15) * size, size / 2 + rng.uniform(-0.15, 0.15) * size
    angle = rng.uniform(-0.3, 0.3)  # small: a rotated square must not become a diamond
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(2, int(r / 3)))
    elif shape in ("cross", "bar"):
        arms = (0.0, math.pi / 2) if shape == "cross" else (0.0,)
        for arm in arms:
            dx, dy = r * math.cos(angle + arm), r * math.sin(angle + arm)
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=fill, width=max(2, int(r / 2.5)))
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=fill)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def generate(root: str | Path, *, num_classes: int = 24, images_per_class: int = 16, image_size: int = 64,
             seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``num_classes`` x ``images_per_class`` JPEGs under ``root/images/NNN.shape_colour_texture/``.

    Returns the root. An existing set with the same arguments is kept as it is; different
    arguments need ``overwrite=True`` (so a run never silently mixes two generations).
    """
    if num_classes < 4 or images_per_class < 2 or image_size < 16:
        raise ValueError("synthetic: need num_classes >= 4, images_per_class >= 2 and image_size >= 16")
    root = Path(root).expanduser().resolve()
    meta_path = root / "synthetic.json"
    meta = {"num_classes": num_classes, "images_per_class": images_per_class, "image_size": image_size, "seed": seed}
    if meta_path.is_file():
        existing = json.loads(meta_path.read_text())
        if {k: existing.get(k) for k in meta} == meta:
            return root
        if not overwrite:
            raise DatasetError(f"synthetic: {meta_path} holds another generation {existing}; pass overwrite=True "
                               f"or use another root")
    for index in range(num_classes):
        shape, colour, texture = class_design(index)
        folder = root / "images" / f"{index + 1:03d}.{shape}_{colour}_{texture}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(images_per_class):
            rng = np.random.default_rng([seed, index, k])
            _render(index, image_size, rng).save(folder / f"{index + 1:03d}_{k:04d}.jpg", quality=90)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return root


def expected_counts(root: Path) -> ExpectedCounts:
    meta = json.loads((Path(root) / "synthetic.json").read_text())
    train_classes = meta["num_classes"] // 2
    test_classes = meta["num_classes"] - train_classes
    per = meta["images_per_class"]
    return ExpectedCounts(train_classes, train_classes * per, test_classes, test_classes * per)


def read(root: Path) -> Benchmark:
    root = require_root("synthetic", root, HOW)
    if not (root / "synthetic.json").is_file():
        raise DatasetError(f"synthetic: {root / 'synthetic.json'} not found ({HOW})")
    images = read_class_folders("synthetic", root / "images", HOW)
    return split_by_class("synthetic", images, expected_counts(root).train_classes)
