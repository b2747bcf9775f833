"""The write side: ``write_volume`` (atomic) and ``convert_volume`` (streaming, bounded memory)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_destination
from .backends import get_backend
from .backends.base import WriteSpec, check_dtype, check_volume_shape, spatial_ndim
from .detect import EXTENSIONS, check_supported, detect_format, format_from_extension
from .errors import InvalidVolumeError, UnknownFormatError, VolumeError, VolumeWriteError
from .paths import PathLike, split_key
from .volume import DEFAULT_BLOCK_BYTES, Volume, open_volume

WRITE_FORMATS = ("hdf5", "tiff", "png", "slices", "png-slices", "nrrd", "nifti", "npy", "zarr")


def destination_format(path: Path, fmt: str | None = None) -> str:
    """Format to write ``path`` in: explicit, else extension, else an existing folder's kind.

    A path without a suffix (or an existing non-Zarr folder) becomes a folder of TIFF slices.
    """
    if fmt is not None:
        if fmt not in WRITE_FORMATS:
            raise UnknownFormatError(f"{path}: unknown format {fmt!r}; choose from {WRITE_FORMATS}")
        return fmt
    check_supported(path)
    by_ext = format_from_extension(path)
    if by_ext:
        return by_ext
    if path.is_dir():
        try:
            return detect_format(path)
        except UnknownFormatError:
            return "slices"
    if not path.suffix:
        return "slices"
    raise UnknownFormatError(
        f"{path}: cannot tell the format from suffix {path.suffix!r}; use one of "
        f"{', '.join(sorted(EXTENSIONS))}, a folder name without suffix (slices), or format=..."
    )


def _voxel_size(voxel_size, ndim: int, dst: Path) -> tuple[float, ...] | None:
    if voxel_size is None:
        return None
    vs = tuple(float(v) for v in np.asarray(voxel_size, dtype=np.float64).ravel())
    n = spatial_ndim(ndim)
    if len(vs) != n or not all(np.isfinite(v) and v > 0 for v in vs):
        raise InvalidVolumeError(
            f"{dst}: voxel_size {voxel_size!r} must be {n} positive numbers "
            f"({'(z, y, x)' if n == 3 else '(y, x)'} in nm) for a {ndim}-D array"
        )
    return vs


def write_blocks(
    dst: PathLike,
    shape: Sequence[int],
    dtype,
    blocks: Iterable[np.ndarray],
    key: str | None = None,
    voxel_size=None,
    chunks=None,
    compression: str | None = None,
    *,
    format: str | None = None,  # noqa: A002 - mirrors the CLI option
) -> Path:
    """Atomically write an array given as consecutive slabs along axis 0.

    This is the streaming core of :func:`write_volume` and :func:`convert_volume`: only one slab
    is in memory at a time (except for formats that store a 2-D image as one page).

    Returns
    -------
    Path
        The destination that was written.
    """
    spec, backend, keep = _plan(dst, shape, dtype, key, voxel_size, chunks, compression, format)
    path = spec.target
    with atomic_destination(path, directory=backend.DIRECTORY, keep_existing=keep) as tmp:
        spec.tmp = tmp
        backend.write(spec, _checked(blocks, spec.shape, spec.dtype, path))
    return path


def _plan(dst, shape, dtype, key, voxel_size, chunks, compression, fmt):
    path, key = split_key(dst, key)
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    check_volume_shape(shape, str(path))
    check_dtype(dtype, str(path))
    fmt = destination_format(path, fmt)
    backend = get_backend("slices" if fmt == "png-slices" else fmt)
    if isinstance(chunks, str):
        chunks = tuple(int(c) for c in chunks.split(","))
    spec = WriteSpec(
        target=path,
        tmp=path,
        shape=shape,
        dtype=dtype,
        key=key,
        voxel_size=_voxel_size(voxel_size, len(shape), path),
        chunks=chunks,
        compression=compression,
        attrs={"slice_suffix": ".png"} if fmt == "png-slices" else {},
    )
    backend.check(spec)
    keep = bool(backend.CONTAINER and key is not None and path.exists())
    if keep and detect_format(path) != fmt:
        raise VolumeWriteError(f"{path}: exists but is not a {fmt} container; cannot add key {key!r}")
    return spec, backend, keep


def check_destination(
    dst: PathLike,
    shape: Sequence[int],
    dtype,
    key: str | None = None,
    voxel_size=None,
    chunks=None,
    compression: str | None = None,
    *,
    format: str | None = None,  # noqa: A002 - mirrors the CLI option
) -> Path:
    """Check, before any work, that :func:`write_blocks` could write this array; write nothing.

    Runs every check of the write path (format from the name, key allowed by the format, dtype
    storable, options valid, an existing destination of the right kind, a writable folder) so a
    long computation fails at its start rather than at its end.

    Returns
    -------
    Path
        The destination path (key removed).

    Raises
    ------
    VolumeError
        The same typed error the write would raise.

    Examples
    --------
    >>> check_destination("seg.tif:segmentation", (10, 64, 64), "uint64")  # doctest: +SKIP
    Traceback (most recent call last):
    KeyNotFoundError: seg.tif: key 'segmentation' not found; a TIFF file holds one unnamed array ...
    """
    spec, backend, _ = _plan(dst, shape, dtype, key, voxel_size, chunks, compression, format)
    path = spec.target
    if path.exists() and path.is_dir() != bool(backend.DIRECTORY):
        kind = "folder" if path.is_dir() else "file"
        raise VolumeWriteError(f"{path}: exists as a {kind}; refusing to replace it")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise VolumeWriteError(f"{path}: destination folder {folder} is not writable")
    return path


def _checked(blocks: Iterable[np.ndarray], shape, dtype, path: Path):
    z = 0
    for block in blocks:
        block = np.asarray(block)
        if block.shape[1:] != shape[1:] or z + block.shape[0] > shape[0]:
            raise InvalidVolumeError(
                f"{path}: slab of shape {block.shape} at {z} does not fit volume shape {shape}"
            )
        if block.dtype != dtype:
            block = block.astype(dtype)
        z += block.shape[0]
        yield block
    if z != shape[0]:
        raise InvalidVolumeError(f"{path}: slabs covered {z} of {shape[0]} planes")


def write_volume(
    dst: PathLike,
    array,
    key: str | None = None,
    voxel_size=None,
    chunks=None,
    compression: str | None = None,
    *,
    format: str | None = None,  # noqa: A002
) -> Path:
    """Write a volume atomically (temporary file in the destination folder, then rename).

    Parameters
    ----------
    dst : str or os.PathLike
        Destination; the format comes from the suffix (``.h5 .hdf5 .hdf .tif .tiff .png .nrrd
        .nii .nii.gz .npy .zarr``); a name without suffix is a folder of TIFF slices.
        ``"out.h5:volumes/raw"`` names the key.
    array : array_like or Volume
        2-D (Y, X), 3-D (Z, Y, X) or 4-D array. A :class:`Volume` is streamed slab by slab and its
        voxel size is kept unless ``voxel_size`` is given.
    key : str, optional
        Array inside a container (HDF5 default ``"main"``; Zarr default: the root array). Writing a
        key into an existing container keeps its other arrays.
    voxel_size : sequence of float, optional
        (z, y, x) (or (y, x)) in nm.
    chunks : tuple of int or True, optional
        Storage chunks (HDF5, Zarr); ignored by formats without chunking.
    compression : str, optional
        ``None`` (uncompressed, the default) or a format-specific codec: HDF5 ``"gzip"``,
        ``"gzip:N"``, ``"lzf"``; TIFF ``"zlib"``, ``"lzma"``, ``"zstd"``, ``"lzw"``,
        ``"packbits"``; NRRD ``"gzip"``, ``"bzip2"``; Zarr ``"gzip"``, ``"zstd"``, ``"blosc"``;
        NIfTI: gzip iff the name ends in ``.nii.gz``.
    format : str, optional
        Override the format: one of ``hdf5 tiff png slices png-slices nrrd nifti npy zarr``.

    Returns
    -------
    Path
        The written destination.

    Examples
    --------
    >>> write_volume("out.h5:volumes/raw", raw, voxel_size=(40, 4, 4))  # doctest: +SKIP
    """
    if isinstance(array, Volume):
        vs = array.voxel_size if voxel_size is None else voxel_size
        if array.ndim != 2 and vs is not None and len(vs) != spatial_ndim(array.ndim):
            vs = None
        return write_blocks(
            dst, array.shape, array.dtype, (b for _, b in array.iter_blocks()), key, vs,
            chunks, compression, format=format,
        )
    arr = np.asarray(array)
    return write_blocks(
        dst, arr.shape, arr.dtype, [arr], key, voxel_size, chunks, compression, format=format
    )


def convert_volume(
    src: PathLike,
    dst: PathLike,
    key: str | None = None,
    dst_key: str | None = None,
    chunks=None,
    compression: str | None = None,
    *,
    format: str | None = None,  # noqa: A002
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Path:
    """Copy a volume to another file/format slab by slab (bounded memory), atomically.

    Parameters
    ----------
    src, dst : str or os.PathLike
        Source and destination (``"file.h5:key"`` syntax allowed on both). The destination may
        be another key of the source's HDF5/Zarr container; the source array itself (same path
        and key) is refused with :class:`VolumeError`.
    key, dst_key : str, optional
        Source and destination keys.
    chunks, compression, format
        As for :func:`write_volume`.
    max_block_bytes : int
        Upper bound on the bytes of one slab held in memory.

    Examples
    --------
    >>> convert_volume("stack.tif", "stack.h5:raw", compression="gzip")  # doctest: +SKIP
    """
    dst_path, dst_key = split_key(dst, dst_key)
    with open_volume(src, key) as vol:
        if dst_path.exists() and vol.path.resolve().is_relative_to(dst_path.resolve()) and (
            dst_path.resolve() != vol.path.resolve()
        ):
            raise VolumeError(
                f"{dst}: destination folder contains the source {vol.path}; replacing it would "
                "delete the source. Choose another destination"
            )
        if dst_path.resolve() == vol.path.resolve():
            same = dst_key is None or vol.key is None or dst_key == vol.key
            if same or destination_format(dst_path, format) not in ("hdf5", "zarr"):
                where = f"{vol.path}:{vol.key}" if vol.key else str(vol.path)
                raise VolumeError(
                    f"{dst}: destination is the source {where}; choose another path or, in the "
                    f"same HDF5/Zarr container, another key (got dst_key={dst_key!r})"
                )
        return write_blocks(
            dst_path,
            vol.shape,
            vol.dtype,
            (b for _, b in vol.iter_blocks(max_bytes=max_block_bytes)),
            dst_key,
            vol.voxel_size,
            chunks,
            compression,
            format=format,
        )
