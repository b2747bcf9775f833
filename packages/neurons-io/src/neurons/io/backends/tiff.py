"""TIFF stacks (tifffile): memory-mapped reads when contiguous and uncompressed, else page-wise.

Voxel size: written both as ImageJ ``spacing``/``unit`` + X/YResolution tags (what Fiji reads)
and as an exact ``voxel_size_nm`` entry in the image description; read from either, or from
X/YResolution in centimetres. ImageJ-compatible dtypes (uint8, uint16, float32) are written as
ImageJ hyperstacks, all others as tifffile "shaped" TIFF (uint64, bool, ... stay exact).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import tifffile

from ..errors import CorruptFileError, InvalidVolumeError, PathError, VolumeError
from .base import (
    Blocks,
    Reader,
    WriteSpec,
    check_volume_shape,
    gather,
    native,
    quiet_logs,
    reject_compression,
    sidecar,
    single_array_key,
    voxel_size_from,
)

CONTAINER = False
DIRECTORY = False
COMPRESSIONS = ("zlib", "gzip", "deflate", "lzma", "zstd", "lzw", "packbits")
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_UNIT_NM = {"nm": 1.0, "nanometer": 1.0, "um": 1e3, "µm": 1e3, "\\u00b5m": 1e3, "micron": 1e3,
            "micrometer": 1e3, "mm": 1e6, "millimeter": 1e6}


def list_keys(path: Path) -> list[str]:
    """A TIFF stack is one unnamed array: no keys."""
    return []


def open_tiff(path: Path) -> tifffile.TiffFile:
    """Open a TIFF, turning any parse failure into :class:`CorruptFileError`."""
    try:
        with quiet_logs("tifffile"):
            tf = tifffile.TiffFile(path, _multifile=False)
            if tf.is_ome and _ome_files(path, tf):  # OME-TIFF spread over several files
                tf.close()
                tf = tifffile.TiffFile(path)
            return tf
    except PathError:
        tf.close()
        raise
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError, struct_error()) as exc:
        raise CorruptFileError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from exc


def _ome_files(path: Path, tf: tifffile.TiffFile) -> list[str]:
    """Other files an OME-TIFF's metadata points to; :class:`PathError` for any outside the
    file's folder (never opened)."""
    names = set(re.findall(r'FileName="([^"]*)"', tf.ome_metadata or ""))
    others = []
    for name in sorted(names):
        target = sidecar(path, name, f"OME-TIFF metadata entry FileName={name!r}")
        if target != path.resolve():
            others.append(name)
    return others


def struct_error():
    import struct

    return struct.error


def stored_voxel_size(tf: tifffile.TiffFile) -> list[float] | None:
    """Voxel size as stored (any length; (.., y, x) order, nm), or ``None``."""
    meta = tf.imagej_metadata or {}
    shaped = (tf.shaped_metadata or [{}])[0] or {}
    for raw in (meta.get("voxel_size_nm"), shaped.get("voxel_size_nm")):
        if raw is not None:
            try:
                return [float(v) for v in (json.loads(raw) if isinstance(raw, str) else raw)]
            except (ValueError, TypeError):
                pass
    page = tf.pages.first
    xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
    if xres is None or yres is None:
        return None
    try:
        x = xres.value[1] / xres.value[0]
        y = yres.value[1] / yres.value[0]
    except ZeroDivisionError:
        return None
    if meta:
        scale = _UNIT_NM.get(str(meta.get("unit", "")).lower())
        if scale is None:
            return None
        out = [y * scale, x * scale]
        if "spacing" in meta:
            out.insert(0, float(meta["spacing"]) * scale)
        return out
    unit = page.tags.get("ResolutionUnit")
    if unit is not None and int(unit.value) == 3:  # centimetre
        return [y * 1e7, x * 1e7]
    return None  # inch: almost always a meaningless 72/300 dpi default


def _check_declared_shape(path: Path, tf: tifffile.TiffFile, shape: tuple[int, ...]) -> None:
    """tifffile silently shortens a series whose later pages are missing: compare with metadata."""
    declared = None
    if tf.shaped_metadata and "shape" in (tf.shaped_metadata[0] or {}):
        declared = tuple(int(s) for s in tf.shaped_metadata[0]["shape"])
        if int(np.prod(declared)) != int(np.prod(shape)):
            raise CorruptFileError(f"{path}: truncated TIFF: metadata says shape {declared}, "
                                   f"only {shape} present")
    elif tf.imagej_metadata and "images" in tf.imagej_metadata:
        pages = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
        if int(tf.imagej_metadata["images"]) != pages:
            raise CorruptFileError(f"{path}: truncated TIFF: ImageJ metadata says "
                                   f"{tf.imagej_metadata['images']} images, found {pages}")


def _check_pages(path: Path, series) -> None:
    size = os.path.getsize(path)
    for i, page in enumerate(series.pages):
        if page is None:
            raise CorruptFileError(f"{path}: TIFF page {i} is missing")
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)]
        if ends and max(ends) > size:
            raise CorruptFileError(
                f"{path}: truncated TIFF: page {i} needs {max(ends)} bytes, file has {size}"
            )


def _check_one_series(path: Path, tf: tifffile.TiffFile) -> None:
    """Refuse TIFFs whose pages do not form one stack (several series, pages of another size).

    tifffile splits such files into several series; reading only the first would silently drop
    pages and shift later sections in z.
    """
    series = tf.series
    if len(series) > 1:
        shapes = ", ".join(f"{tuple(s.shape)} {s.dtype}" for s in series[:5])
        more = f" (+{len(series) - 5} more)" if len(series) > 5 else ""
        raise InvalidVolumeError(
            f"{path}: TIFF holds {len(series)} image series [{shapes}{more}], e.g. a page of "
            "another size or dtype; expected one stack whose pages all have the same shape and "
            "dtype (split it into separate files)"
        )
    npages = len(tf.pages)
    covered = len(series[0].pages)
    if npages > covered and not series[0].is_pyramidal:
        raise InvalidVolumeError(
            f"{path}: TIFF has {npages} pages but its image series covers only {covered}; "
            "expected every page to belong to one stack of equal-sized pages"
        )


class TiffReader(Reader):
    """Series 0 of a TIFF file, (Z, Y, X) for stacks and (Y, X) for single images."""

    def __init__(self, path: Path, key: str | None) -> None:
        single_array_key(path, key, "TIFF")
        self._path = path
        self._tf = open_tiff(path)
        try:
            self._setup()
        except VolumeError:
            self._tf.close()
            raise
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for damaged tags
            self._tf.close()
            raise CorruptFileError(f"{path}: damaged TIFF structure ({type(exc).__name__}: {exc})") from exc
        except BaseException:
            self._tf.close()
            raise

    def _setup(self) -> None:
        tf, path = self._tf, self._path
        with quiet_logs("tifffile"):
            self._setup_series(tf, path)

    def _setup_series(self, tf: tifffile.TiffFile, path: Path) -> None:
        if not tf.series:
            raise CorruptFileError(f"{path}: TIFF holds no image series")
        _check_one_series(path, tf)
        series = tf.series[0]
        self.shape = tuple(series.shape)
        check_volume_shape(self.shape, str(path))
        self.dtype = native(series.dtype)
        self._series = series
        self._mm = None
        self.compression = None
        page = tf.pages.first
        if page.compression != 1:
            self.compression = tifffile.COMPRESSION(page.compression).name.lower()
        nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        offset = series.dataoffset
        if offset is not None and self.compression is None and self.dtype != np.bool_:
            if offset + nbytes > os.path.getsize(path):
                raise CorruptFileError(
                    f"{path}: truncated TIFF: image data needs {offset + nbytes} bytes, file has "
                    f"{os.path.getsize(path)}"
                )
            dt = np.dtype(tf.byteorder + series.dtype.str[1:]) if series.dtype.itemsize > 1 else series.dtype
            self._mm = np.memmap(path, dtype=dt, mode="r", offset=offset, shape=self.shape)
        if self._mm is None:
            _check_pages(path, series)
        _check_declared_shape(path, tf, self.shape)
        self.attrs = dict(tf.imagej_metadata or (tf.shaped_metadata or [{}])[0] or {})
        self.attrs["axes"] = series.axes
        self.voxel_size = voxel_size_from(stored_voxel_size(tf), len(self.shape))

    def read(self, box):
        if self._mm is not None:
            return np.array(self._mm[box], dtype=self.dtype)
        try:
            with quiet_logs("tifffile"):
                return self._read_pages(box)
        except Exception as exc:  # noqa: BLE001 - codecs raise many types for damaged data
            raise CorruptFileError(f"{self._path}: cannot decode TIFF region {box} ({exc})") from exc

    def _read_pages(self, box):
        series = self._series
        pages = series.pages
        page_shape = tuple(series.keyframe.shape)
        nlead = len(self.shape) - len(page_shape)
        if nlead < 0 or tuple(self.shape[nlead:]) != page_shape or len(pages) != int(
            np.prod(self.shape[:nlead], dtype=np.int64)
        ):
            return np.asarray(series.asarray()[box], dtype=self.dtype)  # unusual layout
        lead_box, page_box = box[:nlead], box[nlead:]
        out = np.empty(tuple(s.stop - s.start for s in box), self.dtype)
        ranges = [range(s.start, s.stop) for s in lead_box]
        for pos, idx in enumerate(np.ndindex(*[len(r) for r in ranges])):
            src = tuple(r[i] for r, i in zip(ranges, idx, strict=True))
            flat = int(np.ravel_multi_index(src, self.shape[:nlead])) if nlead else 0
            page = pages[flat]
            if page is None:
                raise CorruptFileError(f"{self._path}: page {flat} is missing")
            out_idx = np.unravel_index(pos, out.shape[:nlead]) if nlead else ()
            out[tuple(out_idx)] = page.asarray()[page_box]
        return out

    def close(self) -> None:
        self._mm = None
        self._tf.close()


def open(path: Path, key: str | None) -> TiffReader:  # noqa: A001 - backend interface
    """Open a TIFF stack lazily."""
    return TiffReader(path, key)


def check(spec: WriteSpec) -> None:
    """A TIFF takes no key; compression must be a lossless tifffile codec."""
    single_array_key(spec.target, spec.key, "TIFF")
    reject_compression(spec, "TIFF", COMPRESSIONS)


def tiff_options(spec: WriteSpec, shape: tuple[int, ...]) -> dict:
    """Keyword arguments of ``TiffWriter.write`` for ``shape`` (voxel size, codec, axes)."""
    comp = {"gzip": "zlib", "deflate": "zlib"}.get(spec.compression, spec.compression)
    imagej = np.dtype(spec.dtype) in _IMAGEJ_DTYPES and len(shape) in (2, 3)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
    imagej = imagej and nbytes < 2**32 - 2**26
    axes = "CZYX"[-len(shape):] if len(shape) > 2 else "YX"
    meta: dict = {"axes": axes}
    opts: dict = {"photometric": "minisblack", "compression": comp, "metadata": meta}
    vs = spec.voxel_size
    if vs is not None:
        meta["voxel_size_nm"] = json.dumps(list(vs)) if imagej else list(vs)
        opts["resolution"] = (1.0 / vs[-1], 1.0 / vs[-2])
        opts["resolutionunit"] = "NONE"
        meta["unit"] = "nm"
        if len(vs) == 3:
            meta["spacing"] = vs[0]
    return {"imagej": imagej, "bigtiff": not imagej and nbytes > 2**32 - 2**26, **opts}


def write(spec: WriteSpec, blocks: Blocks) -> None:
    """Stream the pages of the slabs into one TIFF file."""
    opts = tiff_options(spec, spec.shape)
    imagej, bigtiff = opts.pop("imagej"), opts.pop("bigtiff")
    if len(spec.shape) == 2:
        data = gather(blocks)
        with tifffile.TiffWriter(spec.tmp, imagej=imagej, bigtiff=bigtiff) as tw:
            tw.write(data, **opts)
        return
    plane = spec.shape[-2:]

    def pages():
        for block in blocks:
            yield from np.asarray(block).reshape(-1, *plane)

    with tifffile.TiffWriter(spec.tmp, imagej=imagej, bigtiff=bigtiff) as tw:
        tw.write(pages(), shape=spec.shape, dtype=spec.dtype, **opts)
