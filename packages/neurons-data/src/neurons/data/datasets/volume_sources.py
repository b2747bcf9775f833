"""Opening user volumes: ``file.h5:key``, containers, folders, files and ``*.png`` globs."""

from __future__ import annotations

import glob
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingDataError, ShapeMismatchError
from ..volume import ArraySource
from .base import io_attrs, natural_key

__all__ = ["GlobStack", "VolumeSpecError", "file_voxel_size", "open_source"]


class VolumeSpecError(DataError, ValueError):
    """A ``volumes`` entry is invalid: unknown key, bad value, unreadable or mismatching file."""



class GlobStack:
    """Lazy ``(Z, Y, X)`` stack of 2-D image files matched by a glob (one file per section)."""

    def __init__(self, pattern: str) -> None:
        from neurons.io import open_volume

        self.files = sorted(glob.glob(pattern), key=natural_key)
        if not self.files:
            raise MissingDataError(f"{pattern}: no files match this pattern")
        first = open_volume(self.files[0])
        self.dtype = np.dtype(first.dtype)
        self.voxel_size = None
        for f in self.files[1:]:
            v = open_volume(f)
            if v.shape != first.shape or np.dtype(v.dtype) != self.dtype:
                raise ShapeMismatchError(
                    f"{pattern}: {self.files[0]} is {first.shape} {self.dtype} but {f} is "
                    f"{v.shape} {v.dtype}; every section must have the same shape and dtype"
                )
        if len(first.shape) != 2:
            raise ShapeMismatchError(f"{self.files[0]}: expected a 2-D section, got shape {first.shape}")
        self.shape = (len(self.files), *first.shape)

    def __getitem__(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        from neurons.io import read_volume

        zs = range(*box[0].indices(self.shape[0]))
        yx = tuple(len(range(*b.indices(n))) for b, n in zip(box[1:], self.shape[1:], strict=True))
        out = np.empty((len(zs), *yx), self.dtype)
        for i, z in enumerate(zs):
            out[i] = np.asarray(read_volume(self.files[z]))[box[1:]]
        return out


def _open_glob(pattern: str) -> GlobStack:
    return GlobStack(pattern)


def open_source(path: str, where: str) -> ArraySource:
    """An :class:`ArraySource` for ``path`` (``file.h5:key``, folder, file or ``*.png`` glob).

    Raises
    ------
    MissingDataError
        The file (or every glob match) does not exist.
    VolumeSpecError
        The file exists but cannot be read (wrong or missing key: the keys found are listed).
    """
    from neurons.io import KeyNotFoundError, VolumeError, split_key

    try:
        if any(ch in Path(path).name for ch in "*?["):
            return ArraySource(opener=partial(_open_glob, path), description=path)
        file, key = split_key(path)
        if not file.exists():
            raise MissingDataError(f"{where}: {file} does not exist")
        return ArraySource.from_file(file, key)
    except KeyNotFoundError as exc:
        raise VolumeSpecError(f"{where}: {exc}") from exc
    except (VolumeError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise VolumeSpecError(f"{where}: cannot read {path}: {exc}") from exc


def file_voxel_size(src: ArraySource) -> tuple[float, float, float] | None:
    """``(z, y, x)`` nm stored in the file behind ``src``, or None."""
    try:
        _, vs = io_attrs(src)
    except Exception:  # noqa: BLE001 - a source without file metadata
        return None
    return None if vs is None or len(vs) != 3 else vs  # type: ignore[return-value]
