#!/usr/bin/env python
"""Benchmark training-sample throughput of the EM augmentation pipeline (one worker, one core).

Each sample = random patch from a synthetic EM volume + augmentation + conversion to tensors,
exactly what one DataLoader worker does. Compared in the same run with a MONAI-only baseline
(``RandFlipd`` on every axis + ``Rand3DElasticd`` / ``Rand2DElasticd``, labels nearest).

Usage::

    python scripts/bench_data.py                 # 1x32x256x256 3-D and 1x512x512 2-D patches
    python scripts/bench_data.py --n3d 5 --n2d 10 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from neurons.data.synthetic import make_synthetic_volume
from neurons.data.transforms import AUGMENTATIONS, build_augmentation

KEYS = ("image", "instance", "semantic")


def crop(volume: dict, patch: tuple[int, ...], rng: np.random.Generator) -> dict:
    """Random patch (3-D, or a 2-D section when ``patch`` has two axes) as a float sample."""
    shape = volume["raw"].shape
    if len(patch) == 2:
        z = int(rng.integers(shape[0]))
        y, x = (int(rng.integers(s - p + 1)) for s, p in zip(shape[1:], patch, strict=True))
        sl = (z, slice(y, y + patch[0]), slice(x, x + patch[1]))
    else:
        start = [int(rng.integers(s - p + 1)) for s, p in zip(shape, patch, strict=True)]
        sl = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
    return {
        "image": (volume["raw"][sl].astype(np.float32) * np.float32(1 / 255))[None],
        "instance": volume["instance"][sl],
        "semantic": volume["semantic"][sl],
    }


def to_tensors(sample: dict) -> dict:
    return {
        "image": torch.as_tensor(np.ascontiguousarray(sample["image"])),
        "instance": torch.as_tensor(np.asarray(sample["instance"]).astype(np.int64)),
        "semantic": torch.as_tensor(np.asarray(sample["semantic"]).astype(np.int64)),
    }


def monai_baseline(spatial_dims: int, seed: int) -> Callable[[dict], dict]:
    """RandFlipd per axis + Rand{2,3}DElasticd (PyTC-style defaults), labels nearest."""
    from monai.transforms import Compose, Rand2DElasticd, Rand3DElasticd, RandFlipd

    flips = [RandFlipd(KEYS, prob=0.5, spatial_axis=a) for a in range(spatial_dims)]
    common = {"prob": 1.0, "mode": ("bilinear", "nearest", "nearest"), "padding_mode": "reflection"}
    if spatial_dims == 3:
        elastic = Rand3DElasticd(KEYS, sigma_range=(5, 8), magnitude_range=(50, 150), **common)
    else:
        elastic = Rand2DElasticd(KEYS, spacing=(32, 32), magnitude_range=(1, 4), **common)
    pipeline = Compose([*flips, elastic]).set_random_state(seed)

    def run(sample: dict) -> dict:
        sample = {  # MONAI wants channel-first tensors; ids as int64 (uint32 is not supported)
            "image": sample["image"],
            "instance": sample["instance"][None].astype(np.int64),
            "semantic": sample["semantic"][None].astype(np.int64),
        }
        out = pipeline(sample)
        return {
            "image": out["image"],
            "instance": out["instance"][0],
            "semantic": out["semantic"][0],
        }

    return run


def bench(name, volume, patch, augment, n, seed) -> dict:
    rng = np.random.default_rng(seed)
    to_tensors(augment(crop(volume, patch, rng)))  # warm-up (imports, allocations)
    t_aug = 0.0
    t0 = time.perf_counter()
    for _ in range(n):
        sample = crop(volume, patch, rng)
        ta = time.perf_counter()
        out = augment(sample)
        t_aug += time.perf_counter() - ta
        batch = to_tensors(out)
        assert batch["image"].shape == (1, *patch)
    total = time.perf_counter() - t0
    return {
        "pipeline": name,
        "patch": "1x" + "x".join(map(str, patch)),
        "samples": n,
        "samples_per_s": n / total,
        "ms_per_sample": 1000 * total / n,
        "ms_augment": 1000 * t_aug / n,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n3d", type=int, default=20, help="timed 3-D samples per pipeline")
    ap.add_argument("--n2d", type=int, default=40, help="timed 2-D samples per pipeline")
    ap.add_argument("--patch3d", type=int, nargs=3, default=(32, 256, 256))
    ap.add_argument("--patch2d", type=int, nargs=2, default=(512, 512))
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = one core)")
    ap.add_argument("--no-monai", action="store_true", help="skip the MONAI baseline")
    ap.add_argument(
        "--n-monai", type=int, default=5, help="timed samples for the (slow) MONAI baseline"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    vz = max(args.patch3d[0] + 8, 40)
    vy = max(args.patch3d[1], args.patch2d[0]) + 64
    vx = max(args.patch3d[2], args.patch2d[1]) + 64
    t0 = time.perf_counter()
    volume = make_synthetic_volume((vz, vy, vx), seed=args.seed)
    t_gen = time.perf_counter() - t0
    load = os.getloadavg()
    print(
        f"host: {platform.node()}  cpus: {os.cpu_count()}  torch threads: {args.threads}  "
        f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"synthetic volume {vz}x{vy}x{vx}: generated in {t_gen:.2f} s")

    all_on = {name: {"p": 1.0} for name in AUGMENTATIONS}
    rows = []
    for dims, patch, n in ((3, tuple(args.patch3d), args.n3d), (2, tuple(args.patch2d), args.n2d)):
        if n <= 0:
            continue
        runs = [
            ("neurons: defaults (all 14 on)", build_augmentation(True, dims, seed=args.seed)),
            ("neurons: every augmentation p=1", build_augmentation(all_on, dims, seed=args.seed)),
            ("none (crop + to-tensor only)", build_augmentation(False, dims)),
        ]
        if not args.no_monai:
            elastic = "Rand3DElasticd" if dims == 3 else "Rand2DElasticd"
            runs.append((f"MONAI RandFlipd + {elastic}", monai_baseline(dims, args.seed)))
        for name, aug in runs:
            count = min(n, args.n_monai) if name.startswith("MONAI") else n
            rows.append(bench(name, volume, patch, aug, count, args.seed))
            r = rows[-1]
            print(
                f"{r['patch']:>14}  {r['pipeline']:<36} {r['samples_per_s']:7.2f} samples/s  "
                f"{r['ms_per_sample']:8.1f} ms/sample  ({r['ms_augment']:.1f} ms augmenting)",
                flush=True,
            )
    load = os.getloadavg()
    print(
        f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        "(timings scale with the load of a shared machine)"
    )
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(
                {"load_average": load, "threads": args.threads, "results": rows}, fh, indent=2
            )
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
