"""HDF5 (.h5 .hdf5 .hdf): h5py datasets, native region reads, CREMI ``resolution`` attribute."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import CorruptFileError, KeyNotFoundError, VolumeError, VolumeWriteError
from .base import (
    Blocks,
    Reader,
    WriteSpec,
    check_dtype,
    check_volume_shape,
    native,
    rechunk,
    reject_compression,
    sidecar,
    voxel_size_from,
)

CONTAINER = True
DIRECTORY = False
DEFAULT_KEY = "main"
COMPRESSIONS = ("gzip", "lzf", *(f"gzip:{level}" for level in range(10)))


def _open_file(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise CorruptFileError(f"{path}: not a readable HDF5 file ({exc})") from exc


def _dataset_keys(f: h5py.File) -> list[str]:
    keys: list[str] = []
    try:
        f.visititems(lambda name, obj: keys.append(name) if isinstance(obj, h5py.Dataset) else None)
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        raise CorruptFileError(f"{f.filename}: damaged HDF5 structure ({exc})") from exc
    return keys


def list_keys(path: Path) -> list[str]:
    """Paths of every dataset in the file (``"volumes/raw"``), sorted."""
    with _open_file(path) as f:
        return sorted(_dataset_keys(f))


def _linked_key(f: h5py.File, path: Path, key: str) -> str | None:
    """``key`` when it is a usable soft/external link to a dataset, else ``None``.

    External links are followed only to files inside the linking file's folder; a link whose
    file is missing (dangling) or lies elsewhere raises a typed error that says so.
    """
    try:
        link = f.get(key, getlink=True)
    except (KeyError, ValueError, RuntimeError):
        return None
    if isinstance(link, h5py.ExternalLink):
        target = sidecar(path, link.filename, f"key {key!r}, an external link to "
                         f"{link.filename}:{link.path},")
        if not target.is_file():
            raise KeyNotFoundError(
                f"{path}: key {key!r} is a dangling external link: its file {target} does not "
                "exist", [],
            )
    elif not isinstance(link, h5py.SoftLink):
        return None
    try:
        obj = f[key]
    except (KeyError, OSError) as exc:
        raise KeyNotFoundError(
            f"{path}: key {key!r} is a link to {getattr(link, 'path', '?')} that cannot be "
            f"resolved ({exc})", [],
        ) from exc
    return key if isinstance(obj, h5py.Dataset) else None


def _check_virtual_sources(ds: h5py.Dataset, path: Path, key: str) -> None:
    """A virtual dataset may map only files inside the file's folder (else :class:`PathError`)."""
    if not ds.is_virtual:
        return
    for src in ds.virtual_sources():
        if src.file_name != ".":
            sidecar(path, src.file_name, f"key {key!r}, a virtual dataset reading "
                    f"{src.file_name}:{src.dset_name},")


def resolve_key(path: Path, key: str | None, keys: list[str]) -> str:
    """The key to open: the given one, or the only array; typed errors otherwise."""
    if key is None:
        if len(keys) == 1:
            return keys[0]
        raise KeyNotFoundError(
            f"{path}: holds {len(keys)} arrays, so a key is needed; available keys: "
            f"{keys or 'none'} (e.g. '{path}:{keys[0] if keys else 'key'}')",
            available=keys,
        )
    if key not in keys:
        raise KeyNotFoundError(f"{path}: key {key!r} not found; available keys: {keys}", keys)
    return key


class HDF5Reader(Reader):
    """An h5py dataset; region reads go straight to the dataset."""

    def __init__(self, path: Path, key: str | None) -> None:
        self._file = _open_file(path)
        try:
            keys = _dataset_keys(self._file)
            if key is None or key in keys or _linked_key(self._file, path, key) is None:
                key = resolve_key(path, key, keys)
            ds = self._file[key]
            _check_virtual_sources(ds, path, key)
            check_dtype(ds.dtype, f"{path}:{key}")
            check_volume_shape(ds.shape, f"{path}:{key}")
            self.key = key
            self._ds = ds
            self.shape = tuple(ds.shape)
            self.dtype = native(ds.dtype)
            self.chunks = ds.chunks
            self.compression = ds.compression
            self.attrs = {k: _plain(v) for k, v in ds.attrs.items()}
            self.voxel_size = voxel_size_from(ds.attrs.get("resolution"), ds.ndim)
            if self.voxel_size is None and "element_size_um" in ds.attrs:  # Fiji / ilastik
                self.voxel_size = voxel_size_from(ds.attrs["element_size_um"], ds.ndim, 1000.0)
        except (RuntimeError, OSError, KeyError, ValueError, TypeError) as exc:
            self._file.close()
            if isinstance(exc, VolumeError):
                raise
            raise CorruptFileError(f"{path}: damaged HDF5 dataset {key!r} ({exc})") from exc
        except BaseException:
            self._file.close()
            raise
        self._path = path

    def read(self, box):
        try:
            if self._ds.chunks is None and all(s.start == 0 and s.stop == n for s, n in zip(box, self.shape, strict=True)):
                out = np.empty(self.shape, self.dtype)
                self._ds.read_direct(out)
                return out
            return np.asarray(self._ds[box], dtype=self.dtype)
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            raise CorruptFileError(f"{self._path}:{self.key}: cannot read region {box} ({exc})") from exc

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size <= 64:
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def open(path: Path, key: str | None) -> HDF5Reader:  # noqa: A001 - backend interface
    """Open dataset ``key`` of an HDF5 file lazily."""
    return HDF5Reader(path, key)


def _filters(spec: WriteSpec) -> dict:
    comp = spec.compression
    if comp is None:
        return {}
    if comp == "lzf":
        return {"compression": "lzf"}
    level = int(comp.split(":")[1]) if ":" in comp else 4
    return {"compression": "gzip", "compression_opts": level}


def _chunks(spec: WriteSpec):
    if spec.chunks is None:
        return True if spec.compression else None
    if spec.chunks is True:
        return True
    chunks = tuple(int(c) for c in spec.chunks)
    if len(chunks) != len(spec.shape) or min(chunks) < 1:
        raise VolumeWriteError(
            f"{spec.target}: chunks {chunks} must give one positive size per axis of {spec.shape}"
        )
    return tuple(min(c, max(n, 1)) for c, n in zip(chunks, spec.shape, strict=True))


def check(spec: WriteSpec) -> None:
    """Validate options before anything is written."""
    reject_compression(spec, "HDF5", COMPRESSIONS)
    _chunks(spec)


def write(spec: WriteSpec, blocks: Blocks) -> None:
    """Write (or replace) dataset ``spec.key`` (default ``"main"``) in ``spec.tmp``."""
    name = spec.key or DEFAULT_KEY
    mode = "a" if spec.tmp.exists() else "w"
    with h5py.File(spec.tmp, mode) as f:
        if name in f:
            del f[name]
        ds = f.create_dataset(
            name, shape=spec.shape, dtype=spec.dtype, chunks=_chunks(spec), **_filters(spec)
        )
        z = 0
        for block in rechunk(blocks, ds.chunks[0]) if ds.chunks else blocks:
            block = np.asarray(block)
            if z == 0 and block.shape == spec.shape and ds.chunks is None:
                ds.write_direct(np.ascontiguousarray(block))
            else:
                ds[z : z + block.shape[0]] = block
            z += block.shape[0]
        if spec.voxel_size is not None:
            ds.attrs["resolution"] = np.asarray(spec.voxel_size, dtype=np.float64)
        for k, v in spec.attrs.items():
            ds.attrs[k] = v
