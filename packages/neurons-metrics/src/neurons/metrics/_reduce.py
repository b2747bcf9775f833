"""Reduction of ``(gt id, pred id, count)`` triples to unique sorted pairs (the table's core).

Ids are factorised (hash-based ``np.unique`` when NumPy has it, else ``np.sort``; then
``np.searchsorted``). Pairs are summed by one weighted ``np.bincount`` on the grid of
factorised ids when it has at most ``_DENSE_CELLS`` cells, else by one ``np.sort`` of packed
64-bit keys ``pair index << bits | count`` and ``np.add.reduceat``. Never dense by raw id.
"""

from __future__ import annotations

import numpy as np

#: largest dense grid of factorised (gt, pred) ids counted with one bincount (32 MiB of float64)
_DENSE_CELLS = 1 << 22

_U64 = np.dtype(np.uint64)
_I64 = np.dtype(np.int64)


def _first_of_runs(x: np.ndarray) -> np.ndarray:
    m = np.empty(x.size, bool)
    if x.size:
        m[0] = True
        np.not_equal(x[1:], x[:-1], out=m[1:])
    return m


def _factorize(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values of ``v`` and the index of each element in them."""
    st = np.flatnonzero(_first_of_runs(v))  # consecutive duplicates are common in runs
    vv = v[st]
    u = _sorted_unique(vv)
    idx = np.searchsorted(u, vv)
    return u, np.repeat(idx, np.diff(st, append=v.size))


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values: hash-based ``np.unique(sorted=False)`` (NumPy >= 2.3) and a sort
    of the few distinct values, else one sort of everything."""
    if _HASH_UNIQUE:
        return np.sort(np.unique(x, sorted=False))
    s = np.sort(x)
    return s[_first_of_runs(s)]


def _has_hash_unique() -> bool:
    try:
        np.unique(np.zeros(2, np.int64), sorted=False)
    except TypeError:
        return False
    return True


_HASH_UNIQUE = _has_hash_unique()


def _reduce_pairs(
    g: np.ndarray, p: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (g, p) pairs sorted lexicographically with their summed counts ``c``."""
    if g.size == 0:
        return g[:0], p[:0], np.zeros(0, _I64)
    gu, gi = _factorize(g)
    pu, pi = _factorize(p)
    npu = len(pu)
    n_cells = len(gu) * npu
    if n_cells <= min(_DENSE_CELLS, (1 << 16) + 16 * g.size) and int(c.sum()) < 1 << 53:
        # few distinct ids in this batch: count on the dense grid of *factorised* ids (one
        # bincount instead of a sort; float64 weights are exact below 2**53)
        cells = np.bincount(gi.astype(np.intp) * npu + pi, weights=c, minlength=n_cells)
        nz = np.flatnonzero(cells)
        q, r = np.divmod(nz, npu)
        return gu[q], pu[r], cells[nz].astype(_I64)
    pair_bits = max(1, int(n_cells - 1).bit_length())
    cmax = int(c.max())
    len_bits = max(1, cmax.bit_length())
    if pair_bits + len_bits <= 64 and cmax >= 0:
        key = gi.astype(_U64)
        key *= np.uint64(npu)
        key += pi.astype(_U64)
        key <<= np.uint64(len_bits)
        key |= c.astype(_U64)
        key.sort()
        pair = key >> np.uint64(len_bits)
        starts = np.flatnonzero(_first_of_runs(pair))
        key &= np.uint64((1 << len_bits) - 1)
        counts = np.add.reduceat(key.view(_I64), starts)
        pair = pair[starts]
        q, r = np.divmod(pair, np.uint64(npu))
        return gu[q.astype(np.intp)], pu[r.astype(np.intp)], counts
    # general path (huge counts or id sets): indirect sort on the factorised pair index
    key = gi.astype(_I64) * npu + pi
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(_first_of_runs(key))
    counts = np.add.reduceat(c.astype(_I64)[order], starts)
    key = key[starts]
    return gu[key // npu], pu[key % npu], counts
