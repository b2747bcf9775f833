"""Matching ids across block borders: IoU of a block's halo labels with its neighbours' cores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .blocks import halo_mask
from .errors import StitchError

__all__ = ["match_halo", "match_pairs"]


def match_pairs(
    a: np.ndarray, b: np.ndarray, threshold: float = 0.5, groups: np.ndarray | None = None
) -> np.ndarray:
    """Pairs of ids ``(a_id, b_id)`` whose voxels overlap with IoU >= ``threshold``.

    ``a`` and ``b`` are two labellings of the same voxels (e.g. one block's halo and what its
    neighbours wrote there); 0 is background. With ``groups`` (e.g. which neighbour block each
    voxel belongs to), the IoU of a pair is computed inside the group of its voxels, so an
    object of ``a`` spreading over several neighbours still matches each of them.
    Vectorised (sorts), no table indexed by ids.

    Returns
    -------
    numpy.ndarray
        uint64 ``(M, 2)``.

    Examples
    --------
    >>> match_pairs(np.array([1, 1, 1, 2]), np.array([7, 7, 0, 9])).tolist()
    [[1, 7], [2, 9]]
    """
    a = np.asarray(a).ravel().astype(np.uint64, copy=False)
    b = np.asarray(b).ravel().astype(np.uint64, copy=False)
    g = (
        np.zeros(a.shape, np.uint64)
        if groups is None
        else np.asarray(groups).ravel().astype(np.uint64)
    )
    if not a.shape == b.shape == g.shape:
        raise StitchError(f"match_pairs: labellings differ in size ({a.size}, {b.size}, {g.size})")
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), dtype=np.uint64)
    # compact codes (ranks) instead of raw ids, so each combination is one int64 key
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib, cb = np.unique(b, return_inverse=True, return_counts=True)
    ug, ig = np.unique(g, return_inverse=True)
    ng = np.int64(ug.size)
    ag_key = ia.astype(np.int64) * ng + ig
    uag, cag = np.unique(ag_key, return_counts=True)
    trip_key = (ia[both].astype(np.int64) * np.int64(ub.size) + ib[both]) * ng + ig[both]
    ut, nab = np.unique(trip_key, return_counts=True)
    ta, rest = np.divmod(ut, np.int64(ub.size) * ng)
    tb, tg = np.divmod(rest, ng)
    na = cag[np.searchsorted(uag, ta * ng + tg)]
    nb = cb[tb]
    keep = nab / (na + nb - nab) >= threshold
    return np.stack([ua[ta[keep]], ub[tb[keep]]], axis=1).astype(np.uint64)


def match_halo(
    halo_labels: np.ndarray,
    offset: int,
    neighbours: np.ndarray,
    core: Sequence[slice],
    outer: Sequence[slice],
    block: Sequence[int],
    counts: Sequence[int],
    threshold: float,
) -> np.ndarray:
    """Edges between one block's own halo labels and what its neighbours wrote there.

    Parameters
    ----------
    halo_labels : array
        The block's local labels of its halo voxels (``outer`` minus ``core``, C order).
    offset : int
        The block's provisional id offset (added to its non-zero local labels).
    neighbours : array
        Provisional labels stored over ``outer`` (the neighbours' cores; the block's own core
        is ignored).
    core, outer : sequence of slice
        The block's core and outer boxes; ``block``/``counts`` are the grid's block size and
        number of blocks per axis (to tell which neighbour each halo voxel belongs to).

    Returns
    -------
    numpy.ndarray
        uint64 ``(M, 2)`` pairs of provisional ids.
    """
    local = np.asarray(halo_labels).astype(np.uint64, copy=False)
    a = np.where(local > 0, local + np.uint64(offset), np.uint64(0))
    halo = halo_mask(outer, core)
    b = np.asarray(neighbours)[halo]
    coords = np.nonzero(halo)
    group = np.zeros(b.shape, dtype=np.int64)
    for c, o, blk, n in zip(coords, outer, block, counts, strict=True):
        group = group * n + (c + o.start) // blk
    return match_pairs(a, b, threshold, group)
