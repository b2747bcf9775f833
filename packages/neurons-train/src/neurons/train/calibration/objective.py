"""What calibration optimises: a metric of :mod:`neurons.metrics`, averaged over samples.

A metric name given by the user (``cremi``, ``voi``, ``arand``, ``ap75``...) is mapped to the
:func:`neurons.metrics.evaluate` group that computes it, the key of the report to read and the
direction in which it improves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import CalibrationError

__all__ = ["OBJECTIVES", "Objective", "get_objective", "score_samples"]


@dataclass(frozen=True)
class Objective:
    """A scalar score read from a :func:`neurons.metrics.evaluate` report.

    Attributes
    ----------
    name : str
        User-facing name (``"cremi"``).
    group : str
        Metric group passed to ``evaluate(metrics=...)``.
    key : str
        Key of the report holding the value (``"cremi_score"``).
    higher_is_better : bool
        Direction of improvement.
    """

    name: str
    group: str
    key: str
    higher_is_better: bool = False

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is strictly better than ``b`` (NaN is never better)."""
        if not np.isfinite(a):
            return False
        if not np.isfinite(b):
            return True
        return a > b if self.higher_is_better else a < b

    @property
    def worst(self) -> float:
        """The score of a trial that produced nothing usable."""
        return -np.inf if self.higher_is_better else np.inf


#: metric name -> objective (lower is better unless stated). ``arand`` is the CREMI/SNEMI3D
#: adapted Rand error (``arand_cremi``); ``voi`` is ``voi_split + voi_merge`` in bits.
OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("cremi", "cremi", "cremi_score"),
        Objective("voi", "voi", "voi_total"),
        Objective("voi_split", "voi", "voi_split"),
        Objective("voi_merge", "voi", "voi_merge"),
        Objective("arand", "arand", "arand_cremi"),
        Objective("ari", "ari", "ari", True),
        Objective("ami", "ami", "ami", True),
        Objective("ap50", "ap", "ap50", True),
        Objective("ap75", "ap", "ap75", True),
        Objective("map", "ap", "map", True),
        Objective("pq", "pq", "pq", True),
    )
}


def get_objective(metric: str | Objective) -> Objective:
    """The :class:`Objective` named ``metric``.

    Examples
    --------
    >>> get_objective("ap75").higher_is_better
    True
    """
    if isinstance(metric, Objective):
        return metric
    key = str(metric).strip().lower()
    if key not in OBJECTIVES:
        raise CalibrationError(
            f"calibration metric {metric!r} is unknown; expected one of {sorted(OBJECTIVES)}"
        )
    return OBJECTIVES[key]


def score_samples(
    gts: Sequence[np.ndarray], preds: Sequence[np.ndarray], objective: Objective
) -> float:
    """Mean of ``objective`` over (ground truth, prediction) pairs.

    Ground-truth id 0 (background, e.g. membranes) is ignored, as in the metric definitions.

    Examples
    --------
    >>> gt = np.array([[1, 1, 2, 2]])
    >>> score_samples([gt], [gt * 7], get_objective("arand"))
    0.0
    """
    from neurons.metrics import evaluate

    if len(gts) != len(preds) or not gts:
        raise CalibrationError(
            f"need as many predictions as ground truths (> 0), got {len(preds)} and {len(gts)}"
        )
    vals = [
        float(evaluate(g, p, metrics=objective.group)[objective.key])
        for g, p in zip(gts, preds, strict=True)
    ]
    return float(np.mean(vals))
