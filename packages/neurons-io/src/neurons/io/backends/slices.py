"""A folder of 2-D slices (TIFF or PNG), stacked along z in natural sort order.

A slice folder is always a stack: reading gives (Z, Y, X) (a 2-D image written to a folder
reads back as (1, Y, X)). All slices must share shape and dtype; otherwise opening raises
:class:`InvalidVolumeError` naming the first offending file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile

from ..detect import SLICE_SUFFIXES
from ..errors import CorruptFileError, InvalidVolumeError, VolumeWriteError
from .base import (
    Blocks,
    Reader,
    WriteSpec,
    check_volume_shape,
    gather,
    single_array_key,
    voxel_size_from,
)
from .pil import check_png_dtype, png_info, read_image, write_png
from .tiff import COMPRESSIONS, open_tiff, stored_voxel_size, tiff_options

CONTAINER = False
DIRECTORY = True
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders ``img2.png`` before ``img10.png``."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in _DIGITS.split(name))


def slice_files(folder: Path) -> list[Path]:
    """The slice files of ``folder`` (TIFF/PNG, not hidden), in natural order."""
    names = [
        n
        for n in (p.name for p in folder.iterdir() if p.is_file())
        if n.lower().endswith(SLICE_SUFFIXES) and not n.startswith(".")
    ]
    return [folder / n for n in sorted(names, key=natural_key)]


def list_keys(path: Path) -> list[str]:
    """A slice folder is one unnamed stack: no keys."""
    return []


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def _info(path: Path) -> tuple[tuple[int, ...], np.dtype, list[float] | None]:
    if not _is_tiff(path):
        return png_info(path)
    with open_tiff(path) as tf:
        if not tf.series:
            raise CorruptFileError(f"{path}: TIFF slice holds no image")
        s = tf.series[0]
        return tuple(s.shape), np.dtype(s.dtype).newbyteorder("="), stored_voxel_size(tf)


def _read_slice(path: Path) -> np.ndarray:
    if not _is_tiff(path):
        return read_image(path)
    try:
        return tifffile.imread(path)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise CorruptFileError(f"{path}: truncated or damaged TIFF slice ({exc})") from exc


class SliceReader(Reader):
    """Reads only the slices (files) a region touches."""

    def __init__(self, path: Path, key: str | None) -> None:
        single_array_key(path, key, "slice folder")
        files = slice_files(path)
        if not files:
            raise InvalidVolumeError(f"{path}: folder holds no {'/'.join(SLICE_SUFFIXES)} slices")
        shape0, dtype0, vs = _info(files[0])
        for f in files[1:]:
            shape, dtype, _ = _info(f)
            if shape != shape0 or dtype != dtype0:
                raise InvalidVolumeError(
                    f"{path}: slices differ: {files[0].name} is {shape0} {dtype0} but {f.name} is "
                    f"{shape} {dtype}; every slice must have the same shape and dtype"
                )
        self.shape = (len(files), *shape0)
        check_volume_shape(self.shape, str(path))
        self.dtype = dtype0
        self.voxel_size = voxel_size_from(vs, 3) if vs is not None and len(vs) == 3 else None
        self.attrs = {"files": [f.name for f in files]}
        self._files = files

    def read(self, box):
        out = np.empty(tuple(s.stop - s.start for s in box), self.dtype)
        for i, z in enumerate(range(box[0].start, box[0].stop)):
            img = _read_slice(self._files[z])
            if img.shape != self.shape[1:]:
                raise CorruptFileError(
                    f"{self._files[z]}: decoded shape {img.shape}, header said {self.shape[1:]}"
                )
            out[i] = img[box[1:]]
        return out


def open(path: Path, key: str | None) -> SliceReader:  # noqa: A001 - backend interface
    """Open a folder of slices lazily (one file per z)."""
    return SliceReader(path, key)


def _suffix(spec: WriteSpec) -> str:
    return spec.attrs.get("slice_suffix", ".tif")


def check(spec: WriteSpec) -> None:
    """No key; PNG slices only for uint8/uint16/bool; TIFF codecs as for TIFF stacks."""
    single_array_key(spec.target, spec.key, "slice folder")
    if len(spec.shape) == 4:
        raise InvalidVolumeError(f"{spec.target}: a slice folder holds 2-D or 3-D data, got {spec.shape}")
    if _suffix(spec) == ".png":
        check_png_dtype(spec.dtype, str(spec.target))
        if spec.compression not in (None, "zlib"):
            raise VolumeWriteError(f"{spec.target}: PNG slices are always zlib-compressed")
    elif spec.compression is not None and spec.compression not in COMPRESSIONS:
        raise VolumeWriteError(
            f"{spec.target}: compression {spec.compression!r} is not available for TIFF slices; "
            f"choose one of {COMPRESSIONS}"
        )
    if spec.target.is_dir():
        others = [
            p.name
            for p in spec.target.iterdir()
            if not (p.is_file() and p.name.lower().endswith(SLICE_SUFFIXES))
        ]
        if others:
            raise VolumeWriteError(
                f"{spec.target}: folder holds other content ({others[:5]}); refusing to replace it"
            )


def write(spec: WriteSpec, blocks: Blocks) -> None:
    """Write one file per z into a fresh folder ``spec.tmp``."""
    spec.tmp.mkdir()
    nz = spec.shape[0] if len(spec.shape) == 3 else 1
    width = max(4, len(str(nz - 1)))
    suffix = _suffix(spec)
    vs = spec.voxel_size
    page_spec = WriteSpec(spec.target, spec.tmp, spec.shape[-2:], spec.dtype, None, None, None, spec.compression)
    opts = tiff_options(page_spec, spec.shape[-2:])
    if vs is not None:  # every slice carries the full (z, y, x) voxel size
        page_spec.voxel_size = vs[-2:]
        opts = tiff_options(page_spec, spec.shape[-2:])
        opts["metadata"]["voxel_size_nm"] = list(vs)
    opts.pop("imagej"), opts.pop("bigtiff")
    stream = [gather(blocks)[None]] if len(spec.shape) == 2 else blocks
    z = 0
    for block in stream:
        for page in np.asarray(block):
            out = spec.tmp / f"{z:0{width}d}{suffix}"
            if suffix == ".png":
                write_png(out, page, vs)
            else:
                tifffile.imwrite(out, page, **opts)
            z += 1
