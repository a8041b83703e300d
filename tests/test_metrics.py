"""Retrieval metrics (semproxy.metrics) against pytorch-metric-learning and brute-force numpy.

Fixtures hold exact duplicate embeddings and lone queries (classes of one item in leave-one-out,
labels absent from the gallery in query -> gallery). Duplicates are within a class here, as with
repeated images of one product: ties between items of DIFFERENT labels make every rank-based
metric depend on how ties are broken, and PML (IndexFlatL2) and we (IndexFlatIP) need not break
them alike. Cross-label duplicates are used only in the self-exclusion test, where the answer does
not depend on tie order.

How PML is compared, apples to apples:
- PML's precision_at_1 / r_precision / mean_average_precision_at_r skip "lone" queries (no other
  item of their label in the reference), as our precision@1 / r_precision / map@r do (R = 0).
- PML has no Recall@K; ours counts every query (lone ones score 0), the DML convention, so
  recall@1 = precision@1 * num_queries / all queries. Recall@K is checked against brute force.
- PML has no counterpart of the paper's MAP@R either: brute force and hand examples only.
- PML excludes self by index too (k+1 searched, the last dropped when self is absent).
Within-class duplicates cannot tell "drop column 0" from exclusion by index (both leave the same
label sequence); test_self_excluded_by_index_not_by_column_zero uses cross-label twins for that.
"""
from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from semproxy.metrics import knn, normalise, retrieval_metrics

PML_KEYS = {"precision_at_1": "precision@1", "r_precision": "r_precision",
            "mean_average_precision_at_r": "map@r"}


def _clustered(rng: np.random.Generator, labels: np.ndarray, dim: int = 16) -> np.ndarray:
    """Class centres plus noise, so neighbours are neither random nor perfect."""
    centres = rng.normal(size=(labels.max() + 1, dim))
    return (centres[labels] + 1.2 * rng.normal(size=(len(labels), dim))).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.integers(2, 35, size=17), [1, 1, 1]])  # 20 classes, 3 lone
    labels = np.repeat(np.arange(len(sizes)), sizes)
    emb = _clustered(rng, labels)
    # exact duplicates within classes: copy 25 items onto others of their class
    for i in rng.choice(len(labels), size=25, replace=False):
        same = np.flatnonzero(labels == labels[i])
        if len(same) > 1:
            emb[rng.choice(same[same != i])] = emb[i]
    perm = rng.permutation(len(labels))
    emb, labels = emb[perm], labels[perm]
    code = rng.permutation(1000)[: len(sizes)] * 3 - 500  # arbitrary, non-contiguous, some negative
    # query -> gallery: gallery = classes 0..14; queries of classes 0..17 (15..17 absent from it)
    q_lab = rng.integers(0, 18, size=120)
    q_emb = _clustered(np.random.default_rng(1), q_lab)
    g_mask = labels < 15
    gallery, g_lab = emb[g_mask], labels[g_mask]
    q_emb[:10], q_lab[:10] = gallery[:10], g_lab[:10]    # exact copies of gallery items
    return {"emb": emb, "labels": code[labels], "gallery": gallery, "g_labels": code[g_lab],
            "queries": q_emb, "q_labels": np.where(q_lab < 15, code[q_lab], 10_000 + q_lab)}


def _unit64(x: np.ndarray) -> np.ndarray:
    """Unit rows in float64 (the brute force's own, not semproxy.metrics.normalise)."""
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_metrics(q_emb: np.ndarray, q_labels: np.ndarray, g_emb: np.ndarray, g_labels: np.ndarray,
                   ks: tuple[int, ...], leave_one_out: bool) -> dict[str, float]:
    """Textbook definitions in float64, one query at a time, from the full similarity matrix.

    Written apart from semproxy.metrics (its own normalisation, no faiss, no k): leave-one-out
    removes query i's own index i from its ranking; a K past the end simply takes every item.
    """
    sims = _unit64(q_emb) @ _unit64(g_emb).T
    rec = {k: [] for k in ks}
    ap, ap_paper, rp, p1 = [], [], [], []
    for i, y in enumerate(q_labels):
        order = np.argsort(-sims[i], kind="stable")
        if leave_one_out:
            order = order[order != i]
        rel = (g_labels[order] == y).astype(float)
        for k in ks:
            rec[k].append(rel[:k].any())
        r = int(rel.sum())             # R: positives among all retrievable items
        n = r + int(leave_one_out)     # the paper's n: class size counting the query
        if r == 0:
            if leave_one_out:
                ap_paper.append(0.0)   # the paper code averages over every query: a lone one scores 0
            continue
        prec_rel = np.cumsum(rel) / np.arange(1, len(rel) + 1) * rel  # P@i * rel_i
        ap.append(prec_rel[:r].sum() / r)
        ap_paper.append(prec_rel[:n].sum() / n)
        rp.append(rel[:r].sum() / r)
        p1.append(rel[0])
    out = {f"recall@{k}": float(np.mean(rec[k])) for k in ks}
    out.update({"map@r": np.mean(ap), "map@r_paper": np.mean(ap_paper), "r_precision": np.mean(rp),
                "precision@1": np.mean(p1), "num_queries": float(len(ap))})
    return out


def _pml(query, query_labels, reference=None, reference_labels=None) -> dict[str, float]:
    calc = AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", device=torch.device("cpu"))
    q = torch.from_numpy(normalise(query))
    if reference is None:  # leave-one-out: get_accuracy sets ref_includes_query=True
        res = calc.get_accuracy(q, torch.as_tensor(query_labels))
    else:
        res = calc.get_accuracy(q, torch.as_tensor(query_labels), torch.from_numpy(normalise(reference)),
                                torch.as_tensor(reference_labels), ref_includes_query=False)
    return {PML_KEYS[k]: v for k, v in res.items()}


KS = (1, 2, 4, 8, 30)


def test_leave_one_out_matches_pml(data):
    ours = retrieval_metrics(data["emb"], data["labels"], recall_ks=KS, use_gpu=False)
    pml = _pml(data["emb"], data["labels"])
    for key, value in pml.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key
    lone = np.unique(data["labels"], return_counts=True)[1] == 1
    assert ours["num_queries"] == len(data["labels"]) - lone.sum() > 0 and lone.sum() == 3
    # Recall@1 counts the lone queries (as misses); PML's precision_at_1 leaves them out.
    assert ours["recall@1"] == pytest.approx(ours["precision@1"] * ours["num_queries"] / len(data["labels"]))


def test_query_gallery_matches_pml(data):
    ours = retrieval_metrics(data["gallery"], data["g_labels"], recall_ks=KS, use_gpu=False,
                             query_embeddings=data["queries"], query_labels=data["q_labels"])
    pml = _pml(data["queries"], data["q_labels"], data["gallery"], data["g_labels"])
    for key, value in pml.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key
    assert ours["num_queries"] == (data["q_labels"] < 10_000).sum() < len(data["q_labels"])
    assert ours["map@r_paper"] == ours["map@r"]  # the query is not in the gallery: R_incl = R


def test_leave_one_out_matches_brute_force(data):
    ours = retrieval_metrics(torch.from_numpy(data["emb"]), torch.from_numpy(data["labels"]),
                             recall_ks=KS, use_gpu=False)
    brute = _brute_metrics(data["emb"], data["labels"], data["emb"], data["labels"], KS, leave_one_out=True)
    assert ours == pytest.approx(brute, abs=1e-9)
    assert ours["map@r_paper"] < ours["map@r"]


def test_query_gallery_matches_brute_force(data):
    ours = retrieval_metrics(data["gallery"], data["g_labels"], recall_ks=KS, use_gpu=False,
                             query_embeddings=data["queries"], query_labels=data["q_labels"])
    brute = _brute_metrics(data["queries"], data["q_labels"], data["gallery"], data["g_labels"], KS, False)
    assert ours == pytest.approx(brute, abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_random_sets_match_brute_force(seed):
    # Small random sets: classes of one item, labels absent from the gallery, K past the gallery.
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([rng.integers(1, 8, size=rng.integers(3, 9)), [1, 1]])
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    emb = _clustered(rng, labels, dim=8)
    ks = (1, 2, 5, len(labels) + 3)
    ours = retrieval_metrics(emb, labels, recall_ks=ks, use_gpu=False)
    assert ours == pytest.approx(_brute_metrics(emb, labels, emb, labels, ks, True), abs=1e-9)
    # query -> gallery: ~40% of the items query the rest; the two lone classes only query
    is_query = (rng.random(len(labels)) < 0.4) | (labels >= len(sizes) - 2)
    q, g = (emb[is_query], labels[is_query]), (emb[~is_query], labels[~is_query])
    ours = retrieval_metrics(*g, recall_ks=ks, query_embeddings=q[0], query_labels=q[1], use_gpu=False)
    assert ours == pytest.approx(_brute_metrics(*q, *g, ks, False), abs=1e-9)
    assert ours["map@r_paper"] == ours["map@r"]


def test_paper_variant_averages_over_the_class_size_window():
    # Query 0's neighbours are item 2 (other label) then item 1: rel = (0, 1), n = 2, so
    # (1/2) * (P@2 * rel_2) = (1/2) * (1/2); a window of R = 1 neighbour would score 0.
    emb = np.array([[1, 0], [0, 1], [0.7071, 0.7071]], dtype=np.float32)
    m = retrieval_metrics(emb, np.array([0, 0, 1]), use_gpu=False)
    # Query 1 likewise scores 1/4; item 2 is alone in its class: it scores 0 and counts (the paper code's mean).
    assert m["map@r_paper"] == pytest.approx((0.25 + 0.25 + 0) / 3) and m["map@r"] == 0.0 and m["num_queries"] == 2
    # One class over the whole set: the window n = 4 exceeds the 3 other items and is cut there.
    one = retrieval_metrics(np.random.default_rng(0).normal(size=(4, 3)), np.zeros(4, int), use_gpu=False)
    assert one["map@r"] == 1.0 and one["map@r_paper"] == pytest.approx(3 / 4)


def test_recall_never_counts_queries_without_a_positive():
    # No query has a same-class item, so no K, however far past the gallery, finds one.
    emb, labels = np.array([[1, 0], [0.6, 0.8]], dtype=np.float32), np.array([3, 4])
    m = retrieval_metrics(emb, labels, recall_ks=(1, 2, 10), use_gpu=False)
    assert m["recall@1"] == m["recall@2"] == m["recall@10"] == 0.0
    qg = retrieval_metrics(emb, labels, recall_ks=(1, 3), query_embeddings=emb[:1], query_labels=np.array([5]),
                           use_gpu=False)
    assert qg["recall@1"] == qg["recall@3"] == 0.0


def test_bfloat16_equals_float32_of_the_rounded_values(data):
    def run(x: torch.Tensor) -> tuple[dict[str, float], dict[str, float], np.ndarray, np.ndarray]:
        """Leave-one-out, the first 50 items querying the rest, normalise and knn."""
        y = data["labels"]
        return (retrieval_metrics(x, y, recall_ks=KS, use_gpu=False),
                retrieval_metrics(x[50:], y[50:], recall_ks=KS, query_embeddings=x[:50], query_labels=y[:50],
                                  use_gpu=False),
                normalise(x), knn(x, 5, use_gpu=False)[1])

    bf16 = torch.from_numpy(data["emb"]).to(torch.bfloat16)
    got, want = run(bf16), run(bf16.float())
    assert got[:2] == want[:2]
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(got[3], want[3])


def test_paper_variant_perfect_ranking_scores_n_minus_1_over_n():
    labels = np.repeat([3, 7, 11], [2, 4, 5])
    emb = np.eye(3, dtype=np.float32)[np.searchsorted([3, 7, 11], labels)]  # each class one point
    m = retrieval_metrics(emb, labels, use_gpu=False)
    assert m["map@r"] == pytest.approx(1.0)
    assert m["map@r_paper"] == pytest.approx(np.mean(np.repeat([1 / 2, 3 / 4, 4 / 5], [2, 4, 5])))


def test_self_excluded_by_index_not_by_column_zero():
    # Items 0 (label 0) and 1 (label 1) are the same vector: identical queries get the same ranked
    # list, so for one of them faiss ranks the twin before itself. Dropping column 0 would then
    # keep that query as its own nearest neighbour and count a hit.
    emb = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0.1], [0, 1, -0.1]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1])
    sims, idx = knn(emb, 2, use_gpu=False)
    assert not (idx == np.arange(4)[:, None]).any()
    assert set(idx[:2, 0]) == {0, 1}  # each twin's nearest is the other twin
    raw = faiss.IndexFlatIP(3)
    raw.add(normalise(emb))
    _, raw_idx = raw.search(normalise(emb[:2]), 3)
    naive_top1 = raw_idx[:, 1]  # "search k+1, drop column 0"
    assert (naive_top1 == np.arange(2)).any(), "faiss put self first for both twins: test is void"
    m = retrieval_metrics(emb, labels, recall_ks=(1,), use_gpu=False)
    assert m["recall@1"] == 0.0  # by index: every item's nearest has the other label
    naive = np.mean(labels[naive_top1] == labels[:2])
    assert naive > 0.0


def test_self_beyond_k_plus_one_drops_last_column():
    # 5 exact copies of one class and k = 2 (Recall@2, classes of two): self may be outside the k+1.
    emb = np.vstack([np.tile([1.0, 0.0], (5, 1)), [[0.0, 1.0]] * 2]).astype(np.float32)
    labels = np.array([0, 0, 0, 0, 0, 1, 1])
    sims, idx = knn(emb, 3, use_gpu=False)
    assert not (idx == np.arange(7)[:, None]).any()
    assert (labels[idx[:5]] == 0).all()


def test_chunking_gives_identical_results(data):
    kwargs = dict(recall_ks=KS, use_gpu=False)
    big = retrieval_metrics(data["emb"], data["labels"], chunk_size=100_000, **kwargs)
    # same neighbours; only the float summation order differs
    assert retrieval_metrics(data["emb"], data["labels"], chunk_size=7, **kwargs) == pytest.approx(big, rel=1e-12)
    qg = dict(query_embeddings=data["queries"], query_labels=data["q_labels"], **kwargs)
    assert (retrieval_metrics(data["gallery"], data["g_labels"], chunk_size=7, **qg)
            == pytest.approx(retrieval_metrics(data["gallery"], data["g_labels"], chunk_size=100_000, **qg), rel=1e-12))
    np.testing.assert_array_equal(knn(data["emb"], 40, chunk_size=7, use_gpu=False)[1],
                                  knn(data["emb"], 40, chunk_size=100_000, use_gpu=False)[1])


def test_k_capped_by_gallery_and_inputs_validated():
    emb = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2])
    m = retrieval_metrics(emb, labels, recall_ks=(1, 1000), use_gpu=False)
    assert m["recall@1000"] == 1.0  # every query has a positive among the 5 others
    with pytest.raises(ValueError):
        retrieval_metrics(np.full((3, 2), np.nan), labels[:3], use_gpu=False)
    with pytest.raises(ValueError):
        retrieval_metrics(emb, labels[:5], use_gpu=False)
    with pytest.raises(ValueError):
        retrieval_metrics(emb, labels, query_embeddings=emb, use_gpu=False)


@pytest.mark.gpu
@pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="faiss sees no GPU (faiss-gpu is not installed)")
def test_gpu_equals_cpu(data):
    cpu = retrieval_metrics(data["emb"], data["labels"], recall_ks=KS, use_gpu=False, chunk_size=50)
    gpu = retrieval_metrics(data["emb"], data["labels"], recall_ks=KS, use_gpu=True, chunk_size=50)
    assert gpu == pytest.approx(cpu, abs=1e-9)
    s_cpu, i_cpu = knn(data["emb"], 10, use_gpu=False)
    s_gpu, i_gpu = knn(data["emb"], 10, use_gpu=True)
    np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-5)


def test_a_runs_knn_search_stays_on_its_own_device():
    """A CPU run never searches on a GPU (a CPU trial on a GPU machine may see every GPU); a GPU run
    searches on its own GPU, not on GPU 0."""
    from semproxy.evaluation import knn_device

    assert knn_device(torch.device("cpu")) == {"use_gpu": False}
    assert knn_device(torch.device("cuda", 1)) == {"use_gpu": None, "gpu_device": 1}
