"""PNG through Pillow: header inspection, decoding, and lossless writing (uint8/uint16/bool)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from ..errors import CorruptFileError, UnsupportedDtypeError

VOXEL_KEY = "neurons:voxel_size_nm"
PNG_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.bool_))
_MODES = {
    "1": (np.bool_, ()),
    "L": (np.uint8, ()),
    "P": (np.uint8, ()),
    "I;16": (np.uint16, ()),
    "I;16B": (np.uint16, ()),
    "I;16L": (np.uint16, ()),
    "I": (np.int32, ()),
    "F": (np.float32, ()),
    "LA": (np.uint8, (2,)),
    "RGB": (np.uint8, (3,)),
    "RGBA": (np.uint8, (4,)),
}


def png_info(path: Path) -> tuple[tuple[int, ...], np.dtype, list[float] | None]:
    """Shape, dtype and stored voxel size of an image, reading only its header."""
    try:
        with Image.open(path) as im:
            mode, (w, h), text = im.mode, im.size, dict(getattr(im, "text", {}) or {})
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptFileError(f"{path}: not a readable image ({exc})") from exc
    if mode not in _MODES:
        raise CorruptFileError(f"{path}: unsupported image mode {mode!r}")
    dtype, extra = _MODES[mode]
    vs = None
    if VOXEL_KEY in text:
        try:
            vs = [float(v) for v in json.loads(text[VOXEL_KEY])]
        except (ValueError, TypeError):
            vs = None
    return (h, w, *extra), np.dtype(dtype), vs


def read_image(path: Path) -> np.ndarray:
    """Decode a whole PNG (or any Pillow image) to an array."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptFileError(f"{path}: truncated or damaged image ({exc})") from exc
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def check_png_dtype(dtype: np.dtype, where: str) -> None:
    """PNG stores only 1-, 8- and 16-bit grey losslessly."""
    if np.dtype(dtype) not in PNG_DTYPES:
        raise UnsupportedDtypeError(
            f"{where}: PNG stores only uint8, uint16 and bool losslessly, not {np.dtype(dtype)}; "
            "write .tif (any dtype), .h5, .nrrd, .npy or a TIFF slice folder instead"
        )


def write_png(path: Path, image: np.ndarray, voxel_size=None) -> None:
    """Write one 2-D image as PNG (``voxel_size`` kept in a text chunk)."""
    info = PngImagePlugin.PngInfo()
    if voxel_size is not None:
        info.add_text(VOXEL_KEY, json.dumps(list(voxel_size)))
    image = np.ascontiguousarray(image)
    Image.fromarray(image).save(path, format="PNG", pnginfo=info, compress_level=1)
