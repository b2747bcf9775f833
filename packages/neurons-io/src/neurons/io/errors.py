"""Exception hierarchy of :mod:`neurons.io`.

Every error raised on purpose by this package derives from :class:`VolumeError`, so callers can
catch one class. Messages name the file, the key and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable


class VolumeError(Exception):
    """Base class of every error raised by :mod:`neurons.io`."""


class UnknownFormatError(VolumeError):
    """The path is not a volume in any supported format (the message says what was tried)."""


class KeyNotFoundError(VolumeError, KeyError):
    """A key (dataset path inside a container) does not exist, or one is needed but missing.

    Attributes
    ----------
    available : list of str
        The array keys the container does hold.
    """

    def __init__(self, message: str, available: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.available = list(available)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class CorruptFileError(VolumeError):
    """The file looks like a supported format but is truncated or damaged."""


class InvalidVolumeError(VolumeError, ValueError):
    """The array is not a volume: wrong number of dimensions, mixed slice shapes/dtypes, ..."""


class UnsupportedDtypeError(VolumeError, TypeError):
    """The destination format cannot store this dtype losslessly."""


class VolumeReadError(VolumeError, OSError):
    """The file or folder exists but cannot be read (permissions, I/O error)."""


class PathError(VolumeError, ValueError):
    """The path itself is unusable: empty, or it points outside the folder it must stay in."""


class VolumeWriteError(VolumeError, OSError):
    """The destination cannot be written (permissions, missing folder, disk full, bad options)."""


class MissingDependencyError(VolumeError, ImportError):
    """An optional dependency (e.g. ``zarr``) is needed for this format but not installed."""
