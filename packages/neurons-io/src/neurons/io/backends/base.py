"""What every format backend provides, and small helpers they share."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidVolumeError, PathError, UnsupportedDtypeError, VolumeWriteError
from ..indexing import Box

Blocks = Iterable[np.ndarray]


@contextlib.contextmanager
def quiet_logs(*names: str) -> Iterator[None]:
    """Silence third-party loggers (nibabel, tifffile) that would print damage reports to stderr;
    the damage surfaces as a typed error instead."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def sidecar(path: Path, name: str, what: str, *, allow_absolute: bool = True) -> Path:
    """Resolve a file that ``path`` refers to (``what``, e.g. "NRRD 'data file: x.raw'").

    Raises :class:`PathError` unless it lies inside ``path``'s folder (after following symbolic
    links), so nothing outside the folder of a file the user named is ever opened.
    """
    folder = path.resolve().parent
    target = (folder / name).resolve()
    if (not allow_absolute and Path(name).is_absolute()) or not target.is_relative_to(folder):
        raise PathError(
            f"{path}: {what} points outside the file's folder {folder}; refused (only files next "
            f"to {path.name} are read)"
        )
    return target


class Reader:
    """A lazily opened array. Subclasses set the attributes and implement :meth:`read`."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...] | None = None
    voxel_size: tuple[float, ...] | None = None
    attrs: dict[str, Any]
    compression: str | None = None

    def read(self, box: Box) -> np.ndarray:  # pragma: no cover - abstract
        """Read the region ``box`` (unit-step slices, one per axis) as a new array."""
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles (idempotent)."""


@dataclass
class WriteSpec:
    """Everything a backend needs to write one array."""

    target: Path  # final destination (decides e.g. .nii vs .nii.gz)
    tmp: Path  # where to write; renamed onto ``target`` afterwards
    shape: tuple[int, ...]
    dtype: np.dtype
    key: str | None = None
    voxel_size: tuple[float, ...] | None = None
    chunks: tuple[int, ...] | bool | None = None
    compression: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def storage_dtype(dtype, allowed, fmt: str, where) -> np.dtype:
    """dtype written to disk: bool becomes uint8 (with a format marker); others must be allowed."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    allowed = [np.dtype(a) for a in allowed]
    if dtype not in allowed:
        raise UnsupportedDtypeError(
            f"{where}: {fmt} cannot store dtype {dtype}; supported: bool, "
            + ", ".join(a.name for a in allowed)
        )
    return dtype


def native(dtype: np.dtype) -> np.dtype:
    """The native-byte-order equivalent of ``dtype``."""
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("=") if dtype.byteorder not in ("=", "|") else dtype


def spatial_ndim(ndim: int) -> int:
    """Number of spatial axes: 2 for (Y, X), 3 for (Z, Y, X) and (C, Z, Y, X)."""
    return min(ndim, 3)


def check_volume_shape(shape: tuple[int, ...], where: str) -> None:
    """Raise :class:`InvalidVolumeError` unless the array is 2-D, 3-D or 4-D."""
    if not 2 <= len(shape) <= 4:
        raise InvalidVolumeError(
            f"{where}: expected a 2-D (Y, X), 3-D (Z, Y, X) or 4-D (C, Z, Y, X) array, "
            f"got {len(shape)}-D shape {tuple(shape)}"
        )


SUPPORTED_KINDS = "biuf"


def check_dtype(dtype: np.dtype, where: str) -> None:
    """Raise :class:`UnsupportedDtypeError` for dtypes no format stores (object, str, ...)."""
    if np.dtype(dtype).kind not in SUPPORTED_KINDS:
        raise UnsupportedDtypeError(
            f"{where}: dtype {np.dtype(dtype)} is not a volume dtype (bool, int, uint, float)"
        )


def voxel_size_from(values, ndim: int, scale: float = 1.0) -> tuple[float, ...] | None:
    """Normalise stored spacing values to a (z, y, x) / (y, x) tuple in nm, or ``None``."""
    if values is None:
        return None
    vals = np.asarray(values, dtype=np.float64).ravel() * scale
    n = spatial_ndim(ndim)
    if vals.size < n or not np.all(np.isfinite(vals[-n:])) or np.any(vals[-n:] <= 0):
        return None
    return tuple(float(v) for v in vals[-n:])


def iter_pages(blocks: Blocks) -> Iterator[np.ndarray]:
    """Yield the 2-D (or (Y, X, C)) pages of consecutive z-slabs."""
    for block in blocks:
        yield from block


def rechunk(blocks: Blocks, length: int) -> Iterator[np.ndarray]:
    """Re-cut consecutive slabs into slabs of exactly ``length`` planes (the last may be shorter).

    Chunked stores (HDF5, Zarr) then write whole chunk rows instead of read-modify-writing partial
    chunks; memory stays at one chunk row plus one incoming slab.
    """
    pending: list[np.ndarray] = []
    have = 0
    for block in blocks:
        block = np.asarray(block)
        while block.shape[0]:
            take = min(length - have, block.shape[0])
            pending.append(block[:take])
            have += take
            block = block[take:]
            if have == length:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, have = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


def gather(blocks: Blocks) -> np.ndarray:
    """Concatenate slabs (used only where a format needs the whole array, e.g. one 2-D page)."""
    parts = [np.asarray(b) for b in blocks]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def reject_compression(spec: WriteSpec, fmt: str, allowed: tuple[str, ...]) -> None:
    """Raise :class:`VolumeWriteError` when ``spec.compression`` is not in ``allowed``."""
    if spec.compression is not None and spec.compression not in allowed:
        raise VolumeWriteError(
            f"{spec.target}: compression {spec.compression!r} is not available for {fmt}; "
            f"choose one of {', '.join(map(repr, (None, *allowed)))}"
        )


def single_array_key(path: Path, key: str | None, fmt: str) -> None:
    """Single-array formats take no key: raise :class:`KeyNotFoundError` for any other."""
    from ..errors import KeyNotFoundError

    if key is not None:
        raise KeyNotFoundError(
            f"{path}: key {key!r} not found; a {fmt} file holds one unnamed array "
            "(available keys: none, open it without a key)",
            available=[],
        )
