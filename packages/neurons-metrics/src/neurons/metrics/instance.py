"""Instance matching and panoptic quality (average precision: :mod:`neurons.metrics.ap`).

All computed from the sparse contingency table: IoU of a gt/pred pair is
``n_ij / (a_i + b_j - n_ij)`` with **full** object sizes (overlap with background included),
and only pairs that overlap are ever looked at (no dense n_gt x n_pred matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import maximum_bipartite_matching

from ._common import resolve_table
from .errors import InputError
from .table import ContingencyTable

__all__ = ["MatchResult", "PQResult", "match_instances", "panoptic_quality"]


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
