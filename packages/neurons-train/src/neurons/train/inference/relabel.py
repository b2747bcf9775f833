"""Union-find over provisional block ids and the lookup table that relabels them."""

from __future__ import annotations

import numpy as np

__all__ = ["apply_lut", "lut_slice", "union_find_lut"]


def union_find_lut(
    ids: np.ndarray, sizes: np.ndarray, edges: np.ndarray, min_size: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge provisional ids along ``edges`` and number the merged objects ``1..K``.

    Parameters
    ----------
    ids : uint64 array
        Provisional ids (any values, unsorted, may repeat across blocks).
    sizes : int array
        Voxel count of each entry of ``ids`` (summed per id).
    edges : uint64 array (M, 2)
        Pairs of provisional ids that are the same object.
    min_size : int
        Merged objects with fewer voxels become 0.

    Returns
    -------
    (keys, values, K)
        Sorted unique provisional ids, their final ids (uint64, 0 = removed) and the count.

    Examples
    --------
    >>> k, v, n = union_find_lut(np.array([5, 9, 11]), np.array([3, 3, 1]), np.array([[5, 11]]))
    >>> v.tolist(), n
    ([1, 2, 1], 2)
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = np.asarray(ids, dtype=np.uint64)
    keys, inv = np.unique(ids, return_inverse=True)
    n = keys.size
    tot = np.bincount(inv, weights=np.asarray(sizes, dtype=np.float64), minlength=n)
    edges = np.asarray(edges, dtype=np.uint64).reshape(-1, 2)
    ei = np.searchsorted(keys, edges[:, 0]) if n else np.zeros(0, np.int64)
    ej = np.searchsorted(keys, edges[:, 1]) if n else np.zeros(0, np.int64)
    ok = (ei < n) & (ej < n)
    ok[ok] &= (keys[ei[ok]] == edges[ok, 0]) & (keys[ej[ok]] == edges[ok, 1])
    graph = coo_matrix((np.ones(int(ok.sum()), np.int8), (ei[ok], ej[ok])), shape=(n, n))
    ncomp, comp = connected_components(graph, directed=False)
    comp_size = np.bincount(comp, weights=tot, minlength=ncomp)
    keep = comp_size >= max(min_size, 1)
    # number kept components in order of their smallest provisional id (deterministic)
    first = np.full(ncomp, n, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n))
    order = np.argsort(first, kind="stable")
    final = np.zeros(ncomp, dtype=np.uint64)
    kept = order[keep[order]]
    final[kept] = np.arange(1, kept.size + 1, dtype=np.uint64)
    return keys, final[comp], int(kept.size)


def apply_lut(block: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Map the ids of ``block`` through ``keys -> values`` (sorted keys; unknown ids -> 0).

    Examples
    --------
    >>> apply_lut(np.array([0, 7, 9]), np.array([7, 9], np.uint64), np.array([1, 1], np.uint64))
    array([0, 1, 1], dtype=uint64)
    """
    out = np.zeros(block.shape, dtype=np.uint64)
    fg = block > 0
    if keys.size and fg.any():
        v = block[fg].astype(np.uint64, copy=False)
        idx = np.minimum(np.searchsorted(keys, v), keys.size - 1)
        out[fg] = np.where(keys[idx] == v, values[idx], np.uint64(0))
    return out


def lut_slice(
    keys: np.ndarray, values: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """The part of a lookup table whose keys lie in ``[lo, hi)`` (one block's provisional ids).

    Examples
    --------
    >>> k, v = lut_slice(np.array([1, 5, 9], np.uint64), np.array([1, 2, 3], np.uint64), 4, 9)
    >>> k.tolist(), v.tolist()
    ([5], [2])
    """
    a, b = np.searchsorted(keys, np.array([lo, hi], dtype=np.uint64))
    return keys[a:b].copy(), values[a:b].copy()
