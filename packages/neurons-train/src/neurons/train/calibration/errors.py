"""Exceptions raised by :mod:`neurons.train.calibration`."""

from __future__ import annotations

from neurons.train.errors import TrainError

__all__ = ["CalibrationError"]


class CalibrationError(TrainError, ValueError):
    """Calibration was asked for something it cannot do (unknown metric or decoder, no
    validation split, a checkpoint without a usable config...). The message names it."""
