"""`prepare`: verify and extract release archives (built here) into the layout the readers expect."""
from __future__ import annotations

import dataclasses
import io
import tarfile
import zipfile

import pytest

from fake_layouts import make_cub_official, make_sop
from semproxy.data import DatasetError, load_benchmark
from semproxy.cli.data import main as data_main
from semproxy.data.datasets import DATASETS, Source
from semproxy.data.prepare import _download, prepare


def _tar_dir(source_root, archive, arcname="CUB_200_2011"):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_root / arcname, arcname=arcname)
    return archive


def test_cub_archive_is_verified_extracted_and_readable(tmp_path, capsys):
    archive = _tar_dir(make_cub_official(tmp_path / "src"), tmp_path / "CUB_200_2011.tgz")
    with pytest.raises(DatasetError, match="md5 .* differs from the official CUB_200_2011.tgz"):
        prepare("cub200", tmp_path / "data", [archive])
    assert not (tmp_path / "data").exists()  # nothing written before verification
    assert data_main(["prepare", "cub200", "--root", str(tmp_path / "data"), "--archive", str(archive),
                      "--no-checksum"]) == 0
    assert '"train"' in capsys.readouterr().out
    with pytest.warns(UserWarning):
        benchmark = load_benchmark("cub200", tmp_path / "data")
    assert benchmark.train.classes.tolist() == [1, 2]


def test_sop_zip_is_extracted(tmp_path):
    make_sop(tmp_path / "src" / "Stanford_Online_Products")
    archive = tmp_path / "Stanford_Online_Products.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in (tmp_path / "src").rglob("*"):
            z.write(path, path.relative_to(tmp_path / "src"))
    root = prepare("sop", tmp_path / "data", [archive])
    with pytest.warns(UserWarning):
        assert load_benchmark("sop", root).test.classes.tolist() == [4, 5]


def test_archive_escaping_the_root_is_refused(tmp_path):
    archive = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("CUB_200_2011/images.txt", "../evil.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DatasetError, match="'../evil.txt' would be written outside the data root"):
        prepare("cub200", tmp_path / "data", [archive], check_md5=False)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data").exists()


def test_wrong_or_broken_archives_are_refused(tmp_path):
    other = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(other, "w:gz") as tar:
        info = tarfile.TarInfo("something/else.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DatasetError, match="does not look like CUB_200_2011.tgz: no member 'CUB_200_2011/images.txt'"):
        prepare("cub200", tmp_path / "data", [other], check_md5=False)
    broken = tmp_path / "broken.tgz"
    broken.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot be read"):
        prepare("cub200", tmp_path / "data", [broken], check_md5=False)
    with pytest.raises(DatasetError, match="archive .*missing.tgz not found"):
        prepare("cub200", tmp_path / "data", [tmp_path / "missing.tgz"])


def test_offline_download_says_what_to_do(tmp_path):
    source = Source("CUB_200_2011.tgz", url="http://127.0.0.1:9/CUB_200_2011.tgz")
    from semproxy.data.datasets import get_dataset
    with pytest.raises(DatasetError, match=r"cannot download http://127.0.0.1:9/.*pass --archive FILE"):
        _download(source, tmp_path / "dl" / "CUB_200_2011.tgz", get_dataset("cub200"))
    assert not list((tmp_path / "dl").glob("*"))  # no partial file left
    with pytest.raises(DatasetError, match="has no direct download .*Google Drive"):
        prepare("inshop", tmp_path / "data")


@pytest.mark.parametrize("root_exists", [False, True])
def test_a_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch, root_exists):
    offline = Source("CUB_200_2011.tgz", url="http://127.0.0.1:9/CUB_200_2011.tgz", marker="CUB_200_2011/images.txt")
    monkeypatch.setitem(DATASETS, "cub200", dataclasses.replace(DATASETS["cub200"], sources=(offline,)))
    root = tmp_path / "data" / "cub200"
    if root_exists:
        root.mkdir(parents=True)
    with pytest.raises(DatasetError, match="cannot download"):
        prepare("cub200", root)
    assert not (root / ".downloads").exists()
    assert root.exists() == root_exists and (tmp_path / "data").exists() == root_exists  # ours removed, yours kept


def test_a_data_root_under_a_file_is_a_one_line_error(tmp_path):
    archive = _tar_dir(make_cub_official(tmp_path / "src"), tmp_path / "CUB_200_2011.tgz")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DatasetError, match=r"data root .*file/data: cannot create it \(.*file is a file, not a folder\)"):
        prepare("cub200", tmp_path / "file" / "data", [archive], check_md5=False)
