"""Exceptions raised by :mod:`neurons.train.inference`."""

from __future__ import annotations

from neurons.train.errors import CheckpointError as _TrainCheckpointError

__all__ = ["CheckpointError", "DecodeError", "InferenceError", "StitchError"]


class InferenceError(RuntimeError):
    """Base class: inference was asked for something it cannot do (message says what/why)."""


class DecodeError(InferenceError):
    """Model outputs cannot be decoded into instances (wrong shapes, channels, parameters)."""


class StitchError(InferenceError):
    """Block-wise processing failed (block geometry, output file, scheduler)."""


class CheckpointError(InferenceError, _TrainCheckpointError):
    """A checkpoint cannot be turned into a predictor (also a ``neurons.train.CheckpointError``)."""
