"""Instance matching, average precision (MitoEM convention) and panoptic quality.

All computed from the sparse contingency table: IoU of a gt/pred pair is
``n_ij / (a_i + b_j - n_ij)`` with **full** object sizes (overlap with background included),
and only pairs that overlap are ever looked at (no dense n_gt x n_pred matrix).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import maximum_bipartite_matching

from ._common import resolve_table
from .errors import InputError
from .table import ContingencyTable

__all__ = [
    "MatchResult",
    "APResult",
    "PQResult",
    "match_instances",
    "average_precision",
    "panoptic_quality",
    "MITOEM_AREA_RANGES",
]

#: MitoEM ``-th "5e3,1.5e4"`` size tiers (voxels): gt kept when lo < size <= hi.
MITOEM_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e10),
    "small": (0.0, 5e3),
    "medium": (5e3, 1.5e4),
    "large": (1.5e4, 1e10),
}


class _Pairs(NamedTuple):
    gi: np.ndarray  # index into gt ids
    pj: np.ndarray  # index into pred ids
    iou: np.ndarray
    gt_ids: np.ndarray
    gt_sizes: np.ndarray
    pred_ids: np.ndarray
    pred_sizes: np.ndarray


def _pairs(t: ContingencyTable, background: int | None) -> _Pairs:
    gids, gsz = t.gt_sizes()
    pids, psz = t.pred_sizes()
    gi = t.row_index()
    pj = t.col_index()
    inter = t.counts
    iou = inter / (gsz[gi] + psz[pj] - inter)
    keep_g = np.ones(gids.size, bool)
    keep_p = np.ones(pids.size, bool)
    if background is not None:
        keep_g &= (
            gids != np.array(background).astype(gids.dtype) if _fits(background, gids) else True
        )
        keep_p &= (
            pids != np.array(background).astype(pids.dtype) if _fits(background, pids) else True
        )
    # re-index onto the kept objects
    gmap = np.cumsum(keep_g) - 1
    pmap = np.cumsum(keep_p) - 1
    sel = keep_g[gi] & keep_p[pj]
    return _Pairs(
        gmap[gi[sel]], pmap[pj[sel]], iou[sel], gids[keep_g], gsz[keep_g], pids[keep_p], psz[keep_p]
    )


def _fits(v: int, arr: np.ndarray) -> bool:
    info = np.iinfo(arr.dtype)
    return info.min <= int(v) <= info.max


class MatchResult(NamedTuple):
    """Counts and scores of a one-to-one matching at one IoU threshold."""

    threshold: float
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    mean_matched_iou: float
    #: ``(gt id, pred id, IoU)`` of each matched pair (ids as in the inputs)
    matches: tuple[np.ndarray, np.ndarray, np.ndarray]

    def scores(self) -> dict[str, float]:
        """The scalar fields as a dict."""
        return {
            "tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
            "recall": self.recall, "f1": self.f1, "accuracy": self.accuracy,
            "mean_matched_iou": self.mean_matched_iou,
        }  # fmt: skip


def _match(p: _Pairs, thr: float) -> MatchResult:
    sel = p.iou >= thr if thr > 0 else p.iou > 0
    gi, pj, iou = p.gi[sel], p.pj[sel], p.iou[sel]
    n_g, n_p = p.gt_ids.size, p.pred_ids.size
    if thr > 0.5:  # IoU > 0.5 pairs are unique on both sides
        mg, mp, miou = gi, pj, iou
    elif gi.size:
        graph = csr_array((np.ones(gi.size, np.int8), (gi, pj)), shape=(n_g, n_p))
        match = maximum_bipartite_matching(graph, perm_type="column")  # gt -> pred or -1
        mg = np.flatnonzero(match >= 0)
        mp = match[mg]
        key = gi.astype(np.int64) * max(n_p, 1) + pj
        order = np.argsort(key)
        pos = order[np.searchsorted(key[order], mg.astype(np.int64) * max(n_p, 1) + mp)]
        miou = iou[pos]
    else:
        mg = mp = np.zeros(0, np.int64)
        miou = np.zeros(0)
    tp = int(mg.size)
    fp = n_p - tp
    fn = n_g - tp
    if n_g == 0 and n_p == 0:
        prec = rec = f1 = acc = 1.0
    else:
        prec = tp / (tp + fp) if tp else 0.0
        rec = tp / (tp + fn) if tp else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        acc = tp / (tp + fp + fn) if tp else 0.0
    mean_iou = float(miou.mean()) if tp else 0.0
    return MatchResult(
        float(thr), tp, fp, fn, prec, rec, f1, acc, mean_iou,
        (p.gt_ids[mg], p.pred_ids[mp], miou),
    )  # fmt: skip


def match_instances(
    gt: Any,
    pred: Any = None,
    *,
    thresholds: float | Sequence[float] = 0.5,
    background: int | None = 0,
    **table_kwargs: Any,
) -> MatchResult | list[MatchResult]:
    """One-to-one instance matching at IoU thresholds (StarDist / elf ``matching`` semantics).

    A pair matches when ``IoU >= t``; for ``t > 0.5`` such pairs are unique, below that a
    maximum-cardinality bipartite matching (Hopcroft-Karp on the overlapping pairs) is used.
    ``precision = tp/(tp+fp)``, ``recall = tp/(tp+fn)``, ``f1 = 2tp/(2tp+fp+fn)``,
    ``accuracy = tp/(tp+fp+fn)``; each is 0 when tp = 0, and 1 when there are neither gt nor
    pred instances.

    Parameters
    ----------
    thresholds : float or sequence of float
        IoU threshold(s); a sequence returns a list of results.
    background : int or None
        Label that is not an instance on either side (default 0).

    Examples
    --------
    >>> match_instances(np.array([1, 1, 2, 2]), np.array([3, 3, 3, 3])).f1  # one of two matched
    0.6666666666666666
    """
    t = resolve_table(gt, pred, **table_kwargs)
    p = _pairs(t, background)
    if np.isscalar(thresholds):
        return _match(p, float(thresholds))  # type: ignore[arg-type]
    return [_match(p, float(th)) for th in thresholds]  # type: ignore[union-attr]


class APResult(NamedTuple):
    """Average precision in the MitoEM convention."""

    ap50: float
    ap75: float
    map: float
    #: AP per IoU threshold (0.50, 0.55, ..., 0.95)
    per_threshold: dict[float, float]
    #: ``{tier: {"ap50", "ap75", "map", "n_gt"}}`` for the requested size tiers
    tiers: dict[str, dict[str, float]]


def _ap_curve(tp: np.ndarray, n_gt: int) -> float:
    """COCO/MitoEM 101-point interpolated AP of a score-sorted TP/FP sequence."""
    if n_gt == 0:
        return 1.0 if tp.size == 0 else 0.0
    if tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    rc = ctp / n_gt
    pr = ctp / (ctp + cfp)
    pr = np.maximum.accumulate(pr[::-1])[::-1]
    rs = np.linspace(0.0, 1.0, 101)
    idx = np.searchsorted(rc, rs, side="left")
    q = np.where(idx < pr.size, pr[np.minimum(idx, pr.size - 1)], 0.0)
    return float(q.mean())


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
    """Average precision over IoU thresholds, MitoEM / mAP_3Dvolume convention.

    ``scores`` (optional) gives each prediction's confidence, either as a mapping
    ``{pred id: score}`` or as a pair of arrays ``(pred ids, scores)``; every predicted
    instance needs one (:class:`InputError` names the first id without a score).

    * Predictions are ranked by score descending (default score: voxel count; ties by
      ascending pred id, a deterministic stand-in for MitoEM's unstable sort).
    * Each prediction's best gt is the argmax IoU among overlapping gt (ties: smallest gt id);
      it is a TP at threshold t if that IoU >= t. No one-to-one step (as MitoEM).
    * precision/recall accumulate COCO-style; precision is made monotone; AP is the mean over
      101 recall points ``linspace(0, 1, 101)`` (``searchsorted(side='left')``, 0 past the
      maximum recall). ``map`` averages AP over ``thresholds`` (default 0.50:0.05:0.95).
    * Size tiers (``area_ranges``, e.g. :data:`MITOEM_AREA_RANGES`): gt kept when
      ``lo < size <= hi``; a prediction is matched among in-range gt first; if it matches only
      an out-of-range gt, or is unmatched with an out-of-range size, it is ignored.
    * No gt instance (in a tier): AP = 1.0 when no prediction counts either, else 0.0
      (MitoEM's code crashes or returns -1 here).

    Examples
    --------
    >>> average_precision(np.array([1, 1, 2, 2]), np.array([1, 1, 2, 2])).map
    1.0
    """
    t = resolve_table(gt, pred, **table_kwargs)
    p = _pairs(t, background)
    ths = (
        np.round(np.linspace(0.5, 0.95, 10), 2)
        if thresholds is None
        else np.asarray(thresholds, float)
    )
    n_p = p.pred_ids.size
    if scores is None:
        score = p.pred_sizes.astype(np.float64)
    else:
        score = _lookup_scores(scores, p.pred_ids)
    order = np.lexsort((np.arange(n_p), -score))

    def best_match(allowed_g: np.ndarray | None) -> np.ndarray:
        """Best IoU per prediction over allowed gt (ties -> smallest gt id)."""
        best = np.zeros(n_p)
        sel = np.ones(p.iou.size, bool) if allowed_g is None else allowed_g[p.gi]
        if sel.any():
            # sort by (pred, -iou, gt) and take the first of each pred
            o = np.lexsort((p.gi[sel], -p.iou[sel], p.pj[sel]))
            pj = p.pj[sel][o]
            first = np.ones(pj.size, bool)
            first[1:] = pj[1:] != pj[:-1]
            best[pj[first]] = p.iou[sel][o][first]
        return best

    ranges = {"all": (-np.inf, np.inf)}
    if area_ranges:
        ranges.update({k: (float(v[0]), float(v[1])) for k, v in area_ranges.items()})
    best_all = best_match(None)
    results: dict[str, dict[str, Any]] = {}
    for name, (lo, hi) in ranges.items():
        g_in = (p.gt_sizes > lo) & (p.gt_sizes <= hi)
        p_in = (p.pred_sizes > lo) & (p.pred_sizes <= hi)
        best_in = best_all if g_in.all() else best_match(g_in)
        per_t = {}
        for th in ths:
            tp = best_in >= th
            ignored = ~tp & ((best_all >= th) | ~p_in)
            seq = tp[order][~ignored[order]]
            per_t[float(th)] = _ap_curve(seq, int(g_in.sum()))
        results[name] = {
            "per_threshold": per_t,
            "ap50": _nearest(per_t, 0.5),
            "ap75": _nearest(per_t, 0.75),
            "map": float(np.mean(list(per_t.values()))),
            "n_gt": int(g_in.sum()),
        }
    r = results.pop("all")
    tiers = {
        k: {"ap50": v["ap50"], "ap75": v["ap75"], "map": v["map"], "n_gt": v["n_gt"]}
        for k, v in results.items()
    }
    return APResult(r["ap50"], r["ap75"], r["map"], r["per_threshold"], tiers)


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


def _nearest(per_t: dict[float, float], th: float) -> float:
    keys = np.array(list(per_t))
    k = keys[np.argmin(np.abs(keys - th))]
    return per_t[float(k)] if abs(k - th) < 1e-9 else float("nan")


class PQResult(NamedTuple):
    """Panoptic quality ``PQ = SQ * RQ`` (Kirillov et al. 2019)."""

    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int


def panoptic_quality(
    gt: Any,
    pred: Any = None,
    *,
    threshold: float = 0.5,
    background: int | None = 0,
    **table_kwargs: Any,
) -> PQResult:
    """Panoptic quality of instance segmentations (single "thing" class).

    Matches are pairs with IoU > ``threshold`` (must be in [0.5, 1): above 0.5 matches are
    unique; :class:`InputError` otherwise); ``SQ`` = mean matched IoU,
    ``RQ = tp / (tp + fp/2 + fn/2)``. No gt and no pred: all 1.0; tp = 0 otherwise: 0.0.

    Examples
    --------
    >>> panoptic_quality(np.array([1, 1, 2, 2]), np.array([1, 1, 2, 2])).pq
    1.0
    """
    thr = float(threshold)
    if not 0.5 <= thr < 1.0:
        raise InputError(
            f"panoptic_quality: threshold must be in [0.5, 1), got {threshold}; PQ matches pairs "
            "with IoU > threshold, which are unique only for IoU > 0.5 (use match_instances "
            "for lower thresholds)"
        )
    t = resolve_table(gt, pred, **table_kwargs)
    p = _pairs(t, background)
    sel = p.iou > thr
    tp = int(sel.sum())
    fp = p.pred_ids.size - tp
    fn = p.gt_ids.size - tp
    if tp == 0:
        v = 1.0 if (fp == 0 and fn == 0) else 0.0
        return PQResult(v, v, v, 0, fp, fn)
    sq = float(p.iou[sel].mean())
    rq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return PQResult(sq * rq, sq, rq, tp, fp, fn)
