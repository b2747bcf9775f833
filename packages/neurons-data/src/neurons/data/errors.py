"""Exception hierarchy of :mod:`neurons.data`.

Every error raised on bad input derives from :class:`DataError`, and also from the matching
built-in exception (``FileNotFoundError``, ``ValueError``, ``ConnectionError``) so that callers
catching the built-ins keep working.
"""

from __future__ import annotations

__all__ = [
    "ChecksumError",
    "DataError",
    "DownloadError",
    "EmptyDatasetError",
    "MissingDataError",
    "OfflineError",
    "PatchSizeError",
    "ShapeMismatchError",
]


class DataError(Exception):
    """Base class of every error raised by :mod:`neurons.data`."""


class MissingDataError(DataError, FileNotFoundError):
    """Dataset files were not found; the message lists what was searched and how to download."""


class ShapeMismatchError(DataError, ValueError):
    """Image and label volumes (or volumes that must agree) have different shapes."""


class PatchSizeError(DataError, ValueError):
    """A patch does not fit into a volume or region, or has the wrong number of dimensions."""


class EmptyDatasetError(DataError, ValueError):
    """A dataset, split or sampler has nothing to serve."""


class DownloadError(DataError, OSError):
    """A download failed (HTTP error, broken transfer, unusable response)."""


class OfflineError(DownloadError, ConnectionError):
    """The server could not be reached at all (no network, DNS failure, connection refused)."""


class ChecksumError(DownloadError):
    """A downloaded or existing file does not have the expected SHA-256 digest."""
