"""Inference throughput: voxels/s and time versus volume size (should be linear).

Runs the full block-wise pipeline (read from HDF5 through neurons.io -> sliding window with
Gaussian blending -> instance decoding -> halo matching / union-find -> relabelled HDF5 output)
with a Vista3D model (random weights unless ``--checkpoint``) on synthetic EM volumes of
growing size, and fits time = a + b * voxels.

Usage::

    python scripts/bench_inference.py                      # CPU, 32..256 x 256 x 256
    python scripts/bench_inference.py --device cuda --sizes 64x512x512 128x512x512 128x1024x1024
    python scripts/bench_inference.py --decoders                # decoding cost of every decoder
    python scripts/bench_inference.py --cluster --workers 1 2 --sizes 32x256x256  # distributed
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _oracle_outputs(vol: dict, offsets, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible predictions from the synthetic labels: smoothed and noisy class probabilities,
    affinities and a per-instance embedding (so that every decoder has realistic work)."""
    from scipy import ndimage

    from neurons.train.inference.decoders import pair_slices

    rng = np.random.default_rng(seed)
    inst, sem = vol["instance"].astype(np.int64), vol["semantic"]

    def noisy(x: np.ndarray, sd: float) -> np.ndarray:
        x = ndimage.gaussian_filter(x.astype(np.float32), (0, 1, 1))
        return np.clip(x + rng.normal(0, sd, x.shape).astype(np.float32), 0, 1)

    probs = np.stack([noisy(sem == c, 0.1) for c in range(5)]) + 1e-3
    aff = np.zeros((len(offsets), *inst.shape), np.float32)
    for k, off in enumerate(offsets):
        src, dst = pair_slices(off, inst.shape)
        aff[k][src] = (inst[src] == inst[dst]) & (inst[src] > 0)
        aff[k] = noisy(aff[k], 0.1)
    ids, inv = np.unique(inst, return_inverse=True)
    centres = rng.normal(0, 1.5, (ids.size, 8)).astype(np.float32)
    emb = np.moveaxis(centres[inv.reshape(inst.shape)], -1, 0)
    emb += rng.normal(0, 0.15, emb.shape).astype(np.float32)
    return {"semantic": probs / probs.sum(0), "affinity": aff, "instance": emb}


def decoder_costs(args) -> int:
    """Decoder-cost mode: voxels/s of every decoder on the same outputs, watershed first."""
    from neurons.data import make_synthetic_volume
    from neurons.metrics import adapted_rand_error
    from neurons.models import default_affinity_offsets
    from neurons.train.inference import DECODERS, decode

    names = list(args.decoders) or list(DECODERS)
    unknown = [n for n in names if n not in DECODERS]
    if unknown:
        print(f"bench_inference: error: unknown decoder(s) {unknown}; known: {list(DECODERS)}")
        return 2
    names = ["watershed"] + [n for n in names if n != "watershed"]
    shape = tuple(int(v) for v in args.decoder_size.split("x"))
    vol = make_synthetic_volume(shape, seed=1)
    offsets = default_affinity_offsets(len(shape))
    t0 = time.perf_counter()
    if args.checkpoint:
        import torch

        from neurons.train.inference import SlidingWindow, load_model, predict_region

        model, _ = load_model(args.checkpoint, args.device)
        torch.set_num_threads(args.threads or torch.get_num_threads())
        sw = SlidingWindow(
            window=tuple(int(v) for v in args.window.split("x")),
            keys=None,
            activation={"semantic": "softmax", "affinity": "sigmoid"},
            device=args.device,
        )
        outputs = predict_region(model, vol["raw"], sw)
        origin = f"predictions of {args.checkpoint}"
    else:
        outputs = _oracle_outputs(vol, offsets)
        origin = "noisy oracle outputs of the synthetic labels (no model)"
    n = int(np.prod(shape))
    print(
        f"decoders on {shape} = {n / 1e6:.2f} Mvoxel, {origin} ({time.perf_counter() - t0:.1f} s)"
    )
    print(f"affinity offsets {offsets}; defaults of each decoder (DECODERS[name].defaults)")
    print()
    print("| decoder | time (s) | voxels/s | x watershed | objects | ARAND vs labels |")
    print("|---|---|---|---|---|---|")
    base = None
    for name in names:
        missing = [k for k in DECODERS[name].needs if k not in outputs]
        if missing:
            print(f"| {name} | - | - | - | - | needs {missing} |")
            continue
        t0 = time.perf_counter()
        seg = decode(outputs, name, offsets=offsets)
        dt = time.perf_counter() - t0
        base = base or dt
        err = adapted_rand_error(vol["instance"], seg).error
        print(
            f"| {name} | {dt:.2f} | {n / dt / 1e3:.0f} k | {dt / base:.2f} | "
            f"{int(seg.max())} | {err:.3f} |",
            flush=True,
        )
    return 0


class _ThresholdModel:
    """Oracle-like cheap model for the memory run: foreground logit from the raw intensity."""

    def __call__(self, x):
        import torch

        logit = 20.0 * (x[:, :1] - 0.5)
        return {"semantic": torch.cat([-logit, logit], 1)}


def _cell_slabs(shape, planes: int = 8, period=(12, 24, 24)):
    """uint8 raw of box-shaped cells (255) with 1-voxel membranes (0), slab by slab."""
    yy, xx = np.ogrid[: shape[1], : shape[2]]
    plane = np.where((yy % period[1] == 0) | (xx % period[2] == 0), 0, 255).astype(np.uint8)
    for z0 in range(0, shape[0], planes):
        zz = np.arange(z0, min(z0 + planes, shape[0]))
        yield np.where((zz % period[0] == 0)[:, None, None], np.uint8(0), plane[None])


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _warm_up() -> None:
    import neurons.train.inference.distributed  # noqa: F401


def _worker_peak_rss_mb() -> float:
    # VmHWM: this process's own peak RSS (ru_maxrss starts at the spawning parent's peak)
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")) / 1024


def cluster_scaling(args) -> int:
    """``--cluster``: dask.distributed LocalCluster runs (worker processes over TCP): the same
    volume with each ``--workers`` count (speed-up), then ``--big`` (a volume whose uint64
    segmentation is several times one worker's ``--memory-limit``) with peak RSS per worker."""
    import os

    import dask
    import torch
    from distributed import Client, LocalCluster

    from neurons.data import make_synthetic_volume
    from neurons.io import write_blocks, write_volume
    from neurons.models import build_model
    from neurons.train.inference import DecodeConfig, Predictor, SlidingWindow
    from neurons.train.inference.distributed import segment_distributed

    dims = lambda s: tuple(int(v) for v in s.split("x"))  # noqa: E731
    tmp = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    limit = dask.utils.parse_bytes(args.memory_limit)

    def run(n_workers, source, predictor, window, block, overlap, out, dec, limit=limit):
        # the nanny terminates a worker above 95 % of its limit; pausing at 80 % is disabled
        # because the limit is meant to be tight (an idle worker with torch is ~0.4 GiB)
        with dask.config.set({"distributed.worker.memory.pause": False}):
            cluster = LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, protocol="tcp",
                host="127.0.0.1", memory_limit=limit, dashboard_address=None,
            )  # fmt: skip
            client = Client(cluster)
            try:
                before = set(client.scheduler_info()["workers"])
                client.run(_warm_up)  # imports, not part of the job's time
                cpu0 = client.run(_cpu_seconds)
                t0 = time.perf_counter()
                res = segment_distributed(
                    client, predictor, source, window, dec, output=out, block_size=block,
                    overlap=overlap,
                )  # fmt: skip
                dt = time.perf_counter() - t0
                cpu1 = client.run(_cpu_seconds)
                cpu = sorted(cpu1[w] - cpu0[w] for w in cpu1 if w in cpu0)
                peaks = client.run(_worker_peak_rss_mb)
                restarts = len(set(client.scheduler_info()["workers"]) - before)
            finally:
                client.close()
                cluster.close()
        return res, dt, sorted(peaks.values()), restarts, cpu

    print(f"dask.distributed LocalCluster, 1 thread per worker over TCP on 127.0.0.1; "
          f"load average before: {os.getloadavg()}")  # fmt: skip
    torch.manual_seed(0)
    model = build_model("vista3d", preset=args.preset).eval()
    window = SlidingWindow(window=dims(args.window), overlap=0.25, batch_size=args.batch_size)
    shape = dims(args.sizes[0])
    vol = make_synthetic_volume(shape, seed=1)
    src = tmp / "raw.zarr"
    write_volume(f"{src}:raw", vol["raw"], chunks=dims(args.block))
    print(f"\nspeed-up: tiny Vista3D (random weights), watershed, volume {args.sizes[0]}, "
          f"block {args.block}, halo {args.overlap}, worker limit {2 * limit / 2**20:.0f} MiB")  # fmt: skip
    print("| workers | time (s) | voxels/s | speed-up | worker CPU s / wall s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    base = None
    for n in args.workers if len(args.workers) > 1 else []:
        res, dt, peaks, _, cpu = run(
            n, f"{src}:raw", Predictor(model=model), window, dims(args.block),
            dims(args.overlap), tmp / f"seg_{n}.zarr", DecodeConfig(method="watershed"),
            limit=2 * limit,  # the network's activations: the tight limit is for the memory run
        )  # fmt: skip
        base = base or dt
        print(f"| {n} | {dt:.1f} | {res.voxels / dt / 1e3:.0f} k | {base / dt:.2f} | "
              f"{' + '.join(f'{c / dt:.2f}' for c in cpu)} | "
              f"{', '.join(f'{p:.0f}' for p in peaks)} |", flush=True)  # fmt: skip
    big = dims(args.big)
    nvox = int(np.prod(big))
    bsrc = tmp / "big_raw.zarr"
    write_blocks(f"{bsrc}:raw", big, np.uint8, _cell_slabs(big), chunks=dims(args.block))
    seg_bytes = nvox * 8
    n = max(args.workers)
    bwin = SlidingWindow(window=dims(args.window), overlap=0.0, batch_size=args.batch_size)
    res, dt, peaks, restarts, cpu = run(
        n, f"{bsrc}:raw", Predictor(model=_ThresholdModel()), bwin, dims(args.block),
        dims(args.overlap), tmp / "big_seg.zarr", DecodeConfig(method="watershed"),
    )  # fmt: skip
    print(
        f"\nmemory: volume {args.big} = {nvox / 1e6:.0f} Mvoxel, uint64 segmentation "
        f"{seg_bytes / 2**30:.2f} GiB = {seg_bytes / limit:.1f}x the {args.memory_limit} worker "
        f"limit; {n} workers, threshold model (window overlap 0) + watershed: {dt:.1f} s "
        f"({nvox / dt / 1e6:.2f} Mvoxel/s), {res.num_objects} objects, {res.num_blocks} blocks"
    )
    print(f"peak RSS per worker: {', '.join(f'{p:.0f} MiB' for p in peaks)} "
          f"(limit {limit / 2**20:.0f} MiB); worker restarts: {restarts}; "
          f"worker CPU s / wall s {' + '.join(f'{c / dt:.2f}' for c in cpu)}")  # fmt: skip
    print(f"load average after: {os.getloadavg()}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes",
        nargs="+",
        default=["32x256x256", "64x256x256", "128x256x256", "256x256x256"],
        help="volumes to segment; growing one axis keeps the share of border blocks comparable",
    )
    p.add_argument(
        "--checkpoint", default=None, help="trained checkpoint (default: random tiny Vista3D)"
    )
    p.add_argument("--preset", default="tiny")
    p.add_argument("--window", default="16x64x64")
    p.add_argument("--block", default="32x128x128")
    p.add_argument("--overlap", default="4x16x16")
    p.add_argument("--decoder", default="watershed", choices=["watershed", "embedding"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--scheduler", default="threads")
    p.add_argument(
        "--workers", type=int, nargs="+", default=[1],
        help="dask workers (threads/processes: the first value); with --cluster, each count",
    )  # fmt: skip
    p.add_argument(
        "--cluster", action="store_true",
        help="dask.distributed mode: 1 vs N worker processes on the first --sizes volume "
        "(e.g. --workers 1 2), then the --big volume within --memory-limit per worker",
    )  # fmt: skip
    p.add_argument("--memory-limit", default="768MiB", help="worker memory limit (--cluster)")
    p.add_argument("--big", default="64x1024x1024", help="volume of the memory run (--cluster)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument(
        "--decoders",
        nargs="*",
        default=None,
        metavar="NAME",
        help="decoder-cost mode: time each registered decoder (all when no NAME is given) on "
        "the same outputs of one volume (--decoder-size), next to the seeded watershed",
    )
    p.add_argument("--decoder-size", default="32x128x128", help="volume of the decoder-cost mode")
    args = p.parse_args(argv)
    if args.decoders is not None:
        return decoder_costs(args)
    if args.cluster:
        return cluster_scaling(args)
    import torch

    from neurons.data import make_synthetic_volume
    from neurons.io import open_volume, write_volume
    from neurons.models import build_model
    from neurons.train.inference import (
        DecodeConfig,
        Predictor,
        SlidingWindow,
        idle_cpu_threads,
        load_model,
        segment_blockwise,
    )

    threads = args.threads or idle_cpu_threads()
    torch.set_num_threads(threads)
    dims = lambda s: tuple(int(v) for v in s.split("x"))  # noqa: E731
    if args.checkpoint:
        model, _ = load_model(args.checkpoint, args.device)
    else:
        torch.manual_seed(0)
        model = build_model("vista3d", preset=args.preset).eval().to(args.device)
    sw = SlidingWindow(
        window=dims(args.window), overlap=0.25, batch_size=args.batch_size, device=args.device
    )
    dec = DecodeConfig(method=args.decoder, min_size=20)
    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    print(
        f"device {args.device}, torch threads {threads}, scheduler {args.scheduler} x {args.workers[0]}, "
        f"window {sw.window}, block {dims(args.block)}, halo {dims(args.overlap)}, decoder {args.decoder}"
    )
    print()
    print(
        "| volume | voxels | blocks | time (s) | voxels/s | blocks phase | match | relabel/write |"
    )
    print("|---|---|---|---|---|---|---|---|")
    # warm-up (first-call costs: imports, allocator, kernels)
    segment_blockwise(
        Predictor(model=model),
        np.zeros((16, 64, 64), np.uint8),
        sw,
        dec,
        block_size=(16, 64, 64),
        scheduler="sync",
    )
    xs, ts = [], []
    for size in args.sizes:
        shape = dims(size)
        vol = make_synthetic_volume(shape, seed=1)
        src = tmp / f"raw_{size}.h5"
        write_volume(f"{src}:raw", vol["raw"])
        del vol
        with open_volume(src, "raw") as raw:
            t0 = time.perf_counter()
            res = segment_blockwise(
                Predictor(model=model),
                raw,
                sw,
                dec,
                block_size=dims(args.block),
                overlap=dims(args.overlap),
                output=tmp / f"seg_{size}.h5",
                scheduler=args.scheduler,
                num_workers=args.workers[0],
            )
            dt = time.perf_counter() - t0
        n = int(np.prod(shape))
        xs.append(n)
        ts.append(dt)
        t = res.timings
        print(
            f"| {size} | {n / 1e6:.2f} M | {res.num_blocks} | {dt:.1f} | {n / dt / 1e3:.0f} k | "
            f"{t.get('blocks', 0):.1f} | {t.get('match', 0):.2f} | {t.get('relabel', 0):.2f} |",
            flush=True,
        )
        for f in (src, tmp / f"seg_{size}.h5"):
            f.unlink(missing_ok=True)
    if len(xs) >= 2:
        x, y = np.asarray(xs, float), np.asarray(ts, float)
        b, a = np.polyfit(x, y, 1)
        r2 = 1 - np.sum((y - (a + b * x)) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-12)
        print()
        print(
            f"linear fit: time = {a:.2f} s + {b * 1e6:.3f} s per Mvoxel (R^2 = {r2:.4f}); "
            f"time ratio largest/smallest {y[-1] / y[0]:.2f} for voxel ratio {x[-1] / x[0]:.2f}"
        )
        # Border blocks read less halo/window context than interior ones, so small volumes are
        # cheaper per voxel; the cost of each *added* Mvoxel is what must stay constant.
        marg = np.diff(y) / np.diff(x) * 1e6
        print(
            "marginal cost between consecutive sizes (s per added Mvoxel): "
            + ", ".join(f"{m:.2f}" for m in marg)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
