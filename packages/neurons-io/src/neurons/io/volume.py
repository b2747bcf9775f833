"""The lazy :class:`Volume` and the read-side API: ``open_volume``, ``read_volume``, ``list_keys``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import recover
from .backends import get_backend
from .backends.base import Reader
from .detect import detect_format
from .errors import UnknownFormatError
from .indexing import box_shape, split_index
from .paths import PathLike, split_key

DEFAULT_BLOCK_BYTES = 64 * 2**20


class Volume:
    """A lazily opened array on disk, indexed like a numpy array.

    Slicing (``vol[10:20, :, 100:200]``) reads only that region where the format allows
    (HDF5, Zarr, memory-mapped .npy/.nrrd/uncompressed TIFF, per-page TIFF and slice folders);
    ``np.asarray(vol)`` reads everything. Use it as a context manager or call :meth:`close`.

    Attributes
    ----------
    path : Path
        The file or folder.
    key : str or None
        Array key inside a container (HDF5 dataset path, Zarr array path), else ``None``.
    format : str
        ``"hdf5"``, ``"tiff"``, ``"png"``, ``"slices"``, ``"nrrd"``, ``"nifti"``, ``"npy"`` or
        ``"zarr"``.
    shape, dtype, ndim
        As for numpy; arrays are (Z, Y, X) or (Y, X) (4-D: (C, Z, Y, X) as stored).
    voxel_size : tuple of float or None
        (z, y, x) (or (y, x)) in nm; ``None`` when the file does not say.
    chunks : tuple of int or None
        Storage chunks (HDF5/Zarr), else ``None``.
    attrs : dict
        Format metadata (HDF5/Zarr attributes, NRRD header, NIfTI header fields, ...).
    """

    def __init__(self, reader: Reader, path: Path, key: str | None, fmt: str) -> None:
        self._reader = reader
        self.path = path
        self.key = getattr(reader, "key", key)
        self.format = fmt

    # -- metadata -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._reader.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._reader.dtype)

    @property
    def ndim(self) -> int:
        return len(self._reader.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def voxel_size(self) -> tuple[float, ...] | None:
        return self._reader.voxel_size

    @property
    def chunks(self) -> tuple[int, ...] | None:
        return self._reader.chunks

    @property
    def compression(self) -> str | None:
        return self._reader.compression

    @property
    def attrs(self) -> dict[str, Any]:
        return self._reader.attrs

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        where = f"{self.path}:{self.key}" if self.key else str(self.path)
        return (
            f"Volume({where!r}, format={self.format!r}, shape={self.shape}, dtype={self.dtype}, "
            f"voxel_size={self.voxel_size})"
        )

    # -- data ---------------------------------------------------------------------------------
    def __getitem__(self, index) -> np.ndarray:
        box, post = split_index(index, self.shape)
        if any(s.stop <= s.start for s in box):
            data = np.empty(box_shape(box), self.dtype)
        else:
            data = self._reader.read(box)
        if data.dtype != self.dtype:
            data = data.astype(self.dtype)
        if all(isinstance(p, slice) and p == slice(None) for p in post):
            return data
        return np.asarray(data[post])

    def read(self) -> np.ndarray:
        """Read the whole array."""
        return self[...]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self.read()
        return data if dtype is None else data.astype(dtype, copy=False)

    def block_length(self, max_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
        """Number of leading-axis planes that fit in ``max_bytes`` (at least 1)."""
        plane = max(1, self.nbytes // max(1, self.shape[0])) if self.shape[0] else 1
        return max(1, min(self.shape[0] or 1, max_bytes // plane))

    def iter_blocks(
        self, length: int | None = None, max_bytes: int = DEFAULT_BLOCK_BYTES
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(z_slice, block)`` slabs along axis 0 with bounded memory.

        Parameters
        ----------
        length : int, optional
            Planes per slab; default: as many as fit in ``max_bytes``.
        max_bytes : int
            Memory budget per slab when ``length`` is not given.
        """
        n = length or self.block_length(max_bytes)
        for z0 in range(0, self.shape[0], n):
            sl = slice(z0, min(z0 + n, self.shape[0]))
            yield sl, self[sl]

    def to_dask(self, chunks="auto"):
        """A ``dask.array`` view (needs the ``dask`` extra); blocks are read lazily."""
        import dask.array as da

        return da.from_array(self, chunks=chunks, asarray=True, lock=self.format == "hdf5")

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Release the underlying file handles."""
        self._reader.close()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # pickles by reference: reopened in the other process
        return {"path": self.path, "key": self.key, "format": self.format}

    def __setstate__(self, state: dict) -> None:
        reader = get_backend(state["format"]).open(state["path"], state["key"])
        self.__init__(reader, state["path"], state["key"], state["format"])


def _resolve(src: PathLike, key: str | None) -> tuple[Path, str | None, str]:
    path, key = split_key(src, key)
    if not path.exists() and not recover(path):
        raise UnknownFormatError(f"{path}: no such file or folder")
    return path, key, detect_format(path)


def open_volume(src: PathLike | Volume, key: str | None = None) -> Volume:
    """Open a volume lazily.

    Parameters
    ----------
    src : str, os.PathLike or Volume
        File or folder, optionally with a key: ``"sample_A.h5:volumes/raw"``.
    key : str, optional
        Array inside a container (HDF5/Zarr); not needed when it holds exactly one array.

    Returns
    -------
    Volume

    Raises
    ------
    UnknownFormatError, KeyNotFoundError, CorruptFileError, InvalidVolumeError
        All subclasses of :class:`~neurons.io.VolumeError`.

    Examples
    --------
    >>> with open_volume("sample_A.h5:volumes/raw") as vol:  # doctest: +SKIP
    ...     section = vol[10]
    """
    if isinstance(src, Volume):
        return src
    path, key, fmt = _resolve(src, key)
    reader = get_backend(fmt).open(path, key)
    return Volume(reader, path, key, fmt)


def read_volume(src: PathLike, key: str | None = None) -> np.ndarray:
    """Read a whole volume into memory.

    Parameters
    ----------
    src : str or os.PathLike
        File or folder, optionally ``"file.h5:key"``.
    key : str, optional
        Array inside a container.

    Returns
    -------
    numpy.ndarray
        (Z, Y, X) or (Y, X), dtype exactly as stored.

    Examples
    --------
    >>> raw = read_volume("isbi2012/train/image")  # doctest: +SKIP
    """
    with open_volume(src, key) as vol:
        return vol.read()


def list_keys(path: PathLike) -> list[str]:
    """Keys of the arrays in a container (HDF5 dataset paths, Zarr array paths).

    Single-array formats (TIFF, NRRD, NIfTI, .npy, slice folders) return ``[]``.

    Examples
    --------
    >>> list_keys("sample_A.h5")  # doctest: +SKIP
    ['volumes/labels/clefts', 'volumes/labels/neuron_ids', 'volumes/raw']
    """
    text = os.fspath(path)
    path = Path(text) if str(text).strip() and os.path.exists(text) else split_key(text)[0]
    if not path.exists():
        recover(path)
    return get_backend(detect_format(path)).list_keys(path)
