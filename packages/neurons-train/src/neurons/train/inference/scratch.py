"""Node-local scratch space of the single-machine path: memory maps next to the output.

(The distributed path never uses this: its blocks go to a Zarr store every worker can reach,
see :mod:`.distributed`.)
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .errors import StitchError
from .relabel import apply_lut

__all__ = ["atomic_save", "open_scratch", "release_freed_memory", "scratch_dir", "slabs"]


def open_scratch(path: str) -> np.ndarray:
    """Open a scratch ``.npy`` as a writable memory map."""
    return np.load(path, mmap_mode="r+")


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to trim
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_freed_memory() -> None:
    """Give memory freed by the last block back to the operating system (glibc only).

    Each block allocates and frees tens of MB of numpy/torch buffers of varying sizes; glibc
    keeps such freed heap memory, fragmented, inside the process, so without this the resident
    size grew by about the block's uint64 labels per block (~1 MB per 32x128x128 block),
    i.e. with the volume instead of the block. Costs a few ms per call.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def atomic_save(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` to a temporary sibling, then rename (readers never see half a file)."""
    path = os.fspath(path)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


@contextlib.contextmanager
def scratch_dir(near: Path | None) -> Iterator[Path]:
    """A temporary folder next to ``near`` (or in the temp folder), removed afterwards."""
    parent = near.parent if near is not None else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    name = f".{near.name}.neurons-infer-" if near is not None else "neurons-infer-"
    d = Path(tempfile.mkdtemp(prefix=name, dir=parent))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def slabs(
    path: str, keys: np.ndarray | None, values: np.ndarray | None, planes: int
) -> Iterator[np.ndarray]:
    """Stream a scratch ``.npy`` in slabs of ``planes`` planes, through a lookup table if given."""
    # plain reads, not a memory map: pages of a whole-volume map stay resident in (and are
    # counted against) this process while it walks the file, so memory would grow with the volume
    with open(path, "rb") as f:
        fmt = np.lib.format
        version = fmt.read_magic(f)
        header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = header(f)
        if fortran:
            raise StitchError(f"{path}: scratch array is Fortran-ordered")
        plane = int(np.prod(shape[1:], dtype=np.int64))
        for z in range(0, shape[0], planes):
            n = min(planes, shape[0] - z)
            block = np.fromfile(f, dtype=dtype, count=n * plane).reshape(n, *shape[1:])
            yield apply_lut(block, keys, values) if keys is not None else block
