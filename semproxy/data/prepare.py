"""Put a benchmark into the layout its reader expects: from archives you have, or from the official source.

Archives are verified before anything is extracted (known checksum, the member that marks the
release, no member that would land outside the root) and extracted with tarfile's ``data`` filter.
Plain files of a release (annotation and split files) are copied. Without archives, files with an
official URL are downloaded when the network allows; otherwise the error says what to fetch where.
"""
from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Sequence

from .datasets import DatasetSpec, Source, get_dataset
from .files import make_folder
from .records import DatasetError

__all__ = ["prepare", "verify_archive", "extract_archive"]

_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".zip")


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - matches the releases' published checksums, not security
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _is_archive(path: Path) -> bool:
    return path.name.endswith(_ARCHIVE_SUFFIXES)


def _members(path: Path) -> list[str]:
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                return archive.namelist()
        with tarfile.open(path) as archive:
            return [m.name + ("/" if m.isdir() else "") for m in archive.getmembers()]
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise DatasetError(f"archive {path} cannot be read: {error}") from None


def verify_archive(path: Path, source: Source, *, check_md5: bool = True) -> None:
    """Checksum (when known), the release's marker member, and no member outside the root."""
    if check_md5 and source.md5 and (got := _md5(path)) != source.md5:
        raise DatasetError(f"archive {path}: md5 {got} differs from the official {source.filename} ({source.md5}); "
                           f"pass --no-checksum for a repacked archive")
    names = _members(path)
    for name in names:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts:
            raise DatasetError(f"archive {path}: member '{name}' would be written outside the data root")
    marker = source.marker or ""
    if marker and not any(n == marker or n.startswith(marker) or n.startswith("./" + marker) for n in names):
        raise DatasetError(f"archive {path} does not look like {source.filename}: no member '{marker}'")


def extract_archive(path: Path, root: Path) -> None:
    make_folder(root, "data root")
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            archive.extractall(root)  # member paths were checked by verify_archive
    else:
        with tarfile.open(path) as archive:
            archive.extractall(root, filter="data")


def _match(spec: DatasetSpec, path: Path) -> Source:
    for source in spec.sources:
        if path.name == source.filename:
            return source
    archives = [s for s in spec.sources if s.marker]
    kind = [s for s in archives if _is_archive(Path(s.filename)) == _is_archive(path)]
    if len(kind) == 1:  # a renamed copy of the one archive (or file) of this kind
        return kind[0]
    raise DatasetError(f"{spec.name}: {path.name} is none of the release files "
                       f"({', '.join(s.filename for s in spec.sources)})")


def _download(source: Source, target: Path, spec: DatasetSpec) -> Path:
    if source.url is None:
        raise DatasetError(f"{spec.name}: {source.filename} has no direct download ({source.note}); "
                           f"fetch it and pass --archive FILE")
    make_folder(target.parent, f"{spec.name}: download folder")
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(source.url, timeout=30) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except Exception as error:  # noqa: BLE001 - offline, DNS, HTTP errors all mean "cannot download"
        partial.unlink(missing_ok=True)
        raise DatasetError(f"{spec.name}: cannot download {source.url} ({type(error).__name__}: {error}); "
                           f"download {source.filename} by hand and pass --archive FILE") from None
    partial.rename(target)
    return target


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that exists and is empty; keep the others."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (a finished download stays), or already gone
            pass


def prepare(name: str, root: str | Path, archives: Sequence[str | Path] = (), *, check_md5: bool = True,
            download: bool = True) -> Path:
    """Verify and extract ``archives`` (or download the release) into ``root``; returns the root."""
    spec = get_dataset(name)
    if not spec.sources:
        raise DatasetError(f"{name}: nothing to prepare "
                           "(generate it with: python -m semproxy.data synthetic --root DIR)")
    root = Path(root).expanduser().resolve()
    files: list[tuple[Path, Source]] = []
    for archive in archives:
        path = Path(archive).expanduser().resolve()
        if not path.is_file():
            raise DatasetError(f"{name}: archive {path} not found")
        files.append((path, _match(spec, path)))
    if not files:
        if not download:
            raise DatasetError(f"{name}: no --archive given and downloading is off")
        downloads = root / ".downloads"
        created = [downloads, *(p for p in downloads.parents if not p.exists())]  # deepest first
        try:
            files = [(_download(s, downloads / s.filename, spec), s) for s in spec.sources]
        except BaseException:
            _remove_empty(created)
            raise
    for path, source in files:  # verify everything before writing anything
        if _is_archive(path):
            verify_archive(path, source, check_md5=check_md5)
        elif check_md5 and source.md5 and _md5(path) != source.md5:
            raise DatasetError(f"{name}: {path} md5 differs from the official {source.filename}")
    for path, source in files:
        if _is_archive(path):
            extract_archive(path, root)
        else:
            shutil.copyfile(path, make_folder(root, "data root") / source.filename)
    return root
