"""Exception hierarchy of :mod:`neurons.train`."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DatasetFilesMissingError", "TrainError"]


class TrainError(Exception):
    """Base class of every error raised by :mod:`neurons.train`."""


class ConfigError(TrainError, ValueError):
    """A configuration key is unknown, has the wrong type or an invalid value.

    The message always names the offending key with its full dotted path
    (e.g. ``data.batch_size``) and what was expected.
    """


class DatasetFilesMissingError(TrainError, FileNotFoundError):
    """The files of a dataset selected by ``data.name`` are not on disk.

    The message names the folder that was searched and the download script to run.
    """


class CheckpointError(TrainError):
    """A checkpoint cannot be found, read or used to rebuild a model."""
