"""The data pipeline under bad conditions: full disks, changed files, concurrent drivers, bad inputs.

Everything here uses real files: a tmpfs mounted for the test stands for a full disk (root only),
forked processes for concurrent drivers and for code that could die of SIGBUS.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import shlex
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from conftest import fill_disk
from fake_layouts import make_cub_official, make_inat, make_inshop, make_sop, write_jpeg
from semproxy.data import DatasetError, ImageList, build_eval_cache, build_train_cache, load_benchmark
from semproxy.data import cache as cache_module
from semproxy.cli.data import build_parser
from semproxy.cli.data import main as data_main
from semproxy.config import Config
from semproxy.data.cache import UnreadableImageWarning
from semproxy.data.readers import synthetic
from semproxy.prepared import resolve_data_root

SMALL_SET = dict(num_classes=6, images_per_class=3, image_size=32)
SYNTHETIC_EXPERIMENT = Path(__file__).parent.parent / "experiments" / "synthetic.yaml"


def _images(folder: Path, count: int) -> ImageList:
    """``count`` real 40 x 32 JPEGs in 4 classes."""
    paths = [folder / f"{i}.jpg" for i in range(count)]
    for i, path in enumerate(paths):
        write_jpeg(path, i, (40, 32))
    return ImageList(tuple(map(str, paths)), np.arange(count) % 4)


def _in_child(fn: Callable[[], object]) -> tuple[str, str]:
    """Run ``fn`` in a forked process; (exception type, message), ("", "") when it returned.

    A process killed by a signal (SIGBUS on a full disk) fails the test instead of killing pytest.
    """
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def run() -> None:
        try:
            fn()
            send.send(("", ""))
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            send.send((type(error).__name__, str(error)))

    process = context.Process(target=run)
    process.start()
    process.join(60)
    assert process.exitcode == 0, f"the build died with exit code {process.exitcode} (-7: SIGBUS)"
    return receive.recv()


# ---- a full disk under cache_dir ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["train", "eval"])
def test_too_little_space_is_refused_before_writing(tmp_path, small_disk, kind):
    images = _images(tmp_path / "img", 24)  # 92 kB of train pixels, 74 kB of eval crops
    disk = small_disk(64)
    build = {"train": lambda: build_train_cache(images, 32, cache_dir=disk / "cache"),
             "eval": lambda: build_eval_cache(images, 32, 32, cache_dir=disk / "cache")}[kind]
    error, message = _in_child(build)
    assert error == "DatasetError" and "\n" not in message
    assert re.match(rf"cache_dir {disk}/cache: caching {kind} images needs [\d.]+ kB, [\d.]+ kB free; ", message)
    assert os.listdir(disk / "cache") == []


@pytest.mark.parametrize("fill_when", ["after the space check", "while decoding"])
def test_a_disk_filling_up_during_the_build_is_an_error_not_sigbus(tmp_path, small_disk, fill_when):
    images = _images(tmp_path / "img", 24)
    disk = small_disk(512)  # room for the cache, until something else fills it

    def build() -> None:  # patches only the forked child's modules
        if fill_when == "while decoding":
            open_rgb = cache_module._open_rgb
            cache_module._open_rgb = lambda *args: (fill_disk(disk), open_rgb(*args))[1]
        else:
            disk_usage = shutil.disk_usage
            shutil.disk_usage = lambda path: (disk_usage(path), fill_disk(disk))[0]
        build_train_cache(images, 32, cache_dir=disk / "cache", workers=1)

    error, message = _in_child(build)
    assert error == "DatasetError" and "\n" not in message
    assert re.match(rf"cache_dir {disk}/cache: caching train images needs [\d.]+ kB, 0 B free", message)
    assert os.listdir(disk / "cache") == []  # the temporary folder is gone, its space given back


def test_an_interrupted_build_leaves_no_temporary_folder(tmp_path, monkeypatch):
    images = _images(tmp_path / "img", 8)

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "_open_rgb", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_train_cache(images, 32, cache_dir=tmp_path / "cache", workers=2)
    assert os.listdir(tmp_path / "cache") == []


def test_a_damaged_cache_folder_is_a_one_line_error(tmp_path):
    images = _images(tmp_path / "img", 4)
    (build_train_cache(images, 32, cache_dir=tmp_path / "cache").folder / "index.npz").unlink()
    with pytest.raises(DatasetError, match=r"cache folder .* exists but is incomplete \(no index.npz\); delete it"):
        build_train_cache(images, 32, cache_dir=tmp_path / "cache")


# ---- the cache follows the files' contents -------------------------------------------------------
def test_a_replaced_image_gives_a_new_cache_with_its_pixels(tmp_path):
    images = _images(tmp_path / "img", 8)
    first = build_train_cache(images, 32, cache_dir=tmp_path / "cache")
    Image.new("RGB", (40, 32), (200, 30, 30)).save(images.paths[0], quality=95)
    again = build_train_cache(images, 32, cache_dir=tmp_path / "cache")
    assert again.folder != first.folder
    assert np.abs(again.image(0).astype(int) - (200, 30, 30)).max() < 8
    assert np.array_equal(again.image(1), first.image(1))


def test_a_repaired_image_is_no_longer_skipped(tmp_path):
    images = _images(tmp_path / "img", 8)
    Path(images.paths[3]).write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.warns(UnreadableImageWarning, match="3.jpg"):
        assert len(build_train_cache(images, 32, cache_dir=tmp_path / "cache", max_bad_fraction=0.2)) == 7
    write_jpeg(Path(images.paths[3]), 3, (40, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreadableImageWarning)
        repaired = build_train_cache(images, 32, cache_dir=tmp_path / "cache", max_bad_fraction=0.2)
    assert repaired.paths == images.paths


# ---- the synthetic set: one complete generation, whatever runs beside it -------------------------
def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()  # noqa: S324 - equality only
            for p in sorted(root.rglob("*")) if p.is_file()}


def _generate_and_snapshot(root: Path, barrier, results) -> None:
    barrier.wait()
    results.put(_snapshot(synthetic.generate(root, **SMALL_SET)))


def test_concurrent_drivers_publish_one_complete_set(tmp_path):
    reference = _snapshot(synthetic.generate(tmp_path / "reference", **SMALL_SET))
    assert len(reference) == 6 * 3 + 1
    context = multiprocessing.get_context("fork")
    for round_ in range(4):
        root = tmp_path / f"round{round_}"
        barrier, results = context.Barrier(3), context.Queue()
        drivers = [context.Process(target=_generate_and_snapshot, args=(root, barrier, results)) for _ in range(3)]
        for driver in drivers:
            driver.start()
        snapshots, seen = [], []
        deadline = time.monotonic() + 60
        while len(snapshots) < len(drivers) and time.monotonic() < deadline:
            if root.exists():  # whatever is visible must already be the whole set
                seen.append(_snapshot(root))
            while not results.empty():
                snapshots.append(results.get())
            time.sleep(0.002)
        for driver in drivers:
            driver.join(10)
        assert [d.exitcode for d in drivers] == [0, 0, 0] and len(snapshots) == 3
        assert all(s == reference for s in snapshots + seen), f"round {round_}: an incomplete or different set"


@pytest.mark.parametrize("content", [b"{not json", b'{"num_classes": "six"}', b'"\xff"'])
def test_a_damaged_synthetic_json_is_a_one_line_error_naming_it(tmp_path, capsys, content):
    root = synthetic.generate(tmp_path / "set", **SMALL_SET)
    meta = root / "synthetic.json"
    meta.write_bytes(content)
    for attempt in (lambda: load_benchmark("synthetic", root), lambda: synthetic.generate(root, **SMALL_SET)):
        with pytest.raises(DatasetError) as info:
            attempt()
        assert str(meta) in str(info.value) and "\n" not in str(info.value)
    synthetic.generate(root, **SMALL_SET, overwrite=True)
    assert len(load_benchmark("synthetic", root).train.classes) == 3


def test_a_regeneration_replaces_the_whole_set_and_never_a_foreign_folder(tmp_path):
    root = synthetic.generate(tmp_path / "set", num_classes=8, images_per_class=2, image_size=16)
    synthetic.generate(root, num_classes=4, images_per_class=2, image_size=16, overwrite=True)
    benchmark = load_benchmark("synthetic", root)
    assert len(benchmark.train.classes) + len(benchmark.test.classes) == 4  # no class folders left from 8
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match=r"mine is not empty and holds no synthetic.json"):
        synthetic.generate(mine, **SMALL_SET, overwrite=True)
    assert os.listdir(mine) == ["notes.txt"]


def test_the_generate_command_makes_the_set_the_shipped_synthetic_config_asks_for(tmp_path, capsys):
    root = tmp_path / "synthetic"
    assert data_main(["synthetic", "--root", str(root)]) == 0  # the README's command, its defaults
    config = Config.load(SYNTHETIC_EXPERIMENT).replace({"data_root": str(root)})
    assert resolve_data_root(config) == root  # accepted as it is: no "another generation"
    data = config.data
    assert synthetic.read_meta(root) == {"num_classes": data.synthetic_classes, "images_per_class":
                                         data.synthetic_per_class, "image_size": data.synthetic_size, "seed": 0}


def test_another_generation_is_refused_with_the_command_that_makes_the_one_asked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = synthetic.generate(tmp_path / "my set", **SMALL_SET)
    asked = dict(num_classes=4, images_per_class=2, image_size=16, seed=3)
    with pytest.raises(DatasetError) as info:
        synthetic.generate(root, **asked)
    message = str(info.value)
    assert message.startswith("synthetic: my set/synthetic.json holds another generation (6 classes x 3 images "
                              "of 32 px, seed 0); make the one asked for with: python -m semproxy.data synthetic ")
    assert "overwrite=True" not in message and "\n" not in message
    command = shlex.split(re.fullmatch(r".*asked for with: (.+), or use another data root", message).group(1))
    assert command[:3] == ["python", "-m", "semproxy.data"]
    assert data_main(command[3:]) == 0  # the command as printed (run from here) replaces the set
    assert synthetic.generate(root, **asked) == root and synthetic.read_meta(root) == asked
    assert len(load_benchmark("synthetic", root).train.classes) == 2


# ---- one-line errors for bad inputs ----------------------------------------------------------------
@pytest.mark.parametrize("where", ["file/cache", "file"])
def test_a_cache_dir_under_a_file_is_a_one_line_error(tmp_path, where):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DatasetError, match=re.escape(f"cache_dir {tmp_path / where}: cannot create it "
                                                     f"({tmp_path / 'file'} is a file, not a folder)")):
        build_train_cache(_images(tmp_path / "img", 2), 32, cache_dir=tmp_path / where)


@pytest.mark.parametrize("name,maker,listing", [
    ("cub200", make_cub_official, "CUB_200_2011/images.txt"), ("sop", make_sop, "Info_Files/Ebay_train.txt"),
    ("inshop", make_inshop, "list_eval_partition.txt"), ("inat", make_inat, "Inaturalist_train_set1.txt"),
])
def test_an_unreadable_list_file_is_a_one_line_error(tmp_path, name, maker, listing):
    path = maker(tmp_path) / listing
    path.unlink()
    path.mkdir()  # unreadable even for root, unlike chmod 000
    with pytest.raises(DatasetError, match=re.escape(f"{name}: cannot read {path} (Is a directory)")):
        load_benchmark(name, tmp_path)


@pytest.mark.parametrize("name,maker,listing,old,new,expect", [
    ("cub200", make_cub_official, "CUB_200_2011/image_class_labels.txt", "1 1\n", "1 one\n",
     " line 1: expected an integer class id in field 2, got 'one'"),
    ("cub200", make_cub_official, "CUB_200_2011/images.txt", "2 ", "2x ",
     " line 2: expected an integer image id in field 1, got '2x'"),
    ("sop", make_sop, "Info_Files/Ebay_train.txt", "1 1 1 ", "1 1a 1 ",
     " line 2: expected an integer class id in field 2, got '1a'"),
    ("inshop", make_inshop, "list_eval_partition.txt", " id_00000001 ", " id_0000000x ",
     ": expected an item id like id_00000002, got 'id_0000000x'"),
])
def test_a_non_integer_label_names_file_and_line(tmp_path, name, maker, listing, old, new, expect):
    path = maker(tmp_path) / listing
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(DatasetError, match=re.escape(f"{name}: {path}{expect}")):
        load_benchmark(name, tmp_path)


def test_a_bad_byte_in_a_list_file_names_file_line_and_byte(tmp_path):
    path = make_cub_official(tmp_path) / "CUB_200_2011" / "images.txt"
    path.write_bytes(path.read_bytes().replace(b"Bird_1_1", b"Bird_\xe9_1", 1))
    with pytest.raises(DatasetError, match=re.escape(f"cub200: {path} line 2: byte 0xe9 at column 19 is not UTF-8")):
        load_benchmark("cub200", tmp_path)


def test_an_empty_list_file_is_a_one_line_error(tmp_path):
    path = make_sop(tmp_path) / "Info_Files" / "Ebay_train.txt"
    path.write_text("image_id class_id super_class_id path\n")
    with pytest.raises(DatasetError, match=re.escape(f"sop: {path} lists no images")):
        load_benchmark("sop", tmp_path)


def test_every_cli_flag_says_its_default():
    commands = next(a for a in build_parser()._actions if a.choices and "info" in a.choices).choices
    for command in ("prepare", "synthetic", "info"):
        for action in commands[command]._actions:
            if action.option_strings and action.dest != "help":
                text = action.help % {"default": action.default}
                assert "(required)" in text if action.required else "default: " in text, (command, action.dest)
    shipped = Config.load(SYNTHETIC_EXPERIMENT).data  # the synthetic set's defaults are the shipped config's
    assert f"(default: {shipped.synthetic_classes}, synthetic_classes of " in " ".join(
        commands["synthetic"].format_help().split())
