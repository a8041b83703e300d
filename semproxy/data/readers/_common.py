"""Helpers shared by the dataset readers: list files (one-line errors for unreadable files, bad bytes and
non-integers), class folders, first-image checks."""
from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping, Optional

import numpy as np

from ..records import DatasetError, ImageList

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def require_root(name: str, root: Path, how: str) -> Path:
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{name}: data root {root} does not exist ({how})")
    return root


def first_existing(root: Path, candidates: Iterable[str]) -> Optional[Path]:
    """The first of ``root/candidate`` that exists."""
    for candidate in candidates:
        path = root / candidate
        if path.exists():
            return path
    return None


def read_lines(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 list file; an unreadable file or a bad byte is a one-line error."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise DatasetError(f"{name}: cannot read {path} ({error.strerror or error})") from None
    for number, line in enumerate(lines, start=1):
        try:
            yield number, line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DatasetError(f"{name}: {path} line {number}: byte {line[error.start]:#04x} at column "
                               f"{error.start + 1} is not UTF-8") from None


_INTEGER = re.compile(r"-?[0-9]+")


def is_integer(text: str) -> bool:
    """Whether ``int(text)`` reads ``text`` as a plain decimal integer (no spaces, signs other than -, or _)."""
    return _INTEGER.fullmatch(text) is not None


def read_rows(path: Path, name: str, columns: int, skip: int = 0,
              integers: Mapping[int, str] = MappingProxyType({})) -> list[list[str]]:
    """Whitespace-separated rows with at least ``columns`` fields, after ``skip`` header lines.

    ``integers`` maps the columns that must hold integers to what they are ({1: "class id"}); they
    are checked here, with the line, so callers can ``int()`` them. An empty list is an error.
    """
    rows = []
    for number, line in read_lines(path, name):
        if number <= skip or not line.strip():
            continue
        fields = line.split()
        if len(fields) < columns:
            raise DatasetError(f"{name}: {path} line {number}: expected {columns} fields, got '{line.strip()}'")
        for column, what in integers.items():
            if not is_integer(fields[column]):
                raise DatasetError(f"{name}: {path} line {number}: expected an integer {what} in field "
                                   f"{column + 1}, got '{fields[column]}'")
        rows.append(fields)
    if not rows:
        raise DatasetError(f"{name}: {path} lists no images")
    return rows


_LEADING_NUMBER = re.compile(r"^(\d+)")


def read_class_folders(name: str, images_dir: Path, how: str) -> ImageList:
    """Images in ``images_dir/<class>/``; the label is the folder's leading number (``001.Black_footed``)
    or, when folders have no number, the folder's position in sorted order, from 1."""
    folders = sorted(p for p in images_dir.iterdir() if p.is_dir())
    if not folders:
        raise DatasetError(f"{name}: no class folders in {images_dir} ({how})")
    numbered = all(_LEADING_NUMBER.match(f.name) for f in folders)
    paths, labels = [], []
    for position, folder in enumerate(folders, start=1):
        label = int(_LEADING_NUMBER.match(folder.name).group(1)) if numbered else position
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(image))
                labels.append(label)
    return ImageList(tuple(paths), np.asarray(labels))


def check_first_image(name: str, images: ImageList, listed_in: Path) -> None:
    """Catch a wrong root early: the first listed image must exist."""
    if len(images) == 0:
        raise DatasetError(f"{name}: {listed_in} lists no images")
    if not Path(images.paths[0]).is_file():
        raise DatasetError(f"{name}: image {images.paths[0]} listed in {listed_in} not found (is the data root right?)")
