"""A single 2-D PNG image (uint8, uint16 or bool)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidVolumeError
from .base import (
    Blocks,
    Reader,
    WriteSpec,
    check_volume_shape,
    gather,
    reject_compression,
    single_array_key,
    voxel_size_from,
)
from .pil import check_png_dtype, png_info, read_image, write_png

CONTAINER = False
DIRECTORY = False


def list_keys(path: Path) -> list[str]:
    """A PNG is one unnamed image: no keys."""
    return []


class PngReader(Reader):
    """PNG decodes as a whole; the first region read caches the image."""

    def __init__(self, path: Path, key: str | None) -> None:
        single_array_key(path, key, "PNG")
        self._path = path
        shape, self.dtype, vs = png_info(path)
        check_volume_shape(shape, str(path))
        self.shape = shape
        self.voxel_size = voxel_size_from(vs, 2)
        self.attrs = {}
        self._data: np.ndarray | None = None

    def read(self, box):
        if self._data is None:
            self._data = read_image(self._path)
        return np.array(self._data[box])

    def close(self) -> None:
        self._data = None


def open(path: Path, key: str | None) -> PngReader:  # noqa: A001 - backend interface
    """Open a PNG image (decoded on first read)."""
    return PngReader(path, key)


def check(spec: WriteSpec) -> None:
    """PNG: one 2-D uint8/uint16/bool image, no key, built-in zlib compression only."""
    single_array_key(spec.target, spec.key, "PNG")
    reject_compression(spec, "PNG", ("zlib",))
    if len(spec.shape) != 2:
        raise InvalidVolumeError(
            f"{spec.target}: a PNG holds one 2-D image, got shape {spec.shape}; write a stack to "
            "a folder of slices (a path without suffix), .tif or .h5"
        )
    check_png_dtype(spec.dtype, str(spec.target))


def write(spec: WriteSpec, blocks: Blocks) -> None:
    """Write the image."""
    write_png(spec.tmp, gather(blocks), spec.voxel_size)
