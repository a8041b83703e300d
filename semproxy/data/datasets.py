"""The benchmark registry: how to read each dataset, its standard counts, Recall@K list and sources."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..errors import ConfigError
from .readers import cars, cub, inat, inshop, sop, synthetic
from .records import Benchmark, ExpectedCounts, check_counts

__all__ = ["Source", "DatasetSpec", "DATASETS", "get_dataset", "load_benchmark"]


@dataclass(frozen=True)
class Source:
    """A file of the official release: where it comes from and how to recognise it."""

    filename: str
    url: Optional[str] = None        # None: no direct download (sign-up or a file-sharing page)
    md5: Optional[str] = None        # checked when known
    marker: Optional[str] = None     # a member an archive must contain ("" for plain files)
    note: str = ""                   # how to obtain it when there is no URL


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    read: Callable[[Path], Benchmark]
    expected: Callable[[Path], ExpectedCounts]
    recall_ks: tuple[int, ...]
    sources: tuple[Source, ...] = field(default_factory=tuple)


def _fixed(counts: ExpectedCounts) -> Callable[[Path], ExpectedCounts]:
    return lambda root: counts


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("cub200", cub.read, _fixed(cub.EXPECTED), (1, 2, 4, 8), (
        Source("CUB_200_2011.tgz", "https://data.caltech.edu/records/65de6-vhp56/files/CUB_200_2011.tgz",
               md5="97eceeb196236b17998738112f37df78", marker="CUB_200_2011/images.txt"),)),
    DatasetSpec("cars196", cars.read, _fixed(cars.EXPECTED), (1, 2, 4, 8), (
        Source("car_ims.tgz", marker="car_ims/", note="the Stanford Cars release (car_ims.tgz), e.g. from a mirror"),
        Source("cars_annos.mat", marker="", note="the annotation file of the same release")))
    ,
    DatasetSpec("sop", sop.read, _fixed(sop.EXPECTED), (1, 10, 100, 1000), (
        Source("Stanford_Online_Products.zip", "ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
               marker="Stanford_Online_Products/Info_Files/Ebay_train.txt"),)),
    DatasetSpec("inshop", inshop.read, _fixed(inshop.EXPECTED), (1, 10, 20, 30, 40, 50), (
        Source("img.zip", marker="img/", note="DeepFashion In-shop 'Img/img.zip' (Google Drive, after sign-up)"),
        Source("list_eval_partition.txt", marker="", note="DeepFashion In-shop 'Eval/list_eval_partition.txt'"))),
    DatasetSpec("inat", inat.read, _fixed(inat.EXPECTED), (1, 4, 16, 32), (
        Source("train_val2018.tar.gz",
               "https://ml-inat-competition-datasets.s3.amazonaws.com/2018/train_val2018.tar.gz",
               marker="train_val2018/"),
        Source("Inaturalist_train_set1.txt", marker="", note="the Smooth-AP split file (Brown et al. 2020)"),
        Source("Inaturalist_test_set1.txt", marker="", note="the Smooth-AP split file (Brown et al. 2020)"))),
    DatasetSpec("synthetic", synthetic.read, synthetic.expected_counts, (1, 2, 4, 8)),
)}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset '{name}' (expected one of {', '.join(DATASETS)})") from None


def load_benchmark(name: str, root: str | Path) -> Benchmark:
    """Read a benchmark's standard split and warn where its counts differ from the standard ones.

    The benchmark's ``root`` is the folder read, absolute, so that fingerprints hash image paths
    relative to it (the same data in another folder has the same fingerprint).
    """
    spec = get_dataset(name)
    benchmark = spec.read(Path(root).expanduser())
    resolved = Path(root).expanduser().resolve()
    check_counts(benchmark, spec.expected(resolved))
    return dataclasses.replace(benchmark, root=str(resolved))
