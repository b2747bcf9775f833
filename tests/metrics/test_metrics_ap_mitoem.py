"""AP/mAP equal the official MitoEM evaluation (mAP_3Dvolume ``vol3d_util`` + ``vol3d_eval``).

The reference below re-implements the official procedure literally, with Python loops:
ranking by ``np.argsort(-score)`` over the ascending-id score vector (``seg_iou3d_sorted``),
per-prediction best IoU per size range with ``argmax(ious * in_range)`` (``seg_iou3d``), the
fallback to the overall best match, the ignore rules (``get_dtm_by_area``), and the COCO
accumulation with ``np.spacing(1)``, the monotone loop and the 101 recall points read until
the first index error (``accumulate``, NumPy 1.x behaviour).
"""

from __future__ import annotations

import numpy as np
import pytest

from neurons.metrics import MITOEM_AREA_RANGES, average_precision


def official_map(gt, pred, area_rng, scores=None):
    """(precision[T, R, A]) of the official procedure; area_rng rows: all first."""
    gt = np.asarray(gt).ravel()
    pred = np.asarray(pred).ravel()
    pid, psz = np.unique(pred, return_counts=True)
    psz, pid = psz[pid > 0], pid[pid > 0]
    gid, gsz = np.unique(gt, return_counts=True)
    gsz, gid = gsz[gid > 0], gid[gid > 0]
    size_of_pred = dict(zip(pid.tolist(), psz.tolist(), strict=True))
    size_of_gt = dict(zip(gid.tolist(), gsz.tolist(), strict=True))
    relabel = np.zeros(int(pid.max()) + 1, float)
    for i in pid.tolist():
        relabel[i] = size_of_pred[i] if scores is None else scores[i]
    todo = pid[np.argsort(-relabel[pid])]
    A = len(area_rng)
    res = np.zeros((len(todo), A, 3))  # per pred and range: (gt id, gt size, iou)
    for j, i in enumerate(todo.tolist()):
        over = gt[pred == i]
        mids, mcnt = np.unique(over, return_counts=True)
        mcnt, mids = mcnt[mids > 0], mids[mids > 0]
        if len(mids) == 0:
            continue
        msz = np.array([size_of_gt[g] for g in mids.tolist()])
        ious = mcnt.astype(float) / (size_of_pred[i] + msz - mcnt)
        for r in range(A):
            ok = (msz > area_rng[r][0]) * (msz <= area_rng[r][1])
            if ok.sum() > 0:
                k = int(np.argmax(ious * ok))
                res[j, r] = [mids[k], msz[k], ious[k]]
    dt_size = [size_of_pred[i] for i in todo.tolist()]
    ths = 0.5 + 0.05 * np.arange(10)
    rec = 0.01 * np.arange(101)
    precision = -np.ones((len(ths), len(rec), A))
    for a in range(A):
        lo, hi = area_rng[a]
        ignored_gt = {g for g in gid.tolist() if size_of_gt[g] <= lo or size_of_gt[g] > hi}
        npig = len(gid) - len(ignored_gt)
        if npig == 0:
            continue
        for t, th in enumerate(ths):
            tps, fps = [], []
            for d in range(len(todo)):
                m_id, m_iou = res[d, a, 0], res[d, a, 2]
                if m_id == 0:  # no match inside the range: the overall best
                    m_id, m_iou = res[d, 0, 0], res[d, 0, 2]
                dtm = m_id if m_iou >= th else 0
                ig = dtm > 0 and int(dtm) in ignored_gt
                if dtm == 0 and (dt_size[d] <= lo or dt_size[d] > hi):
                    ig = True
                tps.append(bool(dtm) and not ig)
                fps.append((not dtm) and not ig)
            tp_sum = np.cumsum(tps).astype(float)
            fp_sum = np.cumsum(fps).astype(float)
            rc = tp_sum / npig
            pr = (tp_sum / (fp_sum + tp_sum + np.spacing(1))).tolist()
            for i in range(len(pr) - 1, 0, -1):
                if pr[i] > pr[i - 1]:
                    pr[i - 1] = pr[i]
            q = [0.0] * len(rec)
            try:
                for ri, pi in enumerate(np.searchsorted(rc, rec, side="left")):
                    q[ri] = pr[pi]
            except IndexError:
                pass
            precision[t, :, a] = q
    return precision


def _summary(prec, a):
    s = prec[:, :, a]
    return {
        "map": float(np.mean(s[s > -1])),
        "ap50": float(np.mean(prec[0, :, a])),
        "ap75": float(np.mean(prec[5, :, a])),
    }


def _tied_case(rng, n=4000):
    """1-D gt / pred of many equal lengths; IoUs such as 17/20 hit thresholds exactly."""
    lengths = np.array([9, 10, 11, 13, 17, 20])
    gt = np.repeat(np.arange(1, n), rng.choice(lengths, n - 1))[:n]
    gt = np.where(np.isin(gt, rng.choice(n, n // 20)), 0, gt)  # some gt background
    cut = np.cumsum(rng.choice(lengths, n))
    cut = cut[cut < n]
    pred = np.zeros(n, np.int64)
    pred[cut] = 1
    pred = np.cumsum(pred) + 1
    pred = np.where(rng.random(pred.max() + 1)[pred] < 0.1, 0, pred)  # missed objects
    # half of the predictions copy the gt exactly or shortened by 3 at the end (IoU 17/20 ...)
    copy = rng.random(gt.max() + 1) < 0.5
    sel = copy[gt] & (gt > 0)
    pred[sel] = gt[sel] + 10 * n
    ends = np.flatnonzero(np.diff(gt) != 0)
    for e in ends[rng.random(ends.size) < 0.3]:
        if gt[e] > 0 and copy[gt[e]]:
            pred[max(0, e - 2) : e + 1] = 0
    return gt, pred


def _block_case(rng, shape=(6, 36, 36)):
    """3-D gt of 3x3x3 blocks (sizes multiples of 27: many ties); pred shifted and re-cut."""
    cs = tuple(s // 3 for s in shape)
    g = rng.integers(0, 60, cs)
    gt = np.kron(g, np.ones((3, 3, 3), np.int64))
    p = np.kron(rng.integers(0, 4, cs), np.ones((3, 3, 3), np.int64))
    pred = np.where(p == 0, 0, gt * 5 + p)
    pred = np.roll(pred, 1, axis=2)
    return gt, pred


@pytest.mark.parametrize("seed", range(4))
def test_ap_equals_official_on_tied_cases(seed):
    rng = np.random.default_rng(seed)
    gt, pred = _tied_case(rng) if seed % 2 == 0 else _block_case(rng)
    _, psz = np.unique(pred[pred > 0], return_counts=True)
    assert psz.size - np.unique(psz).size > 50  # many predictions share a size (ties)
    rng_rows = [[0, 1e10], [0, 15], [15, 100], [100, 1e10]]
    ref = official_map(gt, pred, rng_rows)
    ours = average_precision(
        gt, pred, area_ranges={"small": (0, 15), "medium": (15, 100), "large": (100, 1e10)}
    )
    want = _summary(ref, 0)
    assert abs(ours.map - want["map"]) <= 1e-12
    assert abs(ours.ap50 - want["ap50"]) <= 1e-12
    assert abs(ours.ap75 - want["ap75"]) <= 1e-12
    for a, tier in enumerate(["small", "medium", "large"], start=1):
        if (ref[:, :, a] > -1).any():
            w = _summary(ref, a)
            got = ours.tiers[tier]
            assert abs(got["map"] - w["map"]) <= 1e-12, tier
            assert abs(got["ap75"] - w["ap75"]) <= 1e-12, tier


def test_ap_threshold_is_the_official_float():
    # IoU exactly 17/20 = 0.85 is below the official 0.85 threshold (0.8500000000000001)
    gt = np.array([1] * 20 + [0] * 5)
    pred = np.array([2] * 17 + [0] * 8)
    ap = average_precision(gt, pred)
    assert ap.per_threshold[0.8] == 1.0 and ap.per_threshold[0.85] == 0.0
    assert ap.map == pytest.approx(0.7, abs=1e-15)
    assert official_map(gt, pred, [[0, 1e10]])[7, :, 0].max() == 0.0


def test_ap_explicit_scores_equal_official():
    rng = np.random.default_rng(7)
    gt, pred = _tied_case(rng, 1500)
    ids = np.unique(pred[pred > 0])
    sc = {int(i): float(rng.integers(0, 4)) for i in ids}  # few distinct scores: many ties
    ref = _summary(official_map(gt, pred, [[0, 1e10]], scores=sc), 0)
    ours = average_precision(gt, pred, scores=sc)
    assert abs(ours.map - ref["map"]) <= 1e-12 and abs(ours.ap50 - ref["ap50"]) <= 1e-12


def test_mitoem_area_ranges_are_the_demo_defaults():
    assert MITOEM_AREA_RANGES == {
        "all": (0.0, 1e10), "small": (0.0, 5e3), "medium": (5e3, 1.5e4), "large": (1.5e4, 1e10)
    }  # fmt: skip
