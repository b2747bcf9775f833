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


def sum_squares(c: np.ndarray) -> int:
    """Exact ``sum(c**2)`` as a Python int (int64 while it cannot overflow)."""
    if c.size == 0:
        return 0
    total = int(c.sum(dtype=np.int64))
    if total < 3_037_000_499:  # sum(c^2) <= total^2 < 2^63
        c = c.astype(np.int64, copy=False)
        return int(np.dot(c, c))
    return sum(int(v) * int(v) for v in c.tolist())


def ratio(num: float, den: float, empty: float = 1.0) -> float:
    """``num / den`` with a documented value when the denominator is zero."""
    return float(num) / float(den) if den else float(empty)


def xlogx(c: np.ndarray, log: Any = np.log) -> float:
    """``sum(c * log(c))`` over positive counts (float64)."""
    if c.size == 0:
        return 0.0
    c = c.astype(np.float64)
    return float(np.dot(c, log(c)))
