"""Format detection: magic bytes and folder structure first, file extension second."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

from .errors import UnknownFormatError, VolumeReadError

FORMATS = ("hdf5", "tiff", "png", "slices", "nrrd", "nifti", "npy", "zarr")

#: Extension -> format, used for destinations and as the fallback for unrecognised bytes.
EXTENSIONS = {
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".he5": "hdf5",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".png": "png",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".npy": "npy",
    ".zarr": "zarr",
    ".zr": "zarr",
}

#: Suffixes of known formats that have no backend -> name used in the error message.
UNSUPPORTED_SUFFIXES = {".n5": "N5"}
_UNSUPPORTED_HINT = "is not supported by neurons.io (no backend); convert it to Zarr or HDF5"

SLICE_SUFFIXES = (".tif", ".tiff", ".png")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json", ".zattrs")


def suffix_of(path: str | os.PathLike) -> str:
    """Lower-case suffix, with the double suffix ``.nii.gz`` kept whole."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def format_from_extension(path: str | os.PathLike) -> str | None:
    """Format implied by the file name alone (``None`` when the suffix is not known)."""
    return EXTENSIONS.get(suffix_of(path))


def check_supported(path: str | os.PathLike) -> None:
    """Raise :class:`UnknownFormatError` for a path whose suffix names a format without backend.

    Examples
    --------
    >>> check_supported("volume.h5")
    >>> check_supported("volume.n5")
    Traceback (most recent call last):
    ...
    neurons.io.errors.UnknownFormatError: volume.n5: N5 is not supported by neurons.io (no \
backend); convert it to Zarr or HDF5
    """
    name = UNSUPPORTED_SUFFIXES.get(suffix_of(path).split(":")[0])
    if name:
        raise UnknownFormatError(f"{path}: {name} {_UNSUPPORTED_HINT}")


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348:
        for order in "<>":
            if struct.unpack(order + "i", head[:4])[0] == 348 and head[344:347] in (b"n+1", b"ni1"):
                return True
    if len(head) >= 540:
        for order in "<>":
            if struct.unpack(order + "i", head[:4])[0] == 540 and head[4:7] in (b"n+2", b"ni2"):
                return True
    return False


def _sniff_bytes(head: bytes, path: Path) -> str | None:
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if _is_nifti_header(head):
        return "nifti"
    if head.startswith(b"\x1f\x8b"):  # gzip: look inside for a NIfTI header
        try:
            with gzip.open(path, "rb") as fh:
                inner = fh.read(544)
        except (OSError, EOFError, zlib.error):
            return None
        if _is_nifti_header(inner):
            return "nifti"
    return None


def _hdf5_userblock(path: Path, size: int) -> bool:
    # HDF5 allows a user block: the signature may sit at 512, 1024, 2048, ...
    offset = 512
    with open(path, "rb") as fh:
        while offset < min(size, 1 << 20):
            fh.seek(offset)
            if fh.read(8) == _HDF5_MAGIC:
                return True
            offset *= 2
    return False


def _sniff_dir(path: Path) -> str | None:
    names = set(os.listdir(path))
    if names & set(_ZARR_MARKERS):
        return "zarr"
    if any(n.lower().endswith(SLICE_SUFFIXES) and not n.startswith(".") for n in names):
        return "slices"
    return None


def detect_format(path: str | os.PathLike) -> str:
    """Detect the format of an existing file or folder.

    Magic bytes (files) or the folder structure (Zarr stores, slice folders) decide first; the
    extension is used only when the content is not recognised (for instance a truncated file,
    whose backend then reports the damage).

    Parameters
    ----------
    path : str or os.PathLike
        An existing file or folder.

    Returns
    -------
    str
        One of ``"hdf5", "tiff", "png", "slices", "nrrd", "nifti", "npy", "zarr"``.

    Raises
    ------
    UnknownFormatError
        When nothing matches; the message lists what was tried.

    Examples
    --------
    >>> detect_format("volume.h5")  # doctest: +SKIP
    'hdf5'
    """
    path = Path(path)
    if not path.exists():
        raise UnknownFormatError(f"{path}: no such file or folder")
    try:
        return _detect(path)
    except PermissionError as exc:
        raise VolumeReadError(f"{path}: cannot be read: permission denied") from exc
    except (IsADirectoryError, NotADirectoryError) as exc:
        raise UnknownFormatError(f"{path}: {exc.strerror}") from exc
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise UnknownFormatError(f"{path}: no such file or folder") from exc
        raise VolumeReadError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _detect(path: Path) -> str:
    if path.is_dir():
        found = _sniff_dir(path)
        if found:
            return found
        check_supported(path)
        if "attributes.json" in os.listdir(path):
            raise UnknownFormatError(
                f"{path}: folder holds attributes.json, an N5 container; N5 {_UNSUPPORTED_HINT}"
            )
        raise UnknownFormatError(
            f"{path}: folder is neither a Zarr store (.zarray/.zgroup/zarr.json) nor a folder of "
            f"2-D slices ({', '.join(SLICE_SUFFIXES)})"
        )
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(1024)
    found = _sniff_bytes(head, path)
    if found:
        return found
    if size > 512 and _hdf5_userblock(path, size):
        return "hdf5"
    by_ext = format_from_extension(path)
    if by_ext:
        return by_ext
    raise UnknownFormatError(
        f"{path}: unrecognised content ({size} bytes, starts with {head[:8]!r}); tried magic bytes "
        "of HDF5, TIFF/BigTIFF, PNG, NRRD, NumPy .npy, NIfTI-1/2 (plain and gzip) and the "
        f"extensions {', '.join(sorted(EXTENSIONS))}"
    )
