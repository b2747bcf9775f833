"""NRRD (.nrrd, .nhdr): raw attached data is memory-mapped; compressed data is decoded once.

Arrays are (Z, Y, X) with x fastest, i.e. NRRD's first axis is our last. Voxel size comes from
``spacings`` (with per-axis ``units``) or the norms of ``space directions`` (with ``space units``);
without units, values are taken as nm. bool is stored as uint8 with the key/value pair
``neurons_dtype:=bool`` so it reads back as bool.
"""

from __future__ import annotations

import builtins
import bz2
import os
import zlib
from pathlib import Path

import nrrd
import numpy as np

from ..errors import CorruptFileError, PathError
from .base import (
    Blocks,
    Reader,
    WriteSpec,
    check_volume_shape,
    native,
    reject_compression,
    sidecar,
    single_array_key,
    storage_dtype,
    voxel_size_from,
)

CONTAINER = False
DIRECTORY = False
COMPRESSIONS = ("gzip", "bzip2")
_TYPES = {
    "int8": "int8", "uint8": "uint8", "int16": "int16", "uint16": "uint16", "int32": "int32",
    "uint32": "uint32", "int64": "int64", "uint64": "uint64", "float32": "float",
    "float64": "double",
}
_UNITS = {"nm": 1.0, "nanometer": 1.0, "um": 1e3, "µm": 1e3, "micron": 1e3, "mm": 1e6}
MARKER = "neurons_dtype"


_ALIASES = {
    "int8": ("signed char", "int8", "int8_t"),
    "uint8": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "int16": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "uint16": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "int32": ("int", "signed int", "int32", "int32_t"),
    "uint32": ("uint", "unsigned int", "uint32", "uint32_t"),
    "int64": ("longlong", "long long", "long long int", "signed long long",
              "signed long long int", "int64", "int64_t"),
    "uint64": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "float32": ("float",),
    "float64": ("double",),
}
_TYPE_OF = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}


def _header_dtype(header: dict, path: Path) -> np.dtype:
    name = _TYPE_OF.get(str(header.get("type", "")).strip().lower())
    if name is None:
        raise CorruptFileError(f"{path}: NRRD type {header.get('type')!r} is not a supported dtype")
    dtype = np.dtype(name)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if header.get("endian") == "big" else "<")
    return dtype


def list_keys(path: Path) -> list[str]:
    """An NRRD file is one unnamed array: no keys."""
    return []


def _units_scale(units) -> float | None:
    if units is None:
        return 1.0
    scales = {_UNITS.get(str(u).strip().lower()) for u in units if u is not None and str(u) != "???"}
    return scales.pop() if len(scales) == 1 and None not in scales else (1.0 if not scales else None)


def header_voxel_size(header: dict, ndim: int) -> tuple[float, ...] | None:
    """(z, y, x) nm from an NRRD header (file order is x, y, z)."""
    if "spacings" in header:
        vals = np.asarray(header["spacings"], dtype=np.float64)
        scale = _units_scale(header.get("units"))
    elif "space directions" in header:
        rows = [r for r in header["space directions"] if r is not None and not np.all(np.isnan(np.asarray(r, float)))]
        vals = np.linalg.norm(np.asarray(rows, dtype=np.float64), axis=1) if rows else None
        scale = _units_scale(header.get("space units"))
    else:
        return None
    if vals is None or scale is None:
        return None
    return voxel_size_from(vals[::-1], ndim, scale)


def _header_shape(header: dict, path: Path) -> tuple[int, ...]:
    """(Z, Y, X) from ``sizes``, checked against ``dimension`` and for positive sizes."""
    try:
        sizes = [int(v) for v in np.atleast_1d(header["sizes"])]
        dim = int(header["dimension"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CorruptFileError(
            f"{path}: NRRD header needs integer 'dimension' and 'sizes' fields ({exc})"
        ) from exc
    if len(sizes) != dim:
        raise CorruptFileError(
            f"{path}: NRRD header says dimension: {dim} but gives {len(sizes)} sizes {sizes}; "
            "expected one size per axis"
        )
    if any(s < 1 for s in sizes):
        raise CorruptFileError(f"{path}: NRRD sizes {sizes} must all be positive integers")
    return tuple(sizes[::-1])


def detached_data_file(header: dict, path: Path) -> Path | None:
    """The detached data file of a header, refused unless it lies inside the header's folder.

    Absolute paths, ``..`` escapes, symbolic links pointing elsewhere and the multi-file forms
    (``LIST``, format strings) raise :class:`PathError`: nothing outside the header's folder
    is ever read.
    """
    value = header.get("data file", header.get("datafile"))
    if value is None:
        return None
    text = str(value).strip()
    if not text or text.split()[0] == "LIST" or "%" in text or len(text.split()) > 1:
        raise PathError(
            f"{path}: NRRD 'data file: {text}' (multi-file data) is not supported; expected one "
            "file name next to the header"
        )
    target = sidecar(path, text, f"NRRD 'data file: {text}'", allow_absolute=False)
    if not target.is_file():
        raise CorruptFileError(f"{path}: NRRD detached data file {target} does not exist")
    return target


class NrrdReader(Reader):
    """An NRRD file; region reads via a memory map when the data is raw and attached."""

    def __init__(self, path: Path, key: str | None) -> None:
        single_array_key(path, key, "NRRD")
        self._path = path
        try:
            with builtins.open(path, "rb") as fh:
                header = nrrd.read_header(fh)
                offset = fh.tell()
        except (nrrd.NRRDError, ValueError, OSError, UnicodeDecodeError, StopIteration,
                EOFError, TypeError, KeyError, IndexError) as exc:
            what = "empty file" if os.path.getsize(path) == 0 else f"{type(exc).__name__}: {exc}"
            raise CorruptFileError(f"{path}: not a readable NRRD header ({what})") from exc
        stored = _header_dtype(header, path)
        self.shape = _header_shape(header, path)
        check_volume_shape(self.shape, str(path))
        self.attrs = {k: v for k, v in header.items() if not isinstance(v, np.ndarray)}
        self._bool = str(header.get(MARKER, "")).strip() == "bool"
        self.dtype = np.dtype(np.bool_) if self._bool else native(stored)
        self.voxel_size = header_voxel_size(header, len(self.shape))
        self._data_file = detached_data_file(header, path)
        encoding = header.get("encoding", "raw")
        self.compression = None if encoding == "raw" else encoding
        self._mm = None
        self._data = None
        nbytes = int(np.prod(self.shape, dtype=np.int64)) * stored.itemsize
        if encoding == "raw" and self._data_file is None:
            offset += int(header.get("byte skip", 0) or 0)
            size = os.path.getsize(path)
            if offset + nbytes > size:
                raise CorruptFileError(
                    f"{path}: truncated NRRD: data needs {offset + nbytes} bytes, file has {size}"
                )
            self._mm = np.memmap(path, dtype=stored, mode="r", offset=offset, shape=self.shape)

    def _load(self) -> np.ndarray:
        if self._data is None:
            try:
                data, _ = nrrd.read(str(self._path), index_order="C")
            except (nrrd.NRRDError, ValueError, OSError, EOFError, zlib.error, TypeError,
                    OverflowError, IndexError, StopIteration) as exc:
                raise CorruptFileError(f"{self._path}: truncated or damaged NRRD data ({exc})") from exc
            if data.shape != self.shape:
                raise CorruptFileError(f"{self._path}: decoded shape {data.shape} != header {self.shape}")
            self._data = data
        return self._data

    def read(self, box):
        src = self._mm if self._mm is not None else self._load()
        out = np.asarray(src[box])
        return out.astype(bool) if self._bool else np.array(out, dtype=self.dtype)

    def close(self) -> None:
        self._mm = None
        self._data = None


def open(path: Path, key: str | None) -> NrrdReader:  # noqa: A001 - backend interface
    """Open an NRRD file lazily."""
    return NrrdReader(path, key)


def _stored_dtype(dtype: np.dtype, where: Path) -> np.dtype:
    return storage_dtype(dtype, _TYPES, "NRRD", where)


def check(spec: WriteSpec) -> None:
    """No key; NRRD codecs; dtype storable."""
    single_array_key(spec.target, spec.key, "NRRD")
    reject_compression(spec, "NRRD", COMPRESSIONS)
    _stored_dtype(spec.dtype, spec.target)


def _header(spec: WriteSpec, stored: np.dtype) -> bytes:
    lines = [
        "NRRD0005",
        "# written by neurons.io; axes are x y z (x fastest)",
        f"type: {_TYPES[stored.name]}",
        f"dimension: {len(spec.shape)}",
        "sizes: " + " ".join(str(s) for s in spec.shape[::-1]),
        "endian: little",
        f"encoding: {spec.compression or 'raw'}",
    ]
    if spec.voxel_size is not None:
        sp = list(spec.voxel_size[::-1]) + ["nan"] * (len(spec.shape) - len(spec.voxel_size))
        lines.append("spacings: " + " ".join(repr(float(v)) if v != "nan" else "nan" for v in sp))
        units = ['"nm"'] * len(spec.voxel_size) + ['"???"'] * (len(spec.shape) - len(spec.voxel_size))
        lines.append("units: " + " ".join(units))
    if spec.dtype == np.bool_:
        lines.append(f"{MARKER}:=bool")
    return ("\n".join(lines) + "\n\n").encode("ascii")


def write(spec: WriteSpec, blocks: Blocks) -> None:
    """Stream the header, then each slab (optionally through gzip/bzip2)."""
    stored = _stored_dtype(spec.dtype, spec.target)
    little = stored.newbyteorder("<")
    if spec.compression == "gzip":
        comp = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    elif spec.compression == "bzip2":
        comp = bz2.BZ2Compressor(9)
    else:
        comp = None
    with builtins.open(spec.tmp, "wb") as fh:
        fh.write(_header(spec, stored))
        for block in blocks:
            raw = np.ascontiguousarray(block, dtype=little).data
            fh.write(comp.compress(raw) if comp else raw)
        if comp:
            fh.write(comp.flush())
