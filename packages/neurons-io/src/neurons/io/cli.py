"""``neurons-io``: explore and convert volumes.

``neurons-io info PATH [--labels]``, ``neurons-io convert SRC DST [...]``,
``neurons-io show PATH [--z N] [--labels LABELS] -o out.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_destination
from .detect import detect_format
from .errors import InvalidVolumeError, KeyNotFoundError, PathError, VolumeError
from .paths import split_key
from .render import render_section
from .volume import Volume, list_keys, open_volume
from .write import WRITE_FORMATS, convert_volume


def _merge_counts(ids: np.ndarray, counts: np.ndarray, block: np.ndarray):
    """Add ``block``'s (id, voxel count) pairs to the running ones (sorted unique ids)."""
    bids, bcounts = np.unique(block, return_counts=True)
    allids = np.concatenate([ids, bids])
    uniq, inv = np.unique(allids, return_inverse=True)
    return uniq, np.bincount(inv, weights=np.concatenate([counts, bcounts])).astype(np.int64)


def _scan(vol: Volume, labels: bool) -> dict:
    lo = hi = None
    ids = np.empty(0, dtype=vol.dtype)
    counts = np.empty(0, dtype=np.int64)
    for _, block in vol.iter_blocks():
        if block.size == 0:
            continue
        if vol.dtype.kind == "f":
            finite = block[np.isfinite(block)]
            if finite.size == 0:
                continue
            bmin, bmax = finite.min(), finite.max()
        else:
            bmin, bmax = block.min(), block.max()
        lo = bmin if lo is None else min(lo, bmin)
        hi = bmax if hi is None else max(hi, bmax)
        if labels:
            ids, counts = _merge_counts(ids, counts, block)
    out = {"min": None if lo is None else lo.item(), "max": None if hi is None else hi.item()}
    if labels:
        nonzero = counts[ids != 0]
        out["distinct_values"] = int(ids.size)
        out["distinct_nonzero_ids"] = int(nonzero.size)
        out["background_fraction"] = float(counts[ids == 0].sum() / max(1, vol.size))
        out["object_voxels_median"] = float(np.median(nonzero)) if nonzero.size else None
        out["object_voxels_max"] = int(nonzero.max()) if nonzero.size else None
    return out


def _is_label_dtype(dtype: np.dtype) -> bool:
    """Integer arrays of 32 or 64 bits are treated as label volumes in a container listing."""
    return dtype.kind in "iu" and dtype.itemsize >= 4


def _summary(vol: Volume, labels: bool) -> dict:
    return {
        "shape": list(vol.shape),
        "dtype": str(vol.dtype),
        "chunks": list(vol.chunks) if vol.chunks else None,
        "compression": vol.compression,
        "voxel_size_nm": list(vol.voxel_size) if vol.voxel_size else None,
        **_scan(vol, labels),
    }


def _container_info(path: Path, fmt: str, keys: list[str], labels: bool) -> dict:
    arrays = []
    for k in keys:
        try:
            with open_volume(path, k) as vol:
                arrays.append({"key": k, **_summary(vol, labels or _is_label_dtype(vol.dtype))})
        except VolumeError as exc:  # e.g. a string table next to the volumes: listed, not fatal
            arrays.append({"key": k, "error": str(exc)})
    return {"path": str(path), "format": fmt, "keys": keys, "arrays": arrays}


def info(path: str, key: str | None = None, labels: bool = False) -> dict:
    """Everything ``neurons-io info`` prints, as a dict.

    A container (HDF5/Zarr) holding several arrays, opened without a key, is listed array by
    array (``"arrays"``: key, shape, dtype, voxel size, value range, and label statistics for
    32/64-bit integer arrays or, with ``labels=True``, for every array); arrays that are not
    volumes (string tables, compound records) are listed with the reason.
    """
    p, k = split_key(path, key)
    try:
        vol = open_volume(p, k)
    except KeyNotFoundError as exc:
        if k is None and len(exc.available) > 1:
            return _container_info(p, detect_format(p), exc.available, labels)
        raise
    with vol:
        try:
            keys = list_keys(vol.path)
        except VolumeError:
            keys = []
        return {
            "path": str(vol.path),
            "format": vol.format,
            "key": vol.key,
            "keys": keys,
            **_summary(vol, labels),
        }


def _section(vol: Volume, z: int | None) -> tuple[np.ndarray, int | None]:
    if vol.ndim == 2:
        if z not in (None, 0):
            raise InvalidVolumeError(f"{vol.path}: 2-D image has no section {z}")
        return vol[...], None
    if vol.ndim != 3:
        raise InvalidVolumeError(f"{vol.path}: show needs a 2-D or 3-D volume, got shape {vol.shape}")
    z = vol.shape[0] // 2 if z is None else z
    if not -vol.shape[0] <= z < vol.shape[0]:
        raise InvalidVolumeError(f"{vol.path}: --z {z} outside 0..{vol.shape[0] - 1}")
    return vol[z], z % vol.shape[0]


def show(path: str, out: str, z: int | None = None, labels: str | None = None,
         key: str | None = None, alpha: float = 0.5) -> Path:
    """Write section ``z`` (default: the middle) of ``path`` as PNG, labels blended in."""
    with open_volume(path, key) as vol:
        image, zz = _section(vol, z)
    lab = None
    if labels is not None:
        with open_volume(labels) as lvol:
            lab, _ = _section(lvol, zz)
    rgb = render_section(image, lab, alpha)
    if not str(out).strip():
        raise PathError(f"empty output path {out!r}: name a .png file")
    dst = Path(out)
    with atomic_destination(dst, directory=False, keep_existing=False) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
    return dst


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurons-io", description="Explore and convert volumes.")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of errors")
    sub = p.add_subparsers(dest="command", required=True)
    pi = sub.add_parser("info", help="format, keys, shape, dtype, chunks, voxel size, value range")
    pi.add_argument("path", help="file or folder, optionally 'file.h5:key'")
    pi.add_argument("--key", default=None)
    pi.add_argument("--labels", action="store_true", help="also count distinct ids")
    pi.add_argument("--json", action="store_true", help="print JSON")
    pc = sub.add_parser("convert", help="copy a volume to another file/format, block by block")
    pc.add_argument("src")
    pc.add_argument("dst")
    pc.add_argument("--key", default=None, help="source key")
    pc.add_argument("--dst-key", default=None, help="destination key")
    pc.add_argument("--chunks", default=None, help="z,y,x chunk sizes (HDF5/Zarr)")
    pc.add_argument("--compression", default=None, help="codec, e.g. gzip, lzf, zlib, zstd")
    pc.add_argument("--format", default=None, choices=WRITE_FORMATS)
    pc.add_argument("--block-mb", type=float, default=64.0, help="memory per block (MiB)")
    ps = sub.add_parser("show", help="write a section as PNG, optionally with a label overlay")
    ps.add_argument("path")
    ps.add_argument("--key", default=None)
    ps.add_argument("--z", type=int, default=None, help="section index (default: middle)")
    ps.add_argument("--labels", default=None, help="label volume to overlay (same shape)")
    ps.add_argument("--alpha", type=float, default=0.5)
    ps.add_argument("-o", "--output", required=True)
    return p


def one_line(exc: BaseException) -> str:
    """An error message on one line (third-party messages may contain line breaks)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _print_info(d: dict) -> None:
    for k, v in d.items():
        if (k == "keys" and not v) or k == "arrays":
            continue
        print(f"{k:>21}: {v}")
    for arr in d.get("arrays", []):
        print()
        for k, v in arr.items():
            print(f"{k:>21}: {v}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``neurons-io``; returns the exit status.

    0: success; 2: a user error (bad argument, unreadable/corrupt/unsupported input, unwritable
    destination), reported as one line on stderr (``--debug`` re-raises it with a traceback).
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "info":
            d = info(args.path, args.key, args.labels)
            print(json.dumps(d)) if args.json else _print_info(d)
        elif args.command == "convert":
            chunks = tuple(int(c) for c in args.chunks.split(",")) if args.chunks else None
            out = convert_volume(
                args.src, args.dst, key=args.key, dst_key=args.dst_key, chunks=chunks,
                compression=None if args.compression in (None, "none") else args.compression,
                format=args.format, max_block_bytes=int(args.block_mb * 2**20),
            )
            print(f"wrote {out}")
        else:
            out = show(args.path, args.output, args.z, args.labels, args.key, args.alpha)
            print(f"wrote {out}")
    except (VolumeError, ValueError, OSError) as exc:  # ValueError: e.g. malformed --chunks
        if args.debug:
            raise
        print(f"neurons-io: error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
