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
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ...errors import ConfigError, shown
from ..files import file_lock, make_folder, staged
from ..records import Benchmark, DatasetError, ExpectedCounts
from ._common import read_class_folders, require_root
from .cub import split_by_class

__all__ = ["generate", "generate_command", "read", "read_meta", "expected_counts", "class_design", "SEED", "SHAPES",
           "COLOURS", "TEXTURES"]

COMMAND = "python -m semproxy.data synthetic"
HOW = f"generate it with: {COMMAND} --root DIR"
SEED = 0  # the generation's seed when none is given (here and by the command line)
META = "synthetic.json"
COUNTS = ("num_classes", "images_per_class")  # what the reader needs from META
REGENERATE = "delete the root and generate it again"
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
        corners = [offset + k * math.pi / 2 for k in range(4)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            a = angle - math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        return points
    raise ValueError(shape)


def _draw_background(draw: ImageDraw.ImageDraw, size: int, texture: str, tone: np.ndarray,
                     rng: np.random.Generator) -> None:
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
             seed: int = SEED, overwrite: bool = False) -> Path:
    """Write ``num_classes`` x ``images_per_class`` JPEGs under ``root/images/NNN.shape_colour_texture/``.

    Returns the root. An existing set with the same arguments is kept as it is; different arguments
    need ``overwrite=True`` (so a run never silently mixes two generations; the refusal names the command
    line that regenerates, :func:`generate_command`), and a non-empty folder that is not a generated set
    is never replaced. The set is written to a temporary folder beside the root and renamed into place
    under a lock file beside the root (``.<root name>.lock``), so concurrent drivers generate it once and
    nobody sees half a set.
    """
    if num_classes < 4 or images_per_class < 2 or image_size < 16:
        raise ConfigError("synthetic: need num_classes >= 4, images_per_class >= 2 and image_size >= 16")
    root = Path(root).expanduser().resolve()
    meta = {"num_classes": num_classes, "images_per_class": images_per_class, "image_size": image_size, "seed": seed}
    if _holds(root, meta, overwrite):
        return root
    make_folder(root.parent, "synthetic: folder")
    with file_lock(root.parent / f".{root.name}.lock"):
        if _holds(root, meta, overwrite):  # another process generated it while this one waited
            return root
        with staged(root) as tmp:
            for index in range(num_classes):
                shape, colour, texture = class_design(index)
                folder = tmp / "images" / f"{index + 1:03d}.{shape}_{colour}_{texture}"
                folder.mkdir(parents=True)
                for k in range(images_per_class):
                    rng = np.random.default_rng([seed, index, k])
                    _render(index, image_size, rng).save(folder / f"{index + 1:03d}_{k:04d}.jpg", quality=90)
            (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
            _replace(tmp, root)
    return root


def _holds(root: Path, meta: dict, overwrite: bool) -> bool:
    """True when ``root`` holds the generation ``meta``; raises when it holds something not to replace."""
    try:
        names = os.listdir(root)  # one look: a set appears whole (by rename), so this sees all of it or none
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        raise DatasetError(f"synthetic: {root} is a file, not a folder") from None
    if META not in names:
        if names:
            raise DatasetError(f"synthetic: {root} is not empty and holds no {META}, so it is not a generated "
                               f"set; generate into an empty or new folder")
        return False
    try:
        existing = read_meta(root)
    except DatasetError:
        if overwrite:
            return False
        raise
    if {k: existing.get(k) for k in meta} == meta:
        return True
    if not overwrite:
        raise DatasetError(f"synthetic: {shown(root / META)} holds another generation ({_describe(existing)}); "
                           f"make the one asked for with: {generate_command(root, meta)}, or use another data root")
    return False


def _describe(meta: dict) -> str:
    return (f"{meta.get('num_classes')} classes x {meta.get('images_per_class')} images of "
            f"{meta.get('image_size')} px, seed {meta.get('seed')}")


def generate_command(root: Path, meta: dict) -> str:
    """The command line that replaces ``root``'s set with the generation ``meta`` (generate's arguments by
    their synthetic.json names): what a refusal tells the user to run, as a run cannot pass ``overwrite``."""
    seed = f" --seed {meta['seed']}" if meta["seed"] != SEED else ""
    return (f"{COMMAND} --root {shlex.quote(shown(root))} --classes {meta['num_classes']} "
            f"--per-class {meta['images_per_class']} --size {meta['image_size']}{seed} --overwrite")


def _replace(tmp: Path, root: Path) -> None:
    """Rename the complete set ``tmp`` to ``root``; a previous set is moved aside first, then deleted."""
    if root.is_dir() and any(root.iterdir()):
        old = tmp.with_name(tmp.name + ".old")
        root.rename(old)
        tmp.rename(root)
        shutil.rmtree(old)
    else:
        tmp.rename(root)  # replaces an empty folder


def read_meta(root: Path) -> dict:
    """The generation's arguments from ``root/synthetic.json``; a damaged file is a one-line error naming it."""
    path = Path(root) / META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        raise DatasetError(f"synthetic: {path} cannot be read ({error}); {REGENERATE}") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) and meta[k] > 0 for k in COUNTS):
        raise DatasetError(f"synthetic: {path} should be a JSON object with positive integers {', '.join(COUNTS)}; "
                           f"{REGENERATE}")
    return meta


def expected_counts(root: Path) -> ExpectedCounts:
    meta = read_meta(root)
    train_classes = meta["num_classes"] // 2
    test_classes = meta["num_classes"] - train_classes
    per = meta["images_per_class"]
    return ExpectedCounts(train_classes, train_classes * per, test_classes, test_classes * per)


def read(root: Path) -> Benchmark:
    root = require_root("synthetic", root, HOW)
    if not (root / META).is_file():
        raise DatasetError(f"synthetic: {root / META} not found ({HOW})")
    images = read_class_folders("synthetic", root / "images", HOW)
    return split_by_class("synthetic", images, expected_counts(root).train_classes)
