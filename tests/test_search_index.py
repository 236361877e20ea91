"""The run's search index: the job's index.faiss with the additions' index-added.faiss merged in."""

import faiss
import numpy as np
import pytest

from embeddings.cluster import build_index
from ice import run_dir as rd
from ice import search_index
from ice.errors import IceError
from ice.search_index import grow_index, ivf_lists, read_index, write_index


@pytest.mark.parametrize("n", [3_000, 260_000], ids=["exact", "ivf"])
def test_additions_go_into_their_own_file_and_search_with_the_job_s_images(tmp_path, n):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n + 2_000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    write_index(build_index(x[:n]), tmp_path / rd.INDEX)
    job_bytes = (tmp_path / rd.INDEX).read_bytes()

    added_path = tmp_path / rd.INDEX_ADDED
    assert grow_index(tmp_path, x[n : n + 1_000], n, added_path)
    assert not grow_index(tmp_path, x[n : n + 1_000], n, added_path)  # after a kill, the same add again: nothing
    # the second addition is given each row's nearest images in the run (the first addition's
    # among them), as `ice add` places it; one row has none
    _, near = faiss.knn(x[n + 1_000 :], x[: n + 1_000], 5)
    near[0] = -1
    grown = tmp_path / "grown.faiss"
    assert grow_index(tmp_path, x[n + 1_000 :], n + 1_000, grown, near)
    grown.replace(tmp_path / rd.INDEX_ADDED)
    assert (tmp_path / rd.INDEX).read_bytes() == job_bytes
    added = faiss.read_index(str(tmp_path / rd.INDEX_ADDED))
    assert added.ntotal == 2_000 and type(added) is type(faiss.read_index(str(tmp_path / rd.INDEX)))

    index = read_index(tmp_path)
    assert index.ntotal == n + 2_000
    queries = np.arange(0, n + 2_000, 97)
    _, found = index.search(x[queries], 1)
    np.testing.assert_array_equal(found[:, 0], queries)  # each image finds itself, by its image id
    if isinstance(index, faiss.IndexIVF):  # each row of the second addition: its neighbours' nearest list
        every = ivf_lists(faiss.read_index(str(tmp_path / rd.INDEX)), added)
        lists, candidates = every[n + 1_000 :], every[near]
        centres = index.quantizer.reconstruct_n(0, index.nlist)
        assert index.metric_type == faiss.METRIC_INNER_PRODUCT  # nearest: the largest inner product
        ip = (centres[candidates] * x[n + 1_000 :, None]).sum(2)
        assert lists[0] == index.quantizer.search(x[n + 1_000 : n + 1_001], 1)[1][0, 0]  # none: of every list
        np.testing.assert_array_equal(lists[1:], candidates[np.arange(1_000), ip.argmax(1)][1:])


def test_an_unreadable_additions_file_is_named_in_a_one_line_error(tmp_path):
    x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    write_index(build_index(x), tmp_path / rd.INDEX)
    (tmp_path / rd.INDEX_ADDED).write_bytes(b"not an index")
    with pytest.raises(IceError, match=r"index-added\.faiss: cannot read the search index \(.*\); rebuild") as e:
        read_index(tmp_path)
    assert "\n" not in str(e.value)


def test_above_pq_index_min_the_index_keeps_opq_and_pq_codes_and_takes_additions(tmp_path, monkeypatch):
    """The product-quantized kind (embeddings.cluster.pq_index_key), with the thresholds lowered
    from 250k and 10M to a size that trains in seconds: it is built, takes an addition in
    index-added.faiss, and the merged index finds nearly every image among its own nearest ten
    by its image id."""
    from embeddings import cluster

    assert cluster.pq_index_key(40_000_000, 64) == "OPQ32_96,IVF65536_HNSW32,PQ32x8"  # autofaiss's pick
    monkeypatch.setattr(cluster, "EXACT_INDEX_MAX", 5_000)
    monkeypatch.setattr(cluster, "PQ_INDEX_MIN", 10_000)
    n = 12_000
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n + 1_000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert cluster.pq_index_key(n, 16) == "OPQ8_24,IVF512,PQ8x8"
    write_index(build_index(x[:n]), tmp_path / rd.INDEX)
    job = faiss.read_index(str(tmp_path / rd.INDEX))
    ivf = faiss.downcast_index(faiss.extract_index_ivf(job))
    assert isinstance(job, faiss.IndexPreTransform) and isinstance(ivf, faiss.IndexIVFPQ)
    assert ivf.nprobe == cluster.INDEX_PROBES

    assert grow_index(tmp_path, x[n:], n, tmp_path / rd.INDEX_ADDED)
    assert not grow_index(tmp_path, x[n:], n, tmp_path / rd.INDEX_ADDED)
    index = read_index(tmp_path)
    assert index.ntotal == n + 1_000
    queries = np.arange(0, n + 1_000, 13)
    _, found = index.search(x[queries], 10)
    assert (found == queries[:, None]).any(1).mean() >= 0.95
    assert (found[queries >= n] >= n).any()  # the additions are searched, by their image ids

    # searched through search_index.search, the codes' best 10 k are re-scored by the rows
    assert search_index.quantized(index) and not search_index.quantized(faiss.IndexFlatIP(16))
    scores, ids = search_index.search(index, x, x[queries], 10)
    assert (ids[:, 0] == queries).all() and np.allclose(scores[:, 0], 1, atol=1e-5)
    assert np.allclose(scores, np.einsum("qkd,qd->qk", x[ids], x[queries]), atol=1e-5)  # true inner products
    exact = faiss.IndexFlatIP(16)
    exact.add(x)
    truth = exact.search(x[queries], 10)[1]
    recall = lambda got: np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(truth, got, strict=True)])  # noqa: E731
    assert recall(ids) > recall(found) + 0.1, (recall(ids), recall(found))
