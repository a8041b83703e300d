"""Atomic writes and the image cache's folders get the permissions plain ``open()`` / ``mkdir`` give.

``tempfile.mkstemp`` / ``mkdtemp`` make 0600 files and 0700 folders whatever the umask; run folders
and the image cache are shared, so what is published through them must follow the umask instead.
"""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from semproxy.atomic import current_umask, replacing, write_json_atomic, write_text_atomic
from semproxy.checkpoint import load_checkpoint, save_checkpoint
from semproxy.config import Config
from semproxy.data import ImageList, build_eval_cache, build_train_cache
from semproxy.data.files import staged

from fake_layouts import write_jpeg


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    """The umask set for the test (restored after)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask
    assert current_umask() == umask  # still set: reading did not change it
    assert os.umask(umask) == umask


def test_new_atomic_files_follow_the_umask(tmp_path, umask):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = [write_text_atomic(tmp_path / "a.txt", "x"),
               write_json_atomic(tmp_path / "run" / "search.json", {"a": 1}),
               Config().dump(tmp_path / "config.yaml"), save_checkpoint(tmp_path / "trial", {"epoch": 1})]
    for path in written:
        assert _mode(path) == 0o666 & ~umask == _mode(plain), path
    assert load_checkpoint(tmp_path / "trial")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "config.yaml", "plain.txt", "run", "trial"]


def test_replaced_file_keeps_its_mode(tmp_path, umask):
    path = tmp_path / "best_config.yaml"
    path.write_text("old")
    for mode in (0o640, 0o664, 0o444):  # read-only too: the rename needs no write permission on the file
        path.chmod(mode)
        write_text_atomic(path, f"new {mode:o}")
        assert _mode(path) == mode and path.read_text() == f"new {mode:o}"
    assert [p.name for p in tmp_path.iterdir()] == ["best_config.yaml"]


def test_failed_write_keeps_the_previous_file_and_mode(tmp_path, umask):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"v": 1})
    path.chmod(0o640)
    with pytest.raises(RuntimeError):
        with replacing(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == '{\n  "v": 1\n}\n' and _mode(path) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_umask_read_is_thread_safe(tmp_path, umask):
    """Concurrent writers all see the umask set and leave it as it was."""
    errors = []

    def write(index: int) -> None:
        try:
            for k in range(20):
                path = write_text_atomic(tmp_path / f"{index}-{k}.txt", "x")
                assert _mode(path) == 0o666 & ~umask
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and current_umask() == umask


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    paths = []
    for k in range(4):
        write_jpeg(root / f"{k}.jpg", k)
        paths.append(str(root / f"{k}.jpg"))
    return ImageList(tuple(paths), np.array([1, 1, 2, 2]))


def test_cache_folders_follow_the_umask(tmp_path, umask, images):
    cache_dir = tmp_path / "cache" / "images"
    train = build_train_cache(images, 16, cache_dir=cache_dir, progress=False)
    evaluation = build_eval_cache(images, 16, 18, cache_dir=cache_dir, progress=False)
    for folder in (cache_dir, train.folder, evaluation.folder):
        assert _mode(folder) == 0o777 & ~umask, folder
    for file in (*train.folder.iterdir(), *evaluation.folder.iterdir()):
        assert _mode(file) == 0o666 & ~umask, file


def test_staged_folder_follows_the_umask_and_is_removed_on_failure(tmp_path, umask):
    with pytest.raises(KeyboardInterrupt):
        with staged(tmp_path / "target") as tmp:
            assert _mode(tmp) == 0o777 & ~umask
            raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())
