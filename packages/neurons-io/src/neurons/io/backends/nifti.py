"""NIfTI-1/2 (.nii, .nii.gz) via nibabel, transposed once at the boundary: NIfTI (x, y, z) is
our (Z, Y, X) (all axes reversed), both ways, so a round trip is exact.

Voxel size: pixdim with the xyz unit (meter/mm/micron -> nm); with unit "unknown" pixdim values
are taken as nm, and all-ones pixdim means "not set" (``None``). Writing stores micrometres (the
finest NIfTI unit). bool is stored as uint8 with ``descrip = "neurons:dtype=bool"``; data are
written without scaling (scl_slope = 0), so integer ids stay exact (uint64 included).
"""

from __future__ import annotations

import builtins
import gzip
import os
import zlib
from decimal import Decimal
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import CorruptFileError, VolumeError, VolumeWriteError
from .base import (
    Blocks,
    Reader,
    WriteSpec,
    check_volume_shape,
    native,
    quiet_logs,
    single_array_key,
    storage_dtype,
    voxel_size_from,
)

CONTAINER = False
DIRECTORY = False
BOOL_MARKER = b"neurons:dtype=bool"
_UNIT_NM = {"meter": Decimal(10**9), "mm": Decimal(10**6), "micron": Decimal(1000)}
_DTYPES = tuple(np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32",
                                     "uint64", "int64", "float32", "float64"))


def list_keys(path: Path) -> list[str]:
    """A NIfTI file is one unnamed array: no keys."""
    return []


def _nm(value: float, scale: Decimal) -> float:
    # pixdim is float32: take its shortest decimal form, then scale exactly (0.004 um -> 4 nm).
    return float(Decimal(np.format_float_positional(np.float32(value), unique=True, trim="-")) * scale)


def header_voxel_size(header, ndim: int) -> tuple[float, ...] | None:
    """(z, y, x) nm from pixdim and xyzt_units."""
    nsp = min(ndim, 3)
    zooms = [float(z) for z in header.get_zooms()[:nsp]]
    unit = header.get_xyzt_units()[0]
    if unit == "unknown":
        if all(z == 1.0 for z in zooms):
            return None
        scale = Decimal(1)
    else:
        scale = _UNIT_NM.get(unit)
        if scale is None:
            return None
    if ndim == 4:  # (C, Z, Y, X) <-> NIfTI (x, y, z, t)
        zooms = zooms[:3]
    return voxel_size_from([_nm(z, scale) for z in zooms][::-1], ndim)


class NiftiReader(Reader):
    """nibabel's array proxy: uncompressed files are read region by region."""

    def __init__(self, path: Path, key: str | None) -> None:
        single_array_key(path, key, "NIfTI")
        self._path = path
        gz = _gz(path)
        self._fh = gzip.open(path, "rb") if gz else builtins.open(path, "rb")
        try:
            with quiet_logs("nibabel.global", "nibabel"):
                img = _load(self._fh)
        except Exception as exc:  # nibabel raises many types for a damaged header

            self._fh.close()
            raise CorruptFileError(f"{path}: not a readable NIfTI file ({exc})") from exc
        try:
            hdr = img.header
            self.shape = tuple(int(s) for s in img.shape[::-1])
            check_volume_shape(self.shape, str(path))
            self._proxy = img.dataobj
            self._bool = bytes(hdr["descrip"]).rstrip(b"\0").strip() == BOOL_MARKER
            slope, inter = self._proxy.slope, self._proxy.inter
            self._scaled = not (slope == 1.0 and inter == 0.0)
            stored = native(hdr.get_data_dtype())
            if self._bool:
                self.dtype = np.dtype(np.bool_)
            elif self._scaled:
                self.dtype = np.result_type(stored, np.asarray(slope).dtype, np.asarray(inter).dtype)
            else:
                self.dtype = stored
            self.voxel_size = header_voxel_size(hdr, len(self.shape))
            self.attrs = {"affine": img.affine.tolist(), "xyzt_units": hdr.get_xyzt_units(),
                          "descrip": bytes(hdr["descrip"]).rstrip(b"\0").decode("latin-1")}
            self.compression = "gzip" if gz else None
            if self.compression is None:
                need = int(hdr["vox_offset"]) + int(np.prod(img.shape, dtype=np.int64)) * stored.itemsize
                if need > os.path.getsize(path):
                    raise CorruptFileError(
                        f"{path}: truncated NIfTI: data needs {need} bytes, file has {os.path.getsize(path)}"
                    )
        except VolumeError:
            self._fh.close()
            raise
        except Exception as exc:  # a damaged header: nibabel raises many types
            self._fh.close()
            raise CorruptFileError(f"{path}: damaged NIfTI header ({exc})") from exc

    def read(self, box):
        try:
            with quiet_logs("nibabel.global", "nibabel"):
                data = np.asarray(self._proxy[box[::-1]]).transpose()
        except (OSError, EOFError, ValueError, zlib.error, TypeError, IndexError) as exc:
            raise CorruptFileError(f"{self._path}: truncated or damaged NIfTI data ({exc})") from exc
        return (data != 0) if self._bool else np.array(data, dtype=self.dtype)

    def close(self) -> None:
        self._proxy = None
        self._fh.close()


def _load(fh) -> nib.Nifti1Image:
    """Parse a NIfTI-1/2 image from an open (possibly gzip) file, whatever its name."""
    sizeof_hdr = fh.read(4)
    fh.seek(0)
    n2 = sizeof_hdr in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")  # 540
    cls = nib.Nifti2Image if n2 else nib.Nifti1Image
    holder = nib.FileHolder(fileobj=fh)
    return cls.from_file_map({"header": holder, "image": holder})


def _gz(path: Path) -> bool:
    with builtins.open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open(path: Path, key: str | None) -> NiftiReader:  # noqa: A001 - backend interface
    """Open a NIfTI image lazily, as (Z, Y, X)."""
    return NiftiReader(path, key)


def _stored_dtype(dtype: np.dtype, where: Path) -> np.dtype:
    return storage_dtype(dtype, _DTYPES, "NIfTI", where)


def check(spec: WriteSpec) -> None:
    """No key; gzip iff the name ends in .nii.gz; dtype storable."""
    single_array_key(spec.target, spec.key, "NIfTI")
    gz = spec.target.name.lower().endswith(".gz")
    if spec.compression not in (None, "gzip") or (spec.compression == "gzip" and not gz):
        raise VolumeWriteError(
            f"{spec.target}: NIfTI compression is chosen by the name (.nii.gz = gzip, .nii = none); "
            f"got compression={spec.compression!r}"
        )
    _stored_dtype(spec.dtype, spec.target)


def make_header(spec: WriteSpec, stored: np.dtype) -> nib.Nifti1Header:
    """A NIfTI-1 header for (Z, Y, X) data written in C order (= NIfTI's x-fastest order)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(spec.shape[::-1])
    hdr.set_data_dtype(stored)
    zooms = [1.0] * len(spec.shape)
    if spec.voxel_size is not None:
        um = [float(Decimal(repr(v)) / 1000) for v in spec.voxel_size[::-1]]
        zooms[: len(um)] = um
        hdr.set_xyzt_units(xyz="micron")
    hdr.set_zooms(zooms)
    affine = np.diag([*zooms[:3], *[1.0] * (3 - min(3, len(zooms))), 1.0])
    hdr.set_sform(affine, code="aligned")
    hdr.set_qform(affine, code="aligned")
    hdr["scl_slope"], hdr["scl_inter"] = 0.0, 0.0  # 0 = no scaling (NIfTI-1 standard)
    hdr["vox_offset"] = 352
    if spec.dtype == np.bool_:
        hdr["descrip"] = BOOL_MARKER
    return hdr


def write(spec: WriteSpec, blocks: Blocks) -> None:
    """Stream the 348-byte header, the empty extension flag, then each slab's bytes."""
    stored = _stored_dtype(spec.dtype, spec.target)
    hdr = make_header(spec, stored)
    little = stored.newbyteorder("<")
    gz = spec.target.name.lower().endswith(".gz")
    opener = gzip.open(spec.tmp, "wb", compresslevel=1) if gz else builtins.open(spec.tmp, "wb")
    with opener as fh:
        block0 = hdr.binaryblock
        if hdr.endianness != "<":
            hdr = hdr.as_byteswapped("<")
            block0 = hdr.binaryblock
        fh.write(block0)
        fh.write(b"\0\0\0\0")
        for block in blocks:
            fh.write(np.ascontiguousarray(block, dtype=little).data)
