"""Retrieval metrics over L2-normalised embeddings: Recall@K, Precision@1, MAP@R, R-Precision (method.md §6).

Neighbours are found by exact kNN in faiss (``IndexFlatIP``; inner product = cosine similarity on
unit vectors), on the GPU when faiss has one, else on the CPU. Queries are searched in chunks and
every metric is accumulated chunk by chunk, so memory stays O(chunk_size * k) plus the gallery: no
N x N similarity matrix and no N x k neighbour table is ever built (SOP: 60k x 384, k up to 1000).

Two modes:

* leave-one-out (``query_embeddings is None``; CUB, Cars, SOP, iNat): every item queries all the
  others. Self is excluded BY INDEX: k+1 neighbours are searched, the query's own index is removed
  wherever it sits (the last column when it is not among them), and the first k remain. Dropping
  column 0 instead is wrong when duplicate embeddings tie with the query and faiss ranks a
  duplicate first.
* query -> gallery (InShop): separate query and gallery sets; nothing is excluded.

Definitions, for a query q with R = number of gallery items of q's label (q itself not counted) and
rel_i = 1 when the i-th neighbour has q's label:

* ``recall@K``: fraction of ALL queries with rel_i = 1 for some i <= K. Queries with R = 0 count and
  score 0. This is the DML convention (Oh Song et al. 2016, Proxy-Anchor's ``calc_recall_at_k``);
  PML has no Recall@K. K larger than the retrievable items means all of them (a query with no
  positive among them never counts as a hit).
* ``precision@1``: mean of rel_1 over the queries with R > 0 (PML's ``precision_at_1``, which also
  leaves out "lone" queries). It equals ``recall@1`` when no query is lone.
* ``map@r`` (Musgrave et al. 2020): mean over queries with R > 0 of (1/R) sum_{i<=R} P@i * rel_i,
  P@i = (1/i) sum_{j<=i} rel_j.
* ``r_precision``: mean over queries with R > 0 of (1/R) sum_{i<=R} rel_i.
* ``map@r_paper``: the paper code's variant, with n = class size INCLUDING the query = R + 1 in
  leave-one-out: (1/n) sum_{i<=n} P@i * rel_i over the first n neighbours (self excluded; fewer when
  only n - 1 exist), so a perfect ranking of a class of n scores (n-1)/n. Averaged over ALL queries,
  as the paper code does: a lone query (a class of one image) scores 0. In query -> gallery mode the
  query is not in the gallery, n = R and it equals ``map@r``.
* ``num_queries``: number of queries with R > 0 (those averaged by ``precision@1``, ``map@r`` and
  ``r_precision``).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Union

import faiss
import numpy as np
import torch

__all__ = ["normalise", "knn", "retrieval_metrics"]

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[Any]]

#: Largest k a faiss GPU flat index can return (faiss/gpu/utils/DeviceDefs.cuh, GPU_MAX_SELECTION_K).
GPU_MAX_K = 2048


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Tensors and sequences as numpy; floating tensors as float32 (numpy has no bfloat16)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def normalise(embeddings: ArrayLike) -> np.ndarray:
    """Return (N, D) embeddings as a C-contiguous float32 numpy array with unit L2 rows.

    Accepts numpy arrays, sequences and torch tensors of any floating dtype (bfloat16 included).
    Zero rows stay zero. Non-finite values raise: a NaN embedding would silently poison the search.
    """
    x = np.ascontiguousarray(_to_numpy(embeddings), dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def _labels(labels: ArrayLike, n: int, name: str) -> np.ndarray:
    y = _to_numpy(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be 1-D with one label per embedding ({n}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got {y.dtype}")
    return y.astype(np.int64, copy=False)


def _resolve_gpu(use_gpu: bool | None, k_search: int) -> bool:
    """Decide where to search: GPU if asked (or available when ``None``) and k fits a GPU index."""
    num_gpus = faiss.get_num_gpus()  # 0 with faiss-cpu
    if use_gpu and num_gpus == 0:
        raise RuntimeError("use_gpu=True but faiss sees no GPU (is faiss-gpu installed?)")
    gpu = num_gpus > 0 if use_gpu is None else use_gpu
    if gpu and k_search > GPU_MAX_K:
        warnings.warn(f"k={k_search} exceeds the faiss GPU limit {GPU_MAX_K}; searching on the CPU", stacklevel=3)
        gpu = False
    return gpu


def _iter_knn(
    gallery: np.ndarray, queries: np.ndarray | None, k: int, chunk_size: int, use_gpu: bool | None,
    gpu_device: int = 0,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, sims, idx)`` per chunk of queries: the k most similar gallery items, best first.

    Inputs are already normalised. ``queries is None`` means leave-one-out over ``gallery``: k+1
    are searched and each query's own index is removed wherever it appears; when it is not among
    the k+1 (more than k exact duplicates outranked it) the last column is dropped instead.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    leave_one_out = queries is None
    n_gallery = len(gallery)
    k_search = k + 1 if leave_one_out else k
    if k < 1 or k_search > n_gallery:
        raise ValueError(f"k={k} is out of range for a gallery of {n_gallery} (leave-one-out: {leave_one_out})")
    index: Any = faiss.IndexFlatIP(gallery.shape[1])
    resources = None
    if _resolve_gpu(use_gpu, k_search):
        resources = faiss.StandardGpuResources()  # kept alive as long as the GPU index
        index = faiss.index_cpu_to_gpu(resources, gpu_device, index)
    index.add(gallery)
    source = gallery if leave_one_out else queries
    for start in range(0, len(source), chunk_size):
        chunk = source[start:start + chunk_size]
        sims, idx = index.search(chunk, k_search)
        if leave_one_out:
            rows = np.arange(start, start + len(chunk))
            drop = idx == rows[:, None]
            drop[~drop.any(axis=1), -1] = True  # self not retrieved: drop the k+1-th instead
            keep = ~drop
            sims = sims[keep].reshape(len(chunk), k)
            idx = idx[keep].reshape(len(chunk), k)
        yield start, sims, idx
    del index, resources


def knn(
    embeddings: ArrayLike,
    k: int,
    *,
    query_embeddings: ArrayLike | None = None,
    chunk_size: int = 4096,
    use_gpu: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine kNN: ``(similarities, indices)``, each (num_queries, k), most similar first.

    Args:
        embeddings: (N, D) gallery; also the queries (leave-one-out, self excluded by index) when
            ``query_embeddings`` is None.
        k: neighbours per query (at most N - 1 in leave-one-out, N otherwise).
        query_embeddings: (M, D) queries searched against ``embeddings``; nothing is excluded.
        chunk_size: queries searched per faiss call (bounds the temporary memory).
        use_gpu: True forces the GPU, False the CPU, None uses the GPU when faiss sees one.
    Both inputs are L2-normalised first. This materialises (M, k) arrays; the metrics do not.
    """
    gallery = normalise(embeddings)
    queries = None if query_embeddings is None else normalise(query_embeddings)
    parts = list(_iter_knn(gallery, queries, k, chunk_size, use_gpu))
    if not parts:
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def _positives_per_query(query_labels: np.ndarray, gallery_labels: np.ndarray, leave_one_out: bool) -> np.ndarray:
    """R per query: gallery items sharing its label, the query itself not counted."""
    classes, counts = np.unique(gallery_labels, return_counts=True)
    pos = np.minimum(np.searchsorted(classes, query_labels), len(classes) - 1)
    r = np.where(classes[pos] == query_labels, counts[pos], 0)
    return r - 1 if leave_one_out else r


def _retrieval_sets(embeddings: ArrayLike, labels: ArrayLike, query_embeddings: ArrayLike | None,
                    query_labels: ArrayLike | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Normalised gallery, its labels, the queries (None: leave-one-out) and their labels, checked."""
    gallery = normalise(embeddings)
    if len(gallery) == 0:
        raise ValueError("the gallery is empty")
    g_labels = _labels(labels, len(gallery), "labels")
    if query_embeddings is None:
        return gallery, g_labels, None, g_labels
    queries = normalise(query_embeddings)
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"query width {queries.shape[1]} != gallery width {gallery.shape[1]}")
    return gallery, g_labels, queries, _labels(query_labels, len(queries), "query_labels")


def _rank_sums(same: np.ndarray, r: np.ndarray, n: np.ndarray, k: int) -> np.ndarray:
    """P@1, AP@R, the paper's AP (window n) and R-precision, summed over the queries with R > 0.

    ``same`` is the (chunk, k) relevance of each query's neighbours; prefix sums over ranks give
    every windowed metric at once (R <= k always; the paper's window R + 1 may exceed k).
    """
    has_pos = r > 0
    if not has_pos.any():
        return np.zeros(4)
    r, n = r[has_pos], n[has_pos]
    window = np.minimum(n, k)
    same = same[has_pos, : int(window.max())]
    cum = np.cumsum(same, axis=1, dtype=np.float64)                              # sum_{j<=i} rel_j
    prec_cum = np.cumsum(cum * same / np.arange(1, same.shape[1] + 1), axis=1)  # sum_{j<=i} P@j * rel_j
    rows = np.arange(len(r))
    return np.array([same[:, 0].sum(), (prec_cum[rows, r - 1] / r).sum(), (prec_cum[rows, window - 1] / n).sum(),
                     (cum[rows, r - 1] / r).sum()], dtype=np.float64)


def retrieval_metrics(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    recall_ks: Sequence[int] = (1, 2, 4, 8),
    query_embeddings: ArrayLike | None = None,
    query_labels: ArrayLike | None = None,
    chunk_size: int = 4096,
    use_gpu: bool | None = None,
    gpu_device: int = 0,
) -> dict[str, float]:
    """Recall@K, Precision@1, MAP@R, R-Precision and the paper's MAP@R (see the module docstring).

    Args:
        embeddings, labels: the evaluation set in leave-one-out mode, or the gallery when
            ``query_embeddings``/``query_labels`` are given (query -> gallery, e.g. InShop).
            Embeddings are numpy or torch of any floating dtype (see ``normalise``); labels
            are any integers, not necessarily contiguous.
        recall_ks: the K of Recall@K (e.g. (1, 10, 100, 1000) for SOP).
        chunk_size: queries per faiss search; memory is O(chunk_size * k).
        use_gpu: True / False / None (= GPU when faiss sees one).
        gpu_device: the CUDA device a GPU search runs on (the run's, as torch numbers them).
    Returns:
        ``{"recall@K": ..., "precision@1", "map@r", "r_precision", "map@r_paper", "num_queries"}``,
        all floats; those averaged over the queries with R > 0 are NaN when no query has one (then
        ``map@r_paper``, averaged over every query, is 0 in leave-one-out).
    """
    if (query_embeddings is None) != (query_labels is None):
        raise ValueError("give both query_embeddings and query_labels, or neither")
    if not recall_ks or min(recall_ks) < 1:
        raise ValueError(f"recall_ks must be positive integers, got {recall_ks}")
    leave_one_out = query_embeddings is None
    gallery, g_labels, queries, q_labels = _retrieval_sets(embeddings, labels, query_embeddings, query_labels)
    r_all = _positives_per_query(q_labels, g_labels, leave_one_out)
    n_all = r_all + int(leave_one_out)  # the paper's n: R, plus the query when it is in the gallery
    available = len(gallery) - int(leave_one_out)
    k = min(max(int(n_all.max(initial=0)), max(recall_ks)), available)
    # Sentinel rank for "no positive among the k searched": k is either >= every K or all the
    # retrievable items, so such a query has no hit at any K.
    no_hit = max(recall_ks)

    hits = {kk: 0 for kk in recall_ks}
    sums = np.zeros(4)  # P@1, AP@R, the paper's AP, R-precision, summed over queries with R > 0
    for start, _, idx in _iter_knn(gallery, queries, k, chunk_size, use_gpu, gpu_device):
        stop = start + len(idx)
        same = g_labels[idx] == q_labels[start:stop, None]                    # (chunk, k) rel_i
        first_hit = np.where(same.any(axis=1), same.argmax(axis=1), no_hit)  # 0-based rank of first positive
        for kk in recall_ks:
            hits[kk] += int((first_hit < kk).sum())
        sums += _rank_sums(same, r_all[start:stop], n_all[start:stop], k)
    p1, ap, ap_paper, r_prec = sums.tolist()

    n_total, n_pos = len(q_labels), int((r_all > 0).sum())
    out = {f"recall@{kk}": hits[kk] / n_total if n_total else float("nan") for kk in recall_ks}
    per_pos = (lambda s: s / n_pos) if n_pos else (lambda s: float("nan"))
    out.update({
        "precision@1": per_pos(p1), "map@r": per_pos(ap), "r_precision": per_pos(r_prec),
        "map@r_paper": (ap_paper / n_total if n_total else float("nan")) if leave_one_out else per_pos(ap_paper),
        "num_queries": float(n_pos),
    })
    return out
