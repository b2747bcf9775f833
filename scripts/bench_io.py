#!/usr/bin/env python
"""Read/write throughput of neurons.io per format, next to raw np.save / np.load of the same bytes.

Usage::

    python scripts/bench_io.py                       # 100x1024x1024 uint8 and uint64
    python scripts/bench_io.py --shape 16,256,256    # quick run
    python scripts/bench_io.py --formats hdf5,tiff --repeat 3

Notes
-----
* Every number is best-of-``--repeat`` wall time. Reads run right after the write, so the file is
  in the OS page cache for *every* format alike (raw numpy included): this measures decode/copy
  overhead, not disk speed. Writes include the atomic rename and an fsync-free close.
* ``ratio`` = format MB/s divided by raw numpy MB/s of the same dtype in the same run
  (1.0 = as fast as ``np.save``/``np.load``; the target for uncompressed HDF5/TIFF reads is >= 0.5).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from neurons.io import read_volume, write_volume

FORMATS = {
    "hdf5": ("vol.h5", {}),
    "hdf5-gzip": ("vol_gz.h5", {"compression": "gzip:1", "chunks": (8, 256, 256)}),
    "tiff": ("vol.tif", {}),
    "nrrd": ("vol.nrrd", {}),
    "nifti": ("vol.nii", {}),
    "npy": ("vol.npy", {}),
    "zarr": ("vol.zarr", {}),
    "slices": ("slices", {}),
}


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _data(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    n = int(np.prod(shape))
    vals = np.arange(n, dtype=np.uint64) * np.uint64(2654435761)
    if dtype == "uint64":
        vals |= np.uint64(1) << np.uint64(63)  # ids >= 2^63, as in MICrONS
        return vals.reshape(shape)
    return (vals >> np.uint64(24)).astype(dtype).reshape(shape)


def _rm(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def bench(shape, dtypes, formats, repeat, workdir: Path) -> list[dict]:
    rows = []
    for dtype in dtypes:
        arr = _data(shape, dtype)
        mb = arr.nbytes / 1e6
        raw = workdir / "raw.npy"
        w_raw = _best(lambda arr=arr, raw=raw: np.save(raw, arr), repeat)
        r_raw = _best(lambda raw=raw: np.load(raw), repeat)
        _rm(raw)
        rows.append(dict(dtype=dtype, fmt="raw np.save/np.load", w=mb / w_raw, r=mb / r_raw,
                         wr=1.0, rr=1.0, size=mb))
        for name in formats:
            fname, kw = FORMATS[name]
            dst = workdir / fname
            try:
                w = _best(lambda dst=dst, arr=arr, kw=kw: write_volume(dst, arr, **kw), repeat)
                back = read_volume(dst)
                if not np.array_equal(back, arr):
                    raise AssertionError(f"{name} round trip differs")
                del back
                r = _best(lambda dst=dst: read_volume(dst), repeat)
                size = sum(p.stat().st_size for p in ([dst] if dst.is_file() else dst.rglob("*")) if p.is_file()) / 1e6
            except ImportError as exc:
                print(f"  skip {name}: {exc}")
                continue
            finally:
                pass
            _rm(dst)
            rows.append(dict(dtype=dtype, fmt=name, w=mb / w, r=mb / r, wr=(mb / w) / (mb / w_raw),
                             rr=(mb / r) / (mb / r_raw), size=size))
        del arr
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="100,1024,1024", help="z,y,x (default 100,1024,1024)")
    p.add_argument("--dtypes", default="uint8,uint64")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"subset of {','.join(FORMATS)}")
    p.add_argument("--repeat", type=int, default=2, help="best of N (default 2)")
    p.add_argument("--dir", default=None, help="scratch folder (default: a temp dir in the CWD)")
    args = p.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    formats = [f for f in args.formats.split(",") if f]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        p.error(f"unknown formats {unknown}")
    workdir = Path(tempfile.mkdtemp(prefix="bench_io_", dir=args.dir or "."))
    try:
        rows = bench(shape, args.dtypes.split(","), formats, args.repeat, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nshape {shape}, best of {args.repeat}; reads are warm-cache for all formats alike")
    print(f"{'dtype':<7} {'format':<20} {'write MB/s':>10} {'ratio':>6} {'read MB/s':>10} "
          f"{'ratio':>6} {'file MB':>8}")
    for r in rows:
        print(f"{r['dtype']:<7} {r['fmt']:<20} {r['w']:>10.0f} {r['wr']:>6.2f} {r['r']:>10.0f} "
              f"{r['rr']:>6.2f} {r['size']:>8.1f}")


if __name__ == "__main__":
    main()
