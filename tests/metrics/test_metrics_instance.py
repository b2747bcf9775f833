"""Instance matching, AP (hand-computed, MitoEM convention), PQ, and semantic Dice/IoU."""

from __future__ import annotations

import numpy as np
import pytest

from neurons.metrics import (
    MITOEM_AREA_RANGES,
    average_precision,
    dice,
    iou,
    match_instances,
    panoptic_quality,
)

# gt: objects 1 and 2 (4 voxels each) + background; pred: 5 = gt1 exactly (IoU 1),
# 6 = half of gt2 (IoU 2/(4+2-2) = 0.5), 7 = false positive on background (3 voxels)
GT = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0])
PRED = np.array([5, 5, 5, 5, 6, 6, 0, 0, 7, 7, 7])


def test_matching_hand_computed():
    m = match_instances(GT, PRED, thresholds=0.5)
    assert (m.tp, m.fp, m.fn) == (2, 1, 0)
    assert m.precision == pytest.approx(2 / 3) and m.recall == 1.0 and m.f1 == pytest.approx(0.8)
    assert m.accuracy == pytest.approx(2 / 3) and m.mean_matched_iou == pytest.approx(0.75)
    m75 = match_instances(GT, PRED, thresholds=[0.75])[0]
    assert (m75.tp, m75.fp, m75.fn) == (1, 2, 1)
    assert sorted(zip(m.matches[0].tolist(), m.matches[1].tolist(), strict=True)) == [
        (1, 5),
        (2, 6),
    ]


def test_average_precision_hand_computed():
    # ranked by size: 5 (TP), 7 (FP), 6 (TP at 0.5 only)
    ap = average_precision(GT, PRED)
    ap50 = (51 + 50 * 2 / 3) / 101  # recall <= .5 -> precision 1; recall 1 -> 2/3
    ap75 = 51 / 101
    assert ap.ap50 == pytest.approx(ap50) and ap.ap75 == pytest.approx(ap75)
    assert ap.map == pytest.approx((ap50 + 9 * ap75) / 10)
    # explicit scores reorder: 6 first, then 5, then 7 -> at 0.5 precision stays 1 up to recall 1
    ap_s = average_precision(GT, PRED, scores={5: 2.0, 6: 3.0, 7: 1.0})
    assert ap_s.ap50 == pytest.approx(1.0)


def test_average_precision_tiers_and_degenerate():
    ap = average_precision(GT, PRED, area_ranges={"small": (0, 3), "large": (3, 1e10)})
    assert ap.tiers["small"]["n_gt"] == 0 and ap.tiers["large"]["n_gt"] == 2
    # small tier: no gt; pred 6 (size 2) matches an out-of-range gt -> ignored, 7 (size 3) FP -> 0
    assert ap.tiers["small"]["ap50"] == 0.0
    assert set(MITOEM_AREA_RANGES) == {"all", "small", "medium", "large"}
    z = np.zeros(5, int)
    assert average_precision(z, z).map == 1.0  # nothing to find, nothing predicted
    assert average_precision(z, np.arange(5)).map == 0.0  # only false positives
    assert average_precision(np.arange(5), z).map == 0.0  # nothing predicted


def test_identical_instances_perfect(pair):
    gt, _ = pair
    relab = gt.astype(np.uint64) * np.uint64(2**61)
    assert match_instances(gt, relab).f1 == 1.0
    assert average_precision(gt, relab).map == 1.0
    assert panoptic_quality(gt, relab).pq == 1.0


def test_panoptic_quality_hand_computed():
    pq = panoptic_quality(GT, PRED)
    # IoU > 0.5: only (1, 5); RQ = 1 / (1 + 2/2 + 1/2), SQ = 1
    assert (pq.tp, pq.fp, pq.fn) == (1, 2, 1)
    assert pq.rq == pytest.approx(0.4) and pq.sq == 1.0 and pq.pq == pytest.approx(0.4)
    z = np.zeros(4, int)
    assert panoptic_quality(z, z).pq == 1.0


def test_low_threshold_matching_is_one_to_one():
    gt = np.array([1, 1, 1, 1, 1, 1])
    pred = np.array([2, 2, 2, 3, 3, 3])  # both IoU 0.5 with gt 1
    m = match_instances(gt, pred, thresholds=0.3)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)


def test_dice_iou_against_sklearn(rng):
    skm = pytest.importorskip("sklearn.metrics")
    gt = rng.integers(0, 4, (6, 20, 20))
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 4, gt.shape))
    pred[pred == 255] = 0
    keep = gt != 255
    cls = [0, 1, 2, 3]
    d = dice(gt, pred)
    j = iou(gt, pred)
    ref_d = skm.f1_score(gt[keep], pred[keep], labels=cls, average=None)
    ref_j = skm.jaccard_score(gt[keep], pred[keep], labels=cls, average=None)
    assert [d.per_class[c] for c in cls] == pytest.approx(ref_d.tolist())
    assert [j.per_class[c] for c in cls] == pytest.approx(ref_j.tolist())
    assert d.mean == pytest.approx(ref_d.mean())
    assert dice(gt, pred, include_background=False).mean == pytest.approx(ref_d[1:].mean())


def test_dice_absent_class_documented():
    d = dice(np.array([1, 1, 0]), np.array([1, 1, 0]), classes=[0, 1, 2])
    assert d.per_class == {0: 1.0, 1: 1.0, 2: None} and d.mean == 1.0
    assert dice(np.full(3, 255), np.zeros(3, int)).mean == 1.0  # nothing evaluated


def test_dice_iou_pred_ignore_index_is_a_miss(rng):
    skm = pytest.importorskip("sklearn.metrics")
    # hand-computed: gt 255 voxel dropped; pred 255 on gt 1 is a miss for class 1
    gt = np.array([1, 1, 1, 0, 255])
    pred = np.array([1, 1, 255, 0, 1])
    d = dice(gt, pred)
    assert d.per_class == {0: 1.0, 1: pytest.approx(2 * 2 / (3 + 2))}
    assert iou(gt, pred).per_class[1] == pytest.approx(2 / 3)
    assert 255 not in dice(gt, pred, classes=[0, 1, 255]).per_class
    # random maps against sklearn, which scores pred 255 as an unlisted label (a miss)
    g = rng.integers(0, 3, 500)
    g[rng.random(500) < 0.1] = 255
    p = np.where(rng.random(500) < 0.6, g, rng.integers(0, 3, 500))
    p[rng.random(500) < 0.15] = 255
    keep = g != 255
    ref = skm.f1_score(g[keep], p[keep], labels=[0, 1, 2], average=None)
    refj = skm.jaccard_score(g[keep], p[keep], labels=[0, 1, 2], average=None)
    assert [dice(g, p).per_class[c] for c in range(3)] == pytest.approx(ref.tolist())
    assert [iou(g, p).per_class[c] for c in range(3)] == pytest.approx(refj.tolist())


def test_average_precision_scores_as_dict_or_arrays():
    from neurons.metrics import InputError

    d = {5: 2.0, 6: 3.0, 7: 1.0}
    ref = average_precision(GT, PRED, scores=d)
    arr = average_precision(GT, PRED, scores=(np.array([7, 6, 5, 99]), np.array([1.0, 3, 2, 0])))
    assert ref.per_threshold == arr.per_threshold and ref.ap50 == pytest.approx(1.0)
    # false positive 7 ranked first: precisions 0, 1/2, 2/3 at recalls 0, .5, 1; made
    # monotone from the right -> 2/3 at every recall point
    low = average_precision(GT, PRED, scores={5: 2.0, 6: 1.0, 7: 3.0})
    assert low.ap50 == pytest.approx(2 / 3)
    big = 2**63 + 5  # uint64 ids; the id -1 cannot occur and is ignored
    p_u = PRED.astype(np.uint64)
    p_u[PRED == 5] = np.uint64(big)
    u = average_precision(GT.astype(np.uint64), p_u, scores={big: 2.0, 6: 3.0, 7: 1.0, -1: 9.0})
    assert u.per_threshold == ref.per_threshold
    with pytest.raises(InputError, match="no score given for pred id 7"):
        average_precision(GT, PRED, scores={5: 1.0, 6: 2.0})
    with pytest.raises(InputError, match="equal length"):
        average_precision(GT, PRED, scores=(np.array([5, 6, 7]), np.array([1.0, 2.0])))


def test_panoptic_quality_rejects_threshold_below_half():
    from neurons.metrics import InputError

    with pytest.raises(InputError, match=r"threshold must be in \[0.5, 1\), got 0.3.*unique"):
        panoptic_quality(GT, PRED, threshold=0.3)
    assert panoptic_quality(GT, PRED, threshold=0.5).tp == 1
    # IoU(2, 6) = 0.5 is not > 0.5; with threshold 0.9 only the exact match (IoU 1) remains
    assert panoptic_quality(GT, PRED, threshold=0.9).tp == 1
