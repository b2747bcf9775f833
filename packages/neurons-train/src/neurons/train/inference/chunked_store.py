"""The shared chunked store of distributed jobs: a Zarr v3 group with OME-NGFF metadata.

Every worker opens the store by path and writes whole chunks (arrays are chunked like the block
grid, so one block = one chunk and no two tasks write the same chunk). The store is built at a
hidden sibling of the output and renamed onto it when complete, so readers never see half a
result. Zarr's local store writes each chunk to a temporary file and renames it, so a worker
killed mid-write leaves no torn chunk.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import StitchError

__all__ = [
    "CODECS",
    "create_arrays",
    "finalize_store",
    "publish",
    "read_region",
    "remove_array",
    "write_region",
]

#: output compressions of the distributed path
CODECS = (None, "none", "zstd", "gzip", "blosc")


def _zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - zarr is a dependency of the train env
        raise StitchError(
            "distributed inference writes a Zarr store: pip install 'neurons-io[zarr]'"
        ) from exc
    return zarr


def _compressors(name: str | None):
    codecs = _zarr().codecs
    if name not in CODECS:
        raise StitchError(f"compression {name!r} is not available for Zarr; choose one of {CODECS}")
    return {
        None: "auto",
        "none": None,
        "zstd": codecs.ZstdCodec(level=3),
        "gzip": codecs.GzipCodec(level=4),
        "blosc": codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    }[name]


def create_arrays(
    path: Path,
    arrays: Mapping[str, tuple[Sequence[int], np.dtype | type, Sequence[int]]],
    compression: str | None = None,
) -> None:
    """Create the group at ``path`` and the arrays ``key -> (shape, dtype, chunks)`` it lacks.

    Arrays that already exist with the same shape, dtype and chunks are kept (a resumed job).
    """
    zarr = _zarr()
    try:
        root = zarr.open_group(str(path), mode="a", zarr_format=3)
    except Exception as exc:  # zarr raises many types for damaged metadata
        raise StitchError(f"{path}: cannot open the job's Zarr store ({exc})") from exc
    for key, (shape, dtype, chunks) in arrays.items():
        shape = tuple(int(s) for s in shape)
        chunks = tuple(min(int(c), max(int(s), 1)) for c, s in zip(chunks, shape, strict=True))
        try:
            old = root[key]
            if (
                tuple(old.shape) == shape
                and np.dtype(old.dtype) == np.dtype(dtype)
                and tuple(old.chunks) == chunks
            ):
                continue
        except KeyError:
            pass
        parent, _, name = key.rpartition("/")
        node = root.require_group(parent) if parent else root
        node.create_array(
            name=name,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            compressors=_compressors(compression),
            fill_value=0,
            overwrite=True,
        )


def _array(path: str, key: str, mode: str):
    try:
        return _zarr().open_array(store=path, path=key, mode=mode)
    except Exception as exc:
        raise StitchError(f"{path}:{key}: cannot open array of the job's store ({exc})") from exc


def write_region(path: str, key: str, box: tuple[slice, ...], data: np.ndarray) -> None:
    """Write ``data`` into ``box`` of array ``key`` (whole chunks: one writer per chunk)."""
    _array(path, key, "r+")[box] = data


def read_region(path: str, key: str, box: tuple[slice, ...]) -> np.ndarray:
    """Read ``box`` of array ``key``."""
    return np.asarray(_array(path, key, "r")[box])


def remove_array(path: Path, key: str) -> None:
    """Delete array ``key`` (a scratch array) from the group at ``path``."""
    root = _zarr().open_group(str(path), mode="a")
    if key in root:
        del root[key]


def _multiscales(keys: Sequence[str], ndims: Sequence[int], voxel_size) -> list[dict]:
    from neurons.io.backends.zarrstore import ngff_multiscales

    out = []
    for key, ndim in zip(keys, ndims, strict=True):
        nsp = min(ndim, 3)
        vs = tuple(voxel_size) if voxel_size is not None else (1.0,) * nsp
        ms = ngff_multiscales(key, ndim, vs)
        if voxel_size is None:  # scale in voxels: say no physical unit rather than a false one
            for ax in ms["axes"]:
                ax.pop("unit", None)
        out.append(ms)
    return out


def finalize_store(path: Path, keys: Sequence[str], voxel_size=None) -> None:
    """Write ``resolution`` and OME-NGFF 0.5 ``multiscales`` for ``keys``; drop torn temp files."""
    zarr = _zarr()
    root = zarr.open_group(str(path), mode="a")
    ndims = []
    for key in keys:
        arr = root[key]
        ndims.append(arr.ndim)
        if voxel_size is not None:
            arr.attrs["resolution"] = [float(v) for v in voxel_size]
    ome = dict(root.attrs.get("ome") or {})
    root.attrs["ome"] = {
        **ome,
        "version": "0.5",
        "multiscales": _multiscales(keys, ndims, voxel_size),
    }
    for tmp in path.rglob("*.partial"):  # left by a worker killed while writing a chunk
        tmp.unlink(missing_ok=True)


def publish(partial: Path, output: Path) -> None:
    """Rename the finished store onto ``output`` (an existing one is replaced atomically)."""
    old = None
    try:
        if output.exists():
            old = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.old"
            os.rename(output, old)
        os.rename(partial, output)
    except OSError as exc:
        if old is not None and not output.exists():
            os.rename(old, output)
        raise StitchError(f"{output}: cannot move the finished store into place ({exc})") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
