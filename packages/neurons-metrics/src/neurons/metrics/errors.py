"""Exception hierarchy of :mod:`neurons.metrics`."""

from __future__ import annotations

__all__ = ["MetricsError", "InputError", "ShapeMismatchError", "TableMergeError", "TEDError"]


class MetricsError(Exception):
    """Base class of every error raised by :mod:`neurons.metrics`."""


class InputError(MetricsError, ValueError):
    """An input has the wrong type, dtype or value (the message names it and what was expected)."""


class ShapeMismatchError(InputError):
    """Ground truth and prediction do not have the same shape."""


class TableMergeError(MetricsError, ValueError):
    """Two contingency tables cannot be merged (incompatible id dtypes)."""


class TEDError(MetricsError):
    """The tolerant edit distance cannot be computed (too large, or the solver failed)."""
