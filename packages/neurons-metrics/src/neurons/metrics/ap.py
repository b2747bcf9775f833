"""Average precision exactly as the MitoEM evaluation scores it (mAP_3Dvolume ``vol3d_eval``).

The procedure (COCO ``accumulate`` applied to 3-D instances), reproduced step by step:

1. **Ranking.** Predictions are listed in ascending id order with their score (default: voxel
   count) as float64 and ranked by ``np.argsort(-score)`` with NumPy's default sort kind, as
   ``seg_iou3d_sorted`` does. Predictions with equal scores therefore keep the order NumPy's
   (unstable, deterministic) introsort gives them on that score vector: this *is* the tie rule
   of the leaderboard, and it is not "ascending id". (NumPy's sort is SIMD-dispatched, so the
   order of ties is that of the NumPy build and CPU family running it, for the official code
   as for this one.) Ids only enter through their rank, so uint64 ids need no renumbering.
2. **Best match.** Each prediction's best gt is the argmax IoU (full object sizes) among the gt
   it overlaps, ties to the smallest gt id; in a size tier the argmax runs over in-range gt only,
   and a prediction with no in-range overlap falls back to its overall best gt.
3. **TP / FP / ignored** at IoU threshold ``t`` (official values ``0.5 + 0.05 * arange(10)``,
   so the 0.85 threshold is ``0.8500000000000001``): matched when the best IoU ``>= t``;
   a match to an out-of-range gt is ignored, an unmatched prediction outside the size range is
   ignored, everything else unmatched is a false positive. No one-to-one step (for t > 0.5
   matches are unique anyway).
4. **Curve.** Cumulative TP/FP over the ranking; ``recall = tp / n_gt``,
   ``precision = tp / (tp + fp)``, made monotone from the end;
   the precision at the 101 recall points ``0.01 * arange(101)`` is looked up with
   ``searchsorted(side='left')`` and is 0 past the maximum recall. AP@t is the mean of those 101
   values and mAP the mean of all ``T x 101`` values.

Deviations, on purpose: the official precision is ``tp / (tp + fp + np.spacing(1))``; the
``eps`` changes values by at most 2.2e-16 relative and only makes a perfect result read
0.9999999999999999, so it is left out. A tier without gt is reported as 1.0 when no prediction counts in it and
0.0 otherwise (the official code reports -1 or crashes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ._common import resolve_table
from .errors import InputError
from .instance import _Pairs, _pairs

__all__ = ["APResult", "average_precision", "MITOEM_AREA_RANGES", "MITOEM_IOU_THRESHOLDS"]

#: MitoEM ``-th "5e3,1.5e4"`` size tiers (voxels): gt kept when lo < size <= hi.
MITOEM_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e10),
    "small": (0.0, 5e3),
    "medium": (5e3, 1.5e4),
    "large": (1.5e4, 1e10),
}

#: IoU thresholds of the official evaluation, bit for bit (``0.5 + 0.05 * arange(10)``).
MITOEM_IOU_THRESHOLDS: np.ndarray = 0.5 + 0.05 * np.arange(10)

_RECALL_POINTS = 0.01 * np.arange(101)


class APResult(NamedTuple):
    """Average precision in the MitoEM convention."""

    ap50: float
    ap75: float
    map: float
    #: AP per IoU threshold (keys rounded to 4 decimals: 0.5, 0.55, ..., 0.95)
    per_threshold: dict[float, float]
    #: ``{tier: {"ap50", "ap75", "map", "n_gt"}}`` for the requested size tiers
    tiers: dict[str, dict[str, float]]


def _precision_points(tp: np.ndarray, fp: np.ndarray, n_gt: int) -> np.ndarray:
    """Interpolated precision at the 101 recall points of a ranked TP/FP sequence (COCO)."""
    ctp = np.cumsum(tp).astype(np.float64)
    cfp = np.cumsum(fp).astype(np.float64)
    q = np.zeros(_RECALL_POINTS.size)
    if ctp.size == 0:
        return q
    rc = ctp / n_gt
    # official: tp / (tp + fp + np.spacing(1)) (see the module docstring); 0 before any count
    pr = ctp / np.maximum(cfp + ctp, 1.0)
    pr = np.maximum.accumulate(pr[::-1])[::-1]
    idx = np.searchsorted(rc, _RECALL_POINTS, side="left")
    ok = idx < pr.size
    q[ok] = pr[idx[ok]]
    return q


def _best_match(p: _Pairs, allowed_g: np.ndarray | None) -> np.ndarray:
    """Best IoU of each prediction over the allowed gt (0 when it overlaps none)."""
    best = np.zeros(p.pred_ids.size)
    sel = np.ones(p.iou.size, bool) if allowed_g is None else allowed_g[p.gi]
    if sel.any():
        o = np.lexsort((p.gi[sel], -p.iou[sel], p.pj[sel]))  # per pred: best IoU, then gt id
        pj = p.pj[sel][o]
        first = np.ones(pj.size, bool)
        first[1:] = pj[1:] != pj[:-1]
        best[pj[first]] = p.iou[sel][o][first]
    return best


def average_precision(
    gt: Any,
    pred: Any = None,
    *,
    scores: Mapping[int, float] | tuple[Any, Any] | None = None,
    thresholds: Sequence[float] | None = None,
    area_ranges: Mapping[str, tuple[float, float]] | None = None,
    background: int | None = 0,
    **table_kwargs: Any,
) -> APResult:
    """Average precision over IoU thresholds, exactly as the MitoEM evaluation computes it.

    See the module docstring for the procedure and its tie rule (predictions with equal scores
    are ranked as ``np.argsort(-score)`` ranks them over the ascending-id score vector).

    Parameters
    ----------
    gt, pred : array-like or (ContingencyTable, None)
        Instance label volumes, or a precomputed table.
    scores : mapping or (ids, values), optional
        Confidence of every prediction (``{pred id: score}`` or a pair of arrays); default the
        voxel count. :class:`InputError` names the first predicted id without a score.
    thresholds : sequence of float, optional
        IoU thresholds; default :data:`MITOEM_IOU_THRESHOLDS`.
    area_ranges : mapping, optional
        Size tiers ``{name: (lo, hi)}`` (gt kept when ``lo < size <= hi``), e.g.
        :data:`MITOEM_AREA_RANGES`; reported in ``APResult.tiers``.
    background : int or None
        Label that is no instance on either side (default 0).

    Returns
    -------
    APResult
        ``ap50``, ``ap75``, ``map`` (all tiers: ``tiers[name]``).

    Examples
    --------
    >>> average_precision(np.array([1, 1, 2, 2]), np.array([1, 1, 2, 2])).map
    1.0
    """
    t = resolve_table(gt, pred, **table_kwargs)
    p = _pairs(t, background)
    ths = MITOEM_IOU_THRESHOLDS if thresholds is None else np.asarray(thresholds, np.float64)
    if scores is None:
        score = p.pred_sizes.astype(np.float64)
    else:
        score = _lookup_scores(scores, p.pred_ids)
    order = np.argsort(-score)  # the official ranking, ties included (see module docstring)

    ranges = {"all": (-np.inf, np.inf)}
    if area_ranges:
        ranges.update({k: (float(v[0]), float(v[1])) for k, v in area_ranges.items()})
    best_all = _best_match(p, None)[order]
    p_size = p.pred_sizes[order]
    results: dict[str, dict[str, Any]] = {}
    for name, (lo, hi) in ranges.items():
        g_in = (p.gt_sizes > lo) & (p.gt_sizes <= hi)
        n_gt = int(g_in.sum())
        p_out = (p_size <= lo) | (p_size > hi)
        best_in = best_all if g_in.all() else _best_match(p, g_in)[order]
        has_in = best_in > 0  # IoU of an overlapping pair is > 0
        q = np.zeros((ths.size, _RECALL_POINTS.size))
        for k, th in enumerate(ths):
            tp = has_in & (best_in >= th)
            ignored = (~has_in & (best_all >= th)) | (~tp & p_out)
            if n_gt:
                q[k] = _precision_points(tp & ~ignored, ~tp & ~ignored, n_gt)
            else:  # deviation: no gt in the tier
                q[k] = 1.0 if not (~ignored).any() else 0.0
        per_t = {round(float(th), 4): float(np.mean(q[k])) for k, th in enumerate(ths)}
        results[name] = {
            "per_threshold": per_t,
            "ap50": _at(ths, q, 0.5),
            "ap75": _at(ths, q, 0.75),
            "map": float(np.mean(q)),
            "n_gt": n_gt,
        }
    r = results.pop("all")
    tiers = {
        k: {"ap50": v["ap50"], "ap75": v["ap75"], "map": v["map"], "n_gt": v["n_gt"]}
        for k, v in results.items()
    }
    return APResult(r["ap50"], r["ap75"], r["map"], r["per_threshold"], tiers)


def _at(ths: np.ndarray, q: np.ndarray, th: float) -> float:
    """AP at the threshold within 1e-5 of ``th`` (as the official summary), NaN if none."""
    k = np.flatnonzero(np.abs(ths - th) < 1e-5)
    return float(np.mean(q[k])) if k.size else float("nan")


def _lookup_scores(scores: Any, pred_ids: np.ndarray) -> np.ndarray:
    """Score of each id in ``pred_ids`` from a mapping or an ``(ids, values)`` pair."""
    info = np.iinfo(pred_ids.dtype)
    if isinstance(scores, Mapping):  # one pass; ids the pred dtype cannot hold match nothing
        items = [(k, v) for k, v in scores.items() if info.min <= int(k) <= info.max]
        keys = np.array([k for k, _ in items], dtype=pred_ids.dtype)
        vals = np.array([v for _, v in items], dtype=np.float64)
    else:
        try:
            keys, vals = (np.asarray(x) for x in scores)
            vals = vals.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(
                "average_precision: scores must be a {pred id: score} mapping or a pair of "
                f"arrays (ids, scores), got {type(scores).__name__}"
            ) from None
    if keys.ndim != 1 or keys.shape != vals.shape:
        raise InputError(
            f"average_precision: score ids and values must be 1-D of equal length, got shapes "
            f"{keys.shape} and {vals.shape}"
        )
    if keys.size and keys.dtype.kind not in "iu":
        raise InputError(f"average_precision: score ids must be integers, got dtype {keys.dtype}")
    if keys.size and keys.dtype != pred_ids.dtype:  # drop ids the pred dtype cannot hold
        big = keys > info.max if keys.dtype.kind == "u" else keys < info.min
        keys, vals = keys[~big], vals[~big]
    keys = keys.astype(pred_ids.dtype)
    order = np.argsort(keys, kind="stable")
    keys, vals = keys[order], vals[order]
    pos = np.minimum(np.searchsorted(keys, pred_ids), max(keys.size - 1, 0))
    found = keys[pos] == pred_ids if keys.size else np.zeros(pred_ids.size, bool)
    if not found.all():
        missing = pred_ids[np.argmin(found)]
        raise InputError(f"average_precision: no score given for pred id {int(missing)}")
    return vals[pos]
