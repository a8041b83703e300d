"""Benchmarks, class-disjoint splits, class-balanced sampling, the shared image cache, batched augmentation."""
from .batch_classes import BatchClasses
from .cache import EvalImageCache, TrainImageCache, build_eval_cache, build_train_cache, default_cache_dir
from .datasets import DATASETS, DatasetSpec, get_dataset, load_benchmark
from .loader import TrainLoader, eval_batches
from .records import Benchmark, DatasetCountWarning, DatasetError, ExpectedCounts, ImageList
from .sampler import ClassBalancedBatchSampler
from .splits import DataSplits, make_splits
from .transforms import BatchAugment, eval_resize_for, normalise

__all__ = [
    "BatchClasses",
    "EvalImageCache", "TrainImageCache", "build_eval_cache", "build_train_cache", "default_cache_dir",
    "DATASETS", "DatasetSpec", "get_dataset", "load_benchmark", "TrainLoader", "eval_batches", "Benchmark",
    "DatasetCountWarning", "DatasetError", "ExpectedCounts", "ImageList", "ClassBalancedBatchSampler",
    "DataSplits", "make_splits", "BatchAugment", "eval_resize_for", "normalise",
]
