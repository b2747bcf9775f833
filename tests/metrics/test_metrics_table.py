"""The sparse contingency table: exactness, merging, dtypes, lazy/dask/array-like inputs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from neurons.metrics import ContingencyTable, InputError, ShapeMismatchError, contingency_table


def brute(gt, pred):
    c = Counter(zip(np.ravel(gt).tolist(), np.ravel(pred).tolist(), strict=True))
    return sorted(c.items())


def as_list(t):
    return sorted(
        zip(
            zip(t.gt_ids.tolist(), t.pred_ids.tolist(), strict=True), t.counts.tolist(), strict=True
        )
    )


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64, bool]
)
def test_table_matches_counter(rng, dtype):
    gt = rng.integers(0, 2 if dtype is bool else 5, (5, 9, 11)).astype(dtype)
    pred = rng.integers(0, 2 if dtype is bool else 4, (5, 9, 11)).astype(dtype)
    t = contingency_table(gt, pred)
    assert as_list(t) == brute(gt, pred)
    assert t.n == gt.size


def test_block_merge_equals_whole(pair):
    gt, pred = pair
    whole = contingency_table(gt, pred, block_size=10**9, n_threads=1)
    for bs in (1, 7, 24, 100, 576, 1000):
        assert contingency_table(gt, pred, block_size=bs, n_threads=2) == whole
    # explicit sum of the tables of two halves
    z = gt.shape[0] // 2
    halves = contingency_table(gt[:z], pred[:z]) + contingency_table(gt[z:], pred[z:])
    assert halves == whole
    assert sum([contingency_table(gt[:z], pred[:z]), contingency_table(gt[z:], pred[z:])]) == whole
    assert as_list(whole) == brute(gt, pred)


def test_uint64_ids_above_2_63(rng):
    base = np.uint64(2**63)
    gt = (rng.integers(0, 3, (4, 8, 8)).astype(np.uint64) + base) * np.uint64(1)
    gt[0] = np.uint64(2**64 - 1)
    pred = rng.integers(0, 3, gt.shape).astype(np.uint64) + np.uint64(2**64 - 10)
    t = contingency_table(gt, pred, block_size=17)
    assert as_list(t) == brute(gt, pred)
    assert t.gt_ids.dtype == np.uint64 and int(t.gt_ids.max()) == 2**64 - 1


def test_mixed_signed_unsigned_merge(rng):
    a = contingency_table(np.array([-1, 2]), np.array([1, 1]))
    b = contingency_table(np.array([3, 3], np.uint64), np.array([1, 1], np.uint64))
    m = a + b
    assert m.gt_ids.dtype == np.int64 and as_list(m) == [((-1, 1), 1), ((2, 1), 1), ((3, 1), 2)]
    c = contingency_table(np.array([2**64 - 1], np.uint64), np.array([1]))
    with pytest.raises(ValueError):
        _ = a + c


def test_mask_and_marginals():
    t = contingency_table(np.array([0, 0, 1, 1, 2]), np.array([5, 6, 5, 5, 6]))
    assert t.gt_sizes()[1].tolist() == [2, 2, 1]
    assert t.pred_sizes()[0].tolist() == [5, 6] and t.pred_sizes()[1].tolist() == [3, 2]
    m = t.mask(ignore_gt=[0], ignore_pred=[6])
    assert as_list(m) == [((1, 5), 2)]
    # ignore ids outside the dtype range are harmless
    assert t.mask(ignore_gt=[-5, 2**70]).n == 5


class LazyVolume:
    """Minimal lazy volume: shape/dtype + numpy slicing, counts the voxels it reads."""

    def __init__(self, a):
        self._a = a
        self.shape = a.shape
        self.dtype = a.dtype
        self.max_read = 0

    def __getitem__(self, idx):
        out = np.array(self._a[idx])
        self.max_read = max(self.max_read, out.size)
        return out


class ArrayLike:
    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a


def test_lazy_and_array_like_inputs(pair):
    gt, pred = pair
    whole = contingency_table(gt, pred)
    lg, lp = LazyVolume(gt), LazyVolume(pred)
    assert contingency_table(lg, lp, block_size=100) == whole
    assert lg.max_read <= 24 * 24  # one z-plane at most: read block by block
    assert contingency_table(ArrayLike(gt), ArrayLike(pred)) == whole
    assert contingency_table(gt.tolist(), pred.tolist()) == whole


def test_dask_input(pair):
    da = pytest.importorskip("dask.array")
    gt, pred = pair
    g = da.from_array(gt, chunks=(2, 10, 7))
    p = da.from_array(pred, chunks=(3, 8, 24))  # different chunking: rechunked to gt's
    assert contingency_table(g, p) == contingency_table(gt, pred)
    assert contingency_table(g, pred) == contingency_table(gt, pred)


def test_errors_and_empty():
    with pytest.raises(ShapeMismatchError, match=r"\(2,\).*\(3,\)"):
        contingency_table(np.zeros(2, int), np.zeros(3, int))
    with pytest.raises(InputError, match="float"):
        contingency_table(np.zeros(2), np.zeros(2, int))
    e = contingency_table(np.zeros((0, 4), int), np.zeros((0, 4), int))
    assert e.n == 0 and len(e) == 0
    assert ContingencyTable.merge([]).n == 0


def test_progress_callback(pair):
    gt, pred = pair
    seen = []
    contingency_table(gt, pred, block_size=200, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == len(seen)


@pytest.mark.parametrize("k", [3, 40, 3000])
def test_fast_and_fallback_reductions_agree_with_numpy(k, monkeypatch):
    import neurons.metrics._reduce as tm

    rng = np.random.default_rng(k)
    g = rng.integers(0, k, (5, 21, 30)).astype(np.uint64) * np.uint64(2**61 - 1)
    p = rng.integers(0, 3 * k, (5, 21, 30)).astype(np.int64) - k  # negative ids too
    key = np.stack([g.ravel().view(np.int64), p.ravel()])
    u, c = np.unique(key, axis=1, return_counts=True)
    order = np.lexsort((u[1], u[0].view(np.uint64)))  # entries sorted by (gt, pred)
    ref_g, ref_p, ref_c = u[0][order].view(np.uint64), u[1][order], c[order]
    dense = contingency_table(g, p, block_size=333)
    monkeypatch.setattr(tm, "_DENSE_CELLS", 0)  # force the key-sort path
    monkeypatch.setattr(tm, "_HASH_UNIQUE", False)  # and the sort-based factorisation
    for t in (dense, contingency_table(g, p, block_size=333)):
        assert np.array_equal(t.gt_ids, ref_g) and np.array_equal(t.pred_ids, ref_p)
        assert np.array_equal(t.counts, ref_c)
