"""NumPy ``.npy``: memory-mapped region reads, streamed writes (header, then raw slabs)."""

from __future__ import annotations

import builtins
import warnings
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, InvalidVolumeError
from .base import (
    Blocks,
    Reader,
    WriteSpec,
    check_volume_shape,
    native,
    reject_compression,
    single_array_key,
)

CONTAINER = False
DIRECTORY = False


def list_keys(path: Path) -> list[str]:
    """A ``.npy`` file holds one unnamed array: no keys."""
    return []


class NpyReader(Reader):
    """``np.load(mmap_mode="r")``; slicing touches only the requested pages."""

    def __init__(self, path: Path, key: str | None) -> None:
        single_array_key(path, key, "NumPy .npy")
        with builtins.open(path, "rb") as fh:
            magic = fh.read(6)
        if magic != b"\x93NUMPY":
            raise CorruptFileError(
                f"{path}: not a NumPy .npy file (starts with {magic!r}, expected b'\\x93NUMPY')"
            )
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            if "object arrays" in str(exc).lower() or "python objects" in str(exc).lower():
                raise InvalidVolumeError(f"{path}: holds Python objects, not a volume") from exc
            raise CorruptFileError(f"{path}: truncated or damaged .npy file ({exc})") from exc
        except (OSError, EOFError, TypeError, OverflowError, SyntaxError, MemoryError) as exc:
            raise CorruptFileError(f"{path}: truncated or damaged .npy file ({exc})") from exc
        check_volume_shape(arr.shape, str(path))
        self._arr = arr
        self.shape = tuple(arr.shape)
        self.dtype = native(arr.dtype)
        self.attrs = {"fortran_order": bool(arr.flags.f_contiguous and not arr.flags.c_contiguous)}

    def read(self, box):
        return np.array(self._arr[box], dtype=self.dtype)

    def close(self) -> None:
        mm = getattr(self._arr, "_mmap", None)
        self._arr = None
        if mm is not None:
            try:
                mm.close()
            except (BufferError, ValueError):  # a view still exported: let GC close it
                pass


def open(path: Path, key: str | None) -> NpyReader:  # noqa: A001 - backend interface
    """Open a ``.npy`` file lazily (memory map)."""
    return NpyReader(path, key)


def check(spec: WriteSpec) -> None:
    """``.npy`` has no key, no compression and no place for a voxel size (warns, drops it)."""
    single_array_key(spec.target, spec.key, "NumPy .npy")
    reject_compression(spec, "NumPy .npy", ())
    if spec.voxel_size is not None:
        warnings.warn(
            f"{spec.target}: .npy files cannot store a voxel size; {spec.voxel_size} is dropped "
            "(use .h5, .tif, .nrrd, .nii or .zarr to keep it)",
            UserWarning,
            stacklevel=4,
        )


def write(spec: WriteSpec, blocks: Blocks) -> None:
    """Write the header, then each slab's bytes in C order."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(spec.dtype)),
        "fortran_order": False,
        "shape": tuple(spec.shape),
    }
    with builtins.open(spec.tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for block in blocks:
            fh.write(np.ascontiguousarray(block, dtype=spec.dtype).data)
