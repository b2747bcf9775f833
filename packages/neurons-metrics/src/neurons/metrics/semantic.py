"""Per-class Dice and IoU of semantic label maps, from the contingency table.

Ignore index convention: voxels whose **gt** is ``ignore_index`` are excluded (they count for
no class on either side). A voxel whose **pred** is ``ignore_index`` (and gt is not) means "no
class predicted": it is a miss (false negative) for the gt's class and a false positive for no
class. ``ignore_index`` is never scored as a class, even when listed in ``classes``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from ._common import resolve_table
from .table import ContingencyTable

__all__ = ["ClassScores", "dice", "iou"]


class ClassScores(NamedTuple):
    """Per-class scores and their mean over evaluated classes."""

    #: class id -> score, or None when the class is absent from both gt and pred
    per_class: dict[int, float | None]
    #: mean over classes present in gt or pred (1.0 when no class is present)
    mean: float


def _overlaps(
    t: ContingencyTable,
    classes: Iterable[int] | None,
    ignore_index: int | None,
    include_background: bool,
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    if ignore_index is not None:
        t = t.mask(ignore_gt=[ignore_index])
    gids, gsz = t.gt_sizes()
    pids, psz = t.pred_sizes()
    if classes is None:
        cls = sorted(set(gids.tolist()) | set(pids.tolist()))
        if ignore_index is not None and ignore_index in cls:
            cls.remove(ignore_index)
    else:
        cls = [int(c) for c in classes if ignore_index is None or int(c) != ignore_index]
    if not include_background:
        cls = [c for c in cls if c != 0]
    g = dict(zip(gids.tolist(), gsz.tolist(), strict=True))
    p = dict(zip(pids.tolist(), psz.tolist(), strict=True))
    diag = (
        t.gt_ids.astype(object) == t.pred_ids.astype(object)
        if t.gt_ids.dtype != t.pred_ids.dtype
        else t.gt_ids == t.pred_ids
    )
    inter = dict(zip(t.gt_ids[diag].tolist(), t.counts[diag].tolist(), strict=True))
    a = np.array([g.get(c, 0) for c in cls], dtype=np.float64)
    b = np.array([p.get(c, 0) for c in cls], dtype=np.float64)
    i = np.array([inter.get(c, 0) for c in cls], dtype=np.float64)
    return cls, a, b, i


def _scores(cls: list[int], num: np.ndarray, den: np.ndarray) -> ClassScores:
    present = den > 0
    vals = np.where(present, num / np.where(present, den, 1.0), 0.0)
    per = {c: (float(v) if ok else None) for c, v, ok in zip(cls, vals, present, strict=True)}
    mean = float(vals[present].mean()) if present.any() else 1.0
    return ClassScores(per, mean)


def dice(
    gt: Any,
    pred: Any = None,
    *,
    classes: Iterable[int] | None = None,
    ignore_index: int | None = 255,
    include_background: bool = True,
    **table_kwargs: Any,
) -> ClassScores:
    """Per-class Dice ``2|P∩G| / (|P| + |G|)`` of semantic maps (exact, no epsilon).

    Voxels whose gt is ``ignore_index`` are dropped; pred ``ignore_index`` on a scored voxel is
    a miss for the gt class (see the module docstring). ``classes`` defaults to every class found
    in gt or pred. A class absent from both is reported as ``None`` and excluded from the mean
    (the predecessor silently skipped it); ``include_background=False`` drops class 0.

    Examples
    --------
    >>> dice(np.array([0, 1, 1, 255]), np.array([0, 1, 0, 1])).per_class
    {0: 0.6666666666666666, 1: 0.6666666666666666}
    """
    t = resolve_table(gt, pred, **table_kwargs)
    cls, a, b, i = _overlaps(t, classes, ignore_index, include_background)
    return _scores(cls, 2 * i, a + b)


def iou(
    gt: Any,
    pred: Any = None,
    *,
    classes: Iterable[int] | None = None,
    ignore_index: int | None = 255,
    include_background: bool = True,
    **table_kwargs: Any,
) -> ClassScores:
    """Per-class IoU (Jaccard) ``|P∩G| / |P∪G|`` of semantic maps; conventions as :func:`dice`.

    Examples
    --------
    >>> iou(np.array([0, 1, 1, 255]), np.array([0, 1, 0, 1])).per_class
    {0: 0.5, 1: 0.5}
    """
    t = resolve_table(gt, pred, **table_kwargs)
    cls, a, b, i = _overlaps(t, classes, ignore_index, include_background)
    return _scores(cls, i, a + b - i)
