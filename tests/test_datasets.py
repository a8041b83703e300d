"""Readers for each real layout, count warnings, one-line errors, and class-disjoint splits."""
from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import pytest

from fake_layouts import make_cars_official, make_class_folders, make_cub_official, make_inat, make_inshop, make_sop
from semproxy.config import ConfigError
from semproxy.data import DatasetCountWarning, DatasetError, ImageList, load_benchmark, make_splits
from semproxy.cli.data import main as data_main
from semproxy.data.readers import synthetic


def _load(name, root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetCountWarning)
        benchmark = load_benchmark(name, root)
    return benchmark, [str(w.message) for w in caught if issubclass(w.category, DatasetCountWarning)]


@pytest.mark.parametrize("maker", [make_cub_official, make_class_folders])
def test_cub_layouts(tmp_path, maker):
    benchmark, messages = _load("cub200", maker(tmp_path))
    assert benchmark.train.classes.tolist() == [1, 2] and benchmark.test.classes.tolist() == [101, 102]
    assert len(benchmark.train) == 6 and all(Path(p).is_file() for p in benchmark.train.paths)
    assert "cub200: found 6 training images, expected 5,864" in messages
    assert "cub200: found 2 test classes, expected 100" in messages


@pytest.mark.parametrize("maker", [make_cars_official, make_class_folders])
def test_cars_layouts(tmp_path, maker):
    root = maker(tmp_path) if maker is make_cars_official else maker(tmp_path, classes=(1, 2, 99, 100))
    benchmark, messages = _load("cars196", root)
    assert benchmark.train.classes.tolist() == [1, 2] and benchmark.test.classes.tolist() == [99, 100]
    assert "cars196: found 2 training classes, expected 98" in messages


def test_sop(tmp_path):
    benchmark, messages = _load("sop", make_sop(tmp_path))
    assert benchmark.train.classes.tolist() == [1, 2, 3] and benchmark.test.classes.tolist() == [4, 5]
    assert all(Path(p).is_file() for p in benchmark.test.paths)
    assert "sop: found 6 training images, expected 59,551" in messages


def test_inshop_query_gallery_share_item_ids(tmp_path):
    benchmark, messages = _load("inshop", make_inshop(tmp_path))
    assert benchmark.train.classes.tolist() == [1, 2]
    assert benchmark.test.classes.tolist() == [7, 9] and benchmark.gallery.classes.tolist() == [7, 9]
    assert (len(benchmark.test), len(benchmark.gallery)) == (3, 3)
    assert "inshop: found 3 gallery images, expected 12,612" in messages


def test_inat_smooth_ap_split(tmp_path):
    benchmark, _ = _load("inat", make_inat(tmp_path))
    assert benchmark.train.classes.tolist() == [7477, 7478] and benchmark.test.classes.tolist() == [9001, 9002]


def test_synthetic_counts_match_without_warning(tmp_path):
    synthetic.generate(tmp_path, num_classes=6, images_per_class=3, image_size=32)
    benchmark, messages = _load("synthetic", tmp_path)
    assert messages == []
    assert len(benchmark.train.classes) == 3 and len(benchmark.test) == 9


def test_synthetic_generation_is_deterministic(tmp_path):
    a = synthetic.generate(tmp_path / "a", num_classes=4, images_per_class=2, image_size=32, seed=3)
    b = synthetic.generate(tmp_path / "b", num_classes=4, images_per_class=2, image_size=32, seed=3)
    files_a, files_b = sorted(a.rglob("*.jpg")), sorted(b.rglob("*.jpg"))
    assert [f.relative_to(a) for f in files_a] == [f.relative_to(b) for f in files_b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(files_a, files_b))
    with pytest.raises(DatasetError, match="another generation"):
        synthetic.generate(tmp_path / "a", num_classes=5, images_per_class=2, image_size=32, seed=3)


@pytest.mark.parametrize("name,expect", [
    ("cub200", "CUB_200_2011"), ("cars196", "cars_annos.mat"), ("sop", "Info_Files"),
    ("inshop", "list_eval_partition.txt"), ("inat", "Inaturalist_train_set1.txt"), ("synthetic", "synthetic.json"),
])
def test_empty_root_is_a_one_line_error_saying_what_and_how(tmp_path, name, expect):
    with pytest.raises(DatasetError) as info:
        load_benchmark(name, tmp_path)
    message = str(info.value)
    assert "\n" not in message and expect in message and str(tmp_path) in message
    assert "python -m semproxy.data" in message


def test_missing_root_and_wrong_root(tmp_path):
    with pytest.raises(DatasetError, match=r"cub200: data root .*nowhere does not exist"):
        load_benchmark("cub200", tmp_path / "nowhere")
    root = make_sop(tmp_path / "sop")
    for image in root.rglob("*.JPG"):
        image.unlink()
    with pytest.raises(DatasetError, match="listed in .*Ebay_train.txt not found"):
        load_benchmark("sop", root)


def test_malformed_list_names_file_and_line(tmp_path):
    root = make_cub_official(tmp_path)
    (root / "CUB_200_2011" / "image_class_labels.txt").write_text("1\n")
    with pytest.raises(DatasetError, match=r"image_class_labels.txt line 1: expected 2 fields"):
        load_benchmark("cub200", root)


# ---- splits -------------------------------------------------------------------------------------
def test_validation_is_carved_from_training_classes(tmp_path):
    root = make_class_folders(tmp_path, classes=tuple(range(1, 11)) + (101, 102))
    benchmark, _ = _load("cub200", root)
    splits = make_splits(benchmark, 0.2)
    assert splits.train.classes.tolist() == list(range(1, 9)) and splits.val.classes.tolist() == [9, 10]
    train, val, test = (set(s.classes.tolist()) for s in (splits.train, splits.val, splits.test))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(splits.train) + len(splits.val) == len(benchmark.train)
    assert make_splits(benchmark, 0.2).fingerprint() == splits.fingerprint()
    final = make_splits(benchmark, 0.0)
    assert final.val is None and len(final.train) == len(benchmark.train)
    with pytest.raises(ConfigError, match="needs at least 2"):
        make_splits(benchmark, 0.05)


def _info(root, capsys) -> dict:
    assert data_main(["info", "synthetic", "--root", str(root)]) == 0
    return json.loads(capsys.readouterr().out)


def test_fingerprint_identifies_the_data_not_its_folder(tmp_path, capsys, monkeypatch):
    original = synthetic.generate(tmp_path / "a" / "synthetic", num_classes=20, images_per_class=2, image_size=32)
    copy = Path(shutil.copytree(original, tmp_path / "elsewhere" / "deeper" / "copy"))
    fingerprint = _info(original, capsys)
    assert _info(copy, capsys) == fingerprint
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert _info("deeper/copy", capsys) == fingerprint  # a relative root, a symlinked one: the same data
    (tmp_path / "link").symlink_to(copy)
    assert _info(tmp_path / "link", capsys) == fingerprint
    for val_fraction in (0.0, 0.5):  # each split's files are hashed, as before
        splits = [make_splits(load_benchmark("synthetic", root), val_fraction) for root in (original, copy)]
        assert splits[0].fingerprint() == splits[1].fingerprint() != fingerprint

    image = next((copy / "images").glob("002.*/*.jpg"))
    image.rename(image.with_name("renamed.jpg"))  # one file's name changed: other data
    renamed = _info(copy, capsys)
    assert renamed["counts"] == fingerprint["counts"] and renamed["files_sha256"] != fingerprint["files_sha256"]

    splits = make_splits(load_benchmark("synthetic", original), 0.2)
    labels = splits.train.labels.copy()
    labels[0] = labels[-1]  # one image's label changed, same files and counts
    relabelled = dataclasses.replace(splits, train=ImageList(splits.train.paths, labels))
    assert relabelled.fingerprint()["files_sha256"] != splits.fingerprint()["files_sha256"]
    assert splits.fingerprint() == fingerprint


def test_cli_info_and_errors(tmp_path, capsys):
    synthetic.generate(tmp_path, num_classes=20, images_per_class=2, image_size=32)
    assert data_main(["info", "synthetic", "--root", str(tmp_path)]) == 0
    assert '"val": {' in capsys.readouterr().out
    assert data_main(["info", "cub200", "--root", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: cub200: data root")
