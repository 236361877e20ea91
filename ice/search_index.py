"""The run's search index: index.faiss, which the job builds over its images, and
index-added.faiss, which holds the images `ice add` brought since. An addition then writes only
its own part, never the job's index again (265 MB at 1M images); a reader merges the two.

index-added.faiss is the same kind of index as index.faiss: exact, or IVF on index.faiss's own
lists (its coarse quantizer is copied), so that the merged index searches as one.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import numpy as np

from . import run_dir as rd
from .errors import IceError


def read_index(run_dir: Path):
    """The index over every image of the run, image ids in order: the job's with the
    additions' merged in. IceError naming the file where one cannot be read."""
    import faiss

    index = _read(run_dir / rd.INDEX)
    path = run_dir / rd.INDEX_ADDED
    if path.exists():
        added = _read(path)
        if isinstance(index, faiss.IndexPreTransform):  # OPQ + IVF-PQ: the lists are the inner index's
            faiss.extract_index_ivf(index).merge_from(faiss.extract_index_ivf(added), index.ntotal)
            index.ntotal = faiss.extract_index_ivf(index).ntotal
        else:
            # an IVF index stores ids: shift the additions' after the job's; an exact one numbers its rows
            index.merge_from(added, index.ntotal if isinstance(index, faiss.IndexIVF) else 0)
    return index


REFINE = 10  # an index of codes is asked for this many times k, which the rows then re-score


def quantized(index) -> bool:
    """Whether `index` keeps codes (OPQ + IVF-PQ) rather than the rows: its scores approximate."""
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    return isinstance(inner, faiss.IndexIVFPQ)


def search(index, embeddings, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """index.search(queries, k): (scores (q, k) float32, ids (q, k) int64, -1 where fewer are
    found). For an index of codes, its REFINE * k best are read from `embeddings` (the run's
    rows, memory-mapped) and ordered by their true inner products with the query: the codes
    alone find about half of the true 10 nearest (BENCHMARKS.md, index_bench)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not quantized(index):
        return index.search(queries, k)
    _, found = index.search(queries, min(REFINE * k, index.ntotal))
    scores = np.full((len(queries), k), -np.inf, np.float32)
    ids = np.full((len(queries), k), -1, np.int64)
    for i, row in enumerate(found):
        row = np.unique(row[row >= 0])  # sorted: a memory map reads them in order
        exact = np.asarray(embeddings[row], dtype=np.float32) @ queries[i]
        best = np.argsort(-exact, kind="stable")[:k]
        scores[i, : len(best)], ids[i, : len(best)] = exact[best], row[best]
    return scores, ids


def _read(path: Path):
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:  # faiss's message ends "Error: 'cond' failed: reason"
        reason = str(e).rpartition("failed: ")[2] or str(e)
        raise IceError(
            f"{path}: cannot read the search index ({reason}); rebuild the run with `ice embed --force`"
        ) from None


def grow_index(run_dir: Path, rows: np.ndarray, n_before: int, out: Path, near: np.ndarray | None = None) -> bool:
    """Write to `out` the run's index-added.faiss (made on first use like index.faiss) with
    `rows`, the embeddings of images n_before on, added: index-added.faiss itself, or a file
    that replaces it later, so that an addition can build it beside other work. False, with
    nothing written, where index.faiss and index-added.faiss hold other than n_before images
    (the rows went in before a kill).

    `near`: (len(rows), k) image ids of each row's nearest images in the run (-1: none), as
    `ice add` places them. An IVF index then takes each row into the list, of those its
    neighbours are in, whose centre is nearest (by the index's measure): a few centres per row
    instead of every one. That is the nearest list for nearly every row (add_bench reports how
    many), and the others lie with their neighbours, in lists that a search near them probes."""
    import faiss

    job = faiss.read_index(str(run_dir / rd.INDEX), faiss.IO_FLAG_MMAP)  # the lists stay on disk
    path = run_dir / rd.INDEX_ADDED
    added = faiss.read_index(str(path)) if path.exists() else _empty_like(job)
    if job.ntotal + added.ntotal != n_before:
        return False
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if near is not None and len(rows) and type(added) is faiss.IndexIVFFlat and type(job) is faiss.IndexIVFFlat:
        lists = _lists_near(added.quantizer, rows, ivf_lists(job, added)[np.maximum(near, 0)], near >= 0)
        added.add_core(len(rows), faiss.swig_ptr(rows), None, faiss.swig_ptr(lists))
    else:
        added.add(rows)
    write_index(added, out)
    return True


def ivf_lists(job, added) -> np.ndarray:
    """(n,) int64: the IVF list that holds each image id of the run, from the job's index and
    the additions' (whose ids count from 0 after the job's)."""
    import faiss

    out = np.zeros(job.ntotal + added.ntotal, np.int64)
    for index, first in ((job, 0), (added, job.ntotal)):
        lists = index.invlists
        for number in range(index.nlist):
            size = lists.list_size(number)
            if size:
                out[first + faiss.rev_swig_ptr(lists.get_ids(number), size)] = number
    return out


def _lists_near(quantizer, rows: np.ndarray, candidates: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(n,) int64: for each row, the candidate list (of its `candidates` where `ok`) whose centre
    is nearest by the quantizer's own measure (the inner product for ICE's indexes, else the
    L2 distance); the nearest of all centres where it has none."""
    import faiss

    centres = quantizer.reconstruct_n(0, quantizer.ntotal)
    # a score that orders the centres as the quantizer does, least first: -x.c, or |c|^2 - 2 x.c
    inner = quantizer.metric_type == faiss.METRIC_INNER_PRODUCT
    norms = np.zeros(len(centres), np.float32) if inner else (centres**2).sum(1)
    out = np.empty(len(rows), np.int64)
    for start in range(0, len(rows), 8_192):  # the candidates' centres a block of rows at a time
        cand, x = candidates[start : start + 8_192], rows[start : start + 8_192]
        score = norms[cand] - (1 if inner else 2) * np.einsum("qkd,qd->qk", centres[cand], x)
        score[~ok[start : start + 8_192]] = np.inf
        out[start : start + len(x)] = np.take_along_axis(cand, score.argmin(1)[:, None], 1)[:, 0]
    none = np.flatnonzero(~ok.any(1))
    if len(none):
        out[none] = quantizer.search(rows[none], 1)[1][:, 0]
    return out


def _empty_like(index):
    """An empty index of index's kind: IVF on a copy of its coarse quantizer, exact, or for the
    product-quantized kind a copy of the whole trained index, emptied."""
    import faiss

    if isinstance(index, faiss.IndexPreTransform):
        # faiss cannot copy lists kept on disk: copy the index around empty lists put in their place
        ivf = faiss.extract_index_ivf(index)
        lists, ivf.own_invlists = ivf.invlists, False
        none = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)  # kept by this variable, not the index
        ivf.replace_invlists(none, False)
        try:
            empty = faiss.clone_index(index)
        finally:
            ivf.replace_invlists(lists, True)
        empty.reset()
        return empty
    if not isinstance(index, faiss.IndexIVF):
        return faiss.index_factory(index.d, "Flat", index.metric_type)
    quantizer = faiss.clone_index(index.quantizer)
    empty = faiss.IndexIVFFlat(quantizer, index.d, index.nlist, index.metric_type)
    empty.nprobe = index.nprobe
    return empty


def write_index(index, path: Path) -> None:
    """Write a FAISS index atomically. faiss reports a failed write (a full disk) as a
    RuntimeError with the reason in its last parentheses: an OSError naming `path` here."""
    import faiss

    with rd.atomic_path(path) as tmp:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as e:
            reason = re.search(r"\(([^()]+)\)\s*$", str(e))
            raise OSError(errno.EIO, reason[1] if reason else str(e), str(path)) from None
