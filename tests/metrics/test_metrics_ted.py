"""Tolerant edit distance (ILP) and plain split/merge edits: hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from neurons.metrics import TEDError, split_merge_edits, tolerant_edit_distance


def two_halves(shape=(3, 12, 12), cut=6):
    gt = np.ones(shape, int)
    gt[..., cut:] = 2
    return gt


def test_tolerance_absorbs_boundary_shift():
    gt = two_halves()
    pred = two_halves(cut=7)  # boundary shifted by one voxel: a 1-voxel sliver of gt 2 in pred 1
    assert split_merge_edits(gt, pred) == (1, 1, 0, 0)  # split of 2 + merge in 1
    assert tolerant_edit_distance(gt, pred, tolerance=0).total == 2
    r = tolerant_edit_distance(gt, pred, tolerance=1, return_relabelled=True)
    assert r.total == 0 and r.optimal
    assert np.array_equal(r.relabelled, gt)
    assert tolerant_edit_distance(gt, pred, tolerance=2).total == 0


def test_real_split_and_merge_survive_tolerance():
    gt = two_halves()
    split = gt.copy()
    split[:, 6:, :6] = 3  # gt 1 cut in two large halves
    r = tolerant_edit_distance(gt, split, tolerance=2)
    assert (r.splits, r.merges) == (1, 0)
    merged = np.ones_like(gt)  # both gt objects in one pred label
    r = tolerant_edit_distance(gt, merged, tolerance=2)
    assert (r.splits, r.merges) == (0, 1)


def test_anisotropic_tolerance():
    gt = np.ones((6, 8, 8), int)
    gt[3:] = 2  # boundary along z
    pred = gt.copy()
    pred[3] = 1  # shifted by one section (50 nm at voxel size (50, 4, 4))
    assert tolerant_edit_distance(gt, pred, tolerance=20, voxel_size=(50, 4, 4)).total == 2
    assert tolerant_edit_distance(gt, pred, tolerance=60, voxel_size=(50, 4, 4)).total == 0


def test_background_false_positive_and_negative():
    gt = np.zeros((1, 10, 10), int)
    gt[0, 2:8, 2:8] = 1
    pred = gt.copy()
    pred[0, 0, 0] = 9  # tiny object in gt background
    pred[0, 4:6, 4:6] = 0  # hole inside gt 1
    e = split_merge_edits(gt, pred)
    assert (e.false_positives, e.false_negatives) == (1, 1)
    assert e.splits == 1  # gt 1 partners: 1 and background


@pytest.mark.parametrize("seed", range(3))
def test_tolerance_zero_equals_plain_edit_count(seed):
    rng = np.random.default_rng(seed)
    gt = np.kron(rng.integers(0, 4, (2, 4, 4)), np.ones((2, 3, 3), int))
    pred = np.kron(rng.integers(0, 5, (2, 4, 4)), np.ones((2, 3, 3), int))
    r = tolerant_edit_distance(gt, pred, tolerance=0)
    assert tuple(r[:4]) == tuple(split_merge_edits(gt, pred))


def test_ted_2d_and_limits():
    gt = two_halves((12, 12))
    pred = two_halves((12, 12), cut=7)
    assert tolerant_edit_distance(gt, pred, tolerance=1).total == 0
    with pytest.raises(TEDError, match="max_voxels"):
        tolerant_edit_distance(gt, pred, max_voxels=10)


def test_many_labels_shift_and_merges():
    # 400 gt blocks of 6x6; pred shifted by one voxel along x (absorbed at tolerance 1) and
    # 40 horizontally adjacent block pairs merged (real merges, each one edit)
    gt = np.kron(np.arange(1, 401).reshape(20, 20), np.ones((6, 6), int))[None]
    pred = gt.copy()
    pred[:, :, 1:] = gt[:, :, :-1]
    kw = {"gt_background": None, "pred_background": None}
    r0 = tolerant_edit_distance(gt, pred, tolerance=0, **kw)
    assert tuple(r0[:4]) == tuple(split_merge_edits(gt, pred, **kw))
    assert r0.splits == 400 - 20  # every gt block but the first column has a 1-voxel sliver
    assert tolerant_edit_distance(gt, pred, tolerance=1, **kw).total == 0
    merged = pred.copy()
    left = np.arange(1, 401, 20)[:, None] + np.arange(0, 8, 2)  # 20 rows x 4 pairs
    merged[np.isin(merged, left + 1)] -= 1  # block k + 1 takes the label of block k
    r = tolerant_edit_distance(gt, merged, tolerance=1, **kw)
    assert r.optimal and r.n_candidate_cells == 380 - 80  # slivers inside merged pairs vanish
    assert (r.splits, r.merges, r.false_positives, r.false_negatives) == (0, 80, 0, 0)
