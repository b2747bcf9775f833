"""Partition-comparison metrics computed from the sparse contingency table.

Every function takes ``(gt, pred)`` volumes (anything :func:`contingency_table` accepts) or a
precomputed :class:`ContingencyTable` as ``gt`` with ``pred=None``.

Conventions (see the package README):

* ``ignore_gt`` / ``ignore_pred``: a voxel is dropped when its gt id is in ``ignore_gt`` **or**
  its pred id is in ``ignore_pred``. Defaults ``ignore_gt=(0,)`` (gt background is not scored),
  ``ignore_pred=()`` (pred 0 is an ordinary label, as in CREMI/funlib/skimage).
* N, a_i, b_j, n_ij below are counts after masking.
* Empty input (no voxel left after masking) has nothing to disagree on: distances are 0 and
  agreement scores 1; no function divides by zero or returns NaN.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import numpy as np

from ._common import Labels, ratio, resolve_table, sum_squares, xlogx
from .emi import expected_mutual_information
from .errors import InputError
from .table import ContingencyTable

__all__ = [
    "VOI",
    "ARand",
    "variation_of_information",
    "adapted_rand_error",
    "cremi_score",
    "rand_index",
    "adjusted_rand_index",
    "mutual_information",
    "adjusted_mutual_info",
    "normalized_mutual_info",
    "axi",
]


class VOI(NamedTuple):
    """Variation of information (bits). ``split`` = H(pred|gt), ``merge`` = H(gt|pred)."""

    split: float
    merge: float

    @property
    def total(self) -> float:
        """``split + merge``."""
        return self.split + self.merge


class ARand(NamedTuple):
    """Adapted Rand error with its precision (merge side) and recall (split side)."""

    error: float
    precision: float
    recall: float


def _masked(
    gt: Any, pred: Any, ignore_gt: Labels, ignore_pred: Labels, kw: dict
) -> ContingencyTable:
    return resolve_table(gt, pred, **kw).mask(ignore_gt, ignore_pred)


def _sizes(t: ContingencyTable) -> tuple[np.ndarray, np.ndarray]:
    return t.gt_sizes()[1], t.pred_sizes()[1]


def variation_of_information(
    gt: Any,
    pred: Any = None,
    *,
    ignore_gt: Labels = (0,),
    ignore_pred: Labels = (),
    **table_kwargs: Any,
) -> VOI:
    """Variation of information split/merge in bits (log2).

    ``split = H(pred | gt) = (sum_i a_i log2 a_i - sum_ij n_ij log2 n_ij) / N`` measures
    over-segmentation (false splits); ``merge = H(gt | pred)`` (same with b_j) measures
    under-segmentation (false merges). Matches cremi_python/funlib (gt 0 ignored) and
    ``skimage.metrics.variation_of_information(gt, pred, ignore_labels=[0])``.

    Parameters
    ----------
    gt, pred : array-like or (ContingencyTable, None)
        Label volumes of equal shape, or a precomputed table.
    ignore_gt, ignore_pred : iterable of int
        Ids whose voxels are dropped (gt background 0 by default).
    **table_kwargs
        ``block_size``, ``n_threads``, ``progress`` for :func:`contingency_table`.

    Returns
    -------
    VOI
        ``(split, merge)`` with ``.total``; ``(0.0, 0.0)`` when no voxel is left.

    Examples
    --------
    >>> variation_of_information(np.array([1, 1, 2, 2]), np.array([1, 1, 1, 1]))
    VOI(split=0.0, merge=1.0)
    """
    t = _masked(gt, pred, ignore_gt, ignore_pred, table_kwargs)
    n = t.n
    if n == 0:
        return VOI(0.0, 0.0)
    a, b = _sizes(t)
    hn = xlogx(t.counts, np.log2)
    split = max(0.0, (xlogx(a, np.log2) - hn) / n)
    merge = max(0.0, (xlogx(b, np.log2) - hn) / n)
    return VOI(split, merge)


def adapted_rand_error(
    gt: Any,
    pred: Any = None,
    *,
    convention: Literal["cremi", "pairs", "skimage"] = "cremi",
    ignore_gt: Labels = (0,),
    ignore_pred: Labels = (),
    pred_background: int = 0,
    **table_kwargs: Any,
) -> ARand:
    """Adapted Rand error ``1 - F`` with precision and recall, in a named convention.

    Conventions (with sums over the masked table unless stated):

    ``"cremi"`` (default)
        SNEMI3D/CREMI official formula (cremi_python ``rand.py``): N counts **all** voxels
        (gt-ignored ones too); ``a_i`` sums row i including the pred-background column;
        ``b_j`` (j != pred background) sums non-ignored rows; ``c`` = non-ignored voxels with
        pred background. ``sumA = sum a_i^2``, ``sumB = sum b_j^2 + c/N``,
        ``sumAB = sum_{j != bg} n_ij^2 + c/N``; precision = sumAB/sumB, recall = sumAB/sumA.
        Pred-background voxels inside gt foreground act as pure recall loss.
    ``"pairs"``
        funlib / waterz / elf pair counting with self-pairs, pred 0 ordinary:
        precision = sum n^2 / sum b^2 (funlib ``rand_merge``), recall = sum n^2 / sum a^2
        (``rand_split``); error = 1 - 2 sum n^2 / (sum a^2 + sum b^2).
    ``"skimage"``
        pairs without self-pairs (``skimage.metrics.adapted_rand_error``): p = sum n^2 - N,
        A = sum a^2 - N, B = sum b^2 - N; error = 1 - 2p/(A + B); precision = p/B, recall =
        p/A. (scikit-image returns these two swapped, issue #6485; its error is the same.)

    Sums of squares are exact integers. With nothing to compare (no gt-foreground voxel, or a
    zero denominator) the result is ``(0.0, 1.0, 1.0)``.

    Examples
    --------
    >>> gt = np.array([1, 1, 2, 2]); pred = np.array([1, 1, 1, 1])
    >>> adapted_rand_error(gt, pred, convention="pairs")
    ARand(error=0.33333333333333337, precision=0.5, recall=1.0)
    """
    full = resolve_table(gt, pred, **table_kwargs).mask((), ignore_pred)
    if convention == "cremi":
        n_all = full.n
        t = full.mask(ignore_gt, ())
        if t.n == 0 or n_all == 0:
            return ARand(0.0, 1.0, 1.0)
        a = t.gt_sizes()[1]
        bg = (
            np.isin(t.pred_ids, np.array([pred_background]).astype(t.pred_ids.dtype))
            if (_representable(pred_background, t.pred_ids.dtype))
            else np.zeros(len(t), bool)
        )
        c = int(t.counts[bg].sum())
        fg = t.mask((), [pred_background]) if bg.any() else t
        b = fg.pred_sizes()[1]
        sum_a = sum_squares(a)
        sum_b = sum_squares(b) + c / n_all
        sum_ab = sum_squares(fg.counts) + c / n_all
        prec = ratio(sum_ab, sum_b)
        rec = ratio(sum_ab, sum_a)
    elif convention in ("pairs", "skimage"):
        t = full.mask(ignore_gt, ())
        n = t.n
        if n == 0:
            return ARand(0.0, 1.0, 1.0)
        a, b = _sizes(t)
        snn, saa, sbb = sum_squares(t.counts), sum_squares(a), sum_squares(b)
        if convention == "skimage":
            snn, saa, sbb = snn - n, saa - n, sbb - n
        prec = ratio(snn, sbb)
        rec = ratio(snn, saa)
        if saa + sbb == 0:
            return ARand(0.0, 1.0, 1.0)
        return ARand(1.0 - 2.0 * snn / (saa + sbb), prec, rec)
    else:
        raise InputError(
            f"unknown adapted Rand convention {convention!r}; expected 'cremi', 'pairs' or 'skimage'"
        )
    f = ratio(2.0 * prec * rec, prec + rec, empty=0.0)
    return ARand(1.0 - f, prec, rec)


def _representable(v: int, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return info.min <= int(v) <= info.max


def cremi_score(
    gt: Any,
    pred: Any = None,
    *,
    ignore_gt: Labels = (0,),
    ignore_pred: Labels = (),
    convention: Literal["cremi", "pairs", "skimage"] = "cremi",
    **table_kwargs: Any,
) -> float:
    """CREMI score ``sqrt(ARAND * (VOI_split + VOI_merge))`` (lower is better).

    The official score uses the ``"cremi"`` ARAND convention (default); elf's ``cremi_score``
    corresponds to ``convention="pairs"``. The CREMI border mask (a gt preprocessing step) is
    not applied here: use :func:`neurons.metrics.apply_cremi_border_mask` or
    ``evaluate(..., convention="cremi")``.

    Examples
    --------
    >>> cremi_score(np.array([1, 1, 2, 2]), np.array([1, 1, 2, 2]))
    0.0
    """
    t = resolve_table(gt, pred, **table_kwargs)
    voi = variation_of_information(t, ignore_gt=ignore_gt, ignore_pred=ignore_pred)
    are = adapted_rand_error(t, convention=convention, ignore_gt=ignore_gt, ignore_pred=ignore_pred)
    return math.sqrt(max(0.0, are.error) * voi.total)


def _pair_sums(t: ContingencyTable) -> tuple[int, int, int, int]:
    a, b = _sizes(t)
    return t.n, sum_squares(t.counts), sum_squares(a), sum_squares(b)


def rand_index(
    gt: Any,
    pred: Any = None,
    *,
    ignore_gt: Labels = (0,),
    ignore_pred: Labels = (),
    **table_kwargs: Any,
) -> float:
    """Rand index over unordered pairs of distinct voxels (``sklearn.metrics.rand_score``).

    ``RI = (agreeing pairs) / (N (N - 1) / 2)``; 1.0 when N <= 1. Exact integer pair counts.

    Examples
    --------
    >>> rand_index(np.array([1, 1, 2, 2]), np.array([1, 1, 1, 1]))
    0.3333333333333333
    """
    t = _masked(gt, pred, ignore_gt, ignore_pred, table_kwargs)
    n, snn, saa, sbb = _pair_sums(t)
    total = n * (n - 1)
    agree = (snn - n) + (n * n - saa - sbb + snn)
    if total == 0 or agree == total:
        return 1.0
    return agree / total


def adjusted_rand_index(
    gt: Any,
    pred: Any = None,
    *,
    ignore_gt: Labels = (0,),
    ignore_pred: Labels = (),
    **table_kwargs: Any,
) -> float:
    """Adjusted Rand index (Hubert & Arabie), scikit-learn's pair-confusion formula.

    Exact integer arithmetic (no int64 overflow beyond 3e9 voxels). 1.0 when there are no
    false-split and no false-merge pairs (this covers empty input).

    Examples
    --------
    >>> adjusted_rand_index(np.array([1, 1, 2, 2]), np.array([5, 5, 6, 6]))
    1.0
    """
    t = _masked(gt, pred, ignore_gt, ignore_pred, table_kwargs)
    n, snn, saa, sbb = _pair_sums(t)
    tp = snn - n
    fp = sbb - snn
    fn = saa - snn
    tn = n * n - fp - fn - snn
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _entropies(t: ContingencyTable) -> tuple[float, float, float]:
    """(MI, H_gt, H_pred) in nats."""
    n = t.n
    a, b = _sizes(t)
    ln_n = math.log(n)
    h_a = max(0.0, ln_n - xlogx(a) / n)
    h_b = max(0.0, ln_n - xlogx(b) / n)
    if a.size <= 1 or b.size <= 1:
        return 0.0, h_a, h_b
    # MI = sum n_ij/N ln(N n_ij / (a_i b_j)), evaluated as H_a + H_b - H_ab
    h_ab = ln_n - xlogx(t.counts) / n
    mi = max(0.0, h_a + h_b - h_ab)
    return mi, h_a, h_b


def mutual_information(
    gt: Any,
    pred: Any = None,
    *,
    ignore_gt: Labels = (0,),
    ignore_pred: Labels = (),
    **table_kwargs: Any,
) -> float:
    """Mutual information in nats (0.0 for empty input).

    Examples
    --------
    >>> round(mutual_information(np.array([1, 1, 2, 2]), np.array([1, 1, 2, 2])), 6)
    0.693147
    """
    t = _masked(gt, pred, ignore_gt, ignore_pred, table_kwargs)
    return 0.0 if t.n == 0 else _entropies(t)[0]


def adjusted_mutual_info(
    gt: Any,
    pred: Any = None,
    *,
    ignore_gt: Labels = (0,),
    ignore_pred: Labels = (),
    n_threads: int | None = None,
    **table_kwargs: Any,
) -> float:
    """Adjusted mutual information, arithmetic normalisation (scikit-learn >= 0.22 default).

    ``AMI = (MI - E[MI]) / (mean(H_gt, H_pred) - E[MI])`` with the **exact** expected mutual
    information (:func:`neurons.metrics.emi.expected_mutual_information`; fast at SNEMI3D size).
    Special cases as scikit-learn: both labellings a single cluster (or empty) -> 1.0; exactly
    one a single cluster -> 0.0; numerator/denominator clamped away from 0 by +-eps.

    Examples
    --------
    >>> adjusted_mutual_info(np.array([1, 1, 2, 2]), np.array([7, 7, 9, 9]))
    1.0
    """
    t = _masked(gt, pred, ignore_gt, ignore_pred, table_kwargs)
    n_a, n_b = t.n_gt, t.n_pred
    if (n_a == n_b == 1) or (n_a == n_b == 0):
        return 1.0
    if n_a == 1 or n_b == 1:
        return 0.0
    mi, h_a, h_b = _entropies(t)
    a, b = _sizes(t)
    emi = expected_mutual_information(a, b, n_threads=n_threads)
    eps = np.finfo(np.float64).eps
    den = 0.5 * (h_a + h_b) - emi
    den = min(den, -eps) if den < 0 else max(den, eps)
    num = mi - emi
    num = min(num, -eps) if num < 0 else max(num, eps)
    return float(num / den)


def normalized_mutual_info(
    gt: Any,
    pred: Any = None,
    *,
    ignore_gt: Labels = (0,),
    ignore_pred: Labels = (),
    **table_kwargs: Any,
) -> float:
    """Normalised mutual information ``MI / mean(H_gt, H_pred)`` (arithmetic, as scikit-learn).

    1.0 when both labellings are a single cluster (or empty); 0.0 when MI is 0.

    Examples
    --------
    >>> normalized_mutual_info(np.array([1, 1, 2, 2]), np.array([3, 3, 3, 3]))
    0.0
    """
    t = _masked(gt, pred, ignore_gt, ignore_pred, table_kwargs)
    n_a, n_b = t.n_gt, t.n_pred
    if (n_a == n_b == 1) or (n_a == n_b == 0):
        return 1.0
    mi, h_a, h_b = _entropies(t)
    if mi == 0.0:
        return 0.0
    return float(mi / (0.5 * (h_a + h_b)))


def axi(
    gt: Any,
    pred: Any = None,
    *,
    ignore_gt: Labels = (0,),
    ignore_pred: Labels = (),
    **table_kwargs: Any,
) -> float:
    """AXI: geometric mean ``sqrt(max(ARI, 0) * max(AMI, 0))`` (kept from the predecessor).

    Not a community-standard metric; reported for continuity.

    Examples
    --------
    >>> axi(np.array([1, 1, 2, 2]), np.array([1, 1, 2, 2]))
    1.0
    """
    t = resolve_table(gt, pred, **table_kwargs)
    ari = adjusted_rand_index(t, ignore_gt=ignore_gt, ignore_pred=ignore_pred)
    ami = adjusted_mutual_info(t, ignore_gt=ignore_gt, ignore_pred=ignore_pred)
    return math.sqrt(max(ari, 0.0) * max(ami, 0.0))
