"""Helpers shared by the metric modules (table resolution, exact sums)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import InputError
from .table import ContingencyTable, contingency_table

Labels = Iterable[int] | int | None


def resolve_table(gt: Any, pred: Any, **table_kwargs: Any) -> ContingencyTable:
    """``gt`` may already be a :class:`ContingencyTable` (then ``pred`` must be None)."""
    if isinstance(gt, ContingencyTable):
        if pred is not None:
            raise InputError("pass either (table, None) or (gt, pred), not a table and a volume")
        return gt
    if pred is None:
        raise InputError("pred is required when gt is not a ContingencyTable")
    return contingency_table(gt, pred, **table_kwargs)


_LIMB = 21  # counts < 2**63 split into three 21-bit limbs; limb products < 2**42
_CHUNK = 1 << 20  # 2**20 products of < 2**42 sum below 2**62: no int64 overflow


def sum_squares(c: np.ndarray) -> int:
    """Exact ``sum(c**2)`` of non-negative integer counts, as a Python int.

    Parameters
    ----------
    c : ndarray
        Non-negative counts (< 2**63).

    Returns
    -------
    int
        The exact sum; int64 arithmetic while it cannot overflow, otherwise each count is
        split into three 21-bit limbs and the limb products are summed in int64 chunks of
        2**20 entries, combined exactly as Python ints (vectorised, no per-entry loop).

    Examples
    --------
    >>> sum_squares(np.array([3, 4]))
    25
    >>> sum_squares(np.array([2**40, 1])) == 2**80 + 1
    True
    """
    if c.size == 0:
        return 0
    c = c.astype(np.int64, copy=False).ravel()
    total = int(c.sum(dtype=np.int64)) if int(c.max()) < (1 << 62) // c.size else None
    if total is not None and total < 3_037_000_499:  # sum(c^2) <= total^2 < 2^63
        return int(np.dot(c, c))
    mask = np.int64((1 << _LIMB) - 1)
    out = 0
    for s in range(0, c.size, _CHUNK):  # loop over chunks of 2**20 entries, not entries
        x = c[s : s + _CHUNK]
        limbs = [x & mask, (x >> _LIMB) & mask, x >> (2 * _LIMB)]
        for i in range(3):
            for j in range(i, 3):
                part = int(np.dot(limbs[i], limbs[j]))
                out += (part if i == j else 2 * part) << (_LIMB * (i + j))
    return out


def ratio(num: float, den: float, empty: float = 1.0) -> float:
    """``num / den`` with a documented value when the denominator is zero."""
    return float(num) / float(den) if den else float(empty)


def xlogx(c: np.ndarray, log: Any = np.log) -> float:
    """``sum(c * log(c))`` over positive counts (float64)."""
    if c.size == 0:
        return 0.0
    c = c.astype(np.float64)
    return float(np.dot(c, log(c)))
