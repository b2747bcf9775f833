#!/usr/bin/env python
"""Benchmark neurons.models presets: parameters, forward+backward time, peak memory.

Each (model, preset) runs in a fresh spawned process so that peak-memory numbers do not leak
between configurations. On CPU the peak is the growth of the process's peak resident set size
(``ru_maxrss``) during forward+backward (activations + gradients), on CUDA
``torch.cuda.max_memory_allocated``.

Examples
--------
python scripts/bench_models.py                       # tiny/small/base, CPU (+ CUDA if present)
python scripts/bench_models.py --presets tiny --repeats 5
python scripts/bench_models.py --presets all --json bench.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time


def _rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def _run_one(spec: dict, queue) -> None:
    try:
        import torch

        from neurons.models import build_model

        if spec["threads"]:
            torch.set_num_threads(spec["threads"])
        device = torch.device(spec["device"])
        torch.manual_seed(0)
        model = build_model(spec["name"], preset=spec["preset"]).to(device).train()
        n_params = sum(p.numel() for p in model.parameters())
        shape = spec["size3d"] if model.spatial_dims == 3 else spec["size2d"]
        x = torch.rand(spec["batch"], model.in_channels, *shape, device=device)
        amp = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if spec["bf16"]
            else torch.autocast(device.type, enabled=False)
        )

        def step() -> None:
            with amp:
                out = model(x)
                loss = sum(v.float().mean() for v in out.values())
            loss.backward()
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()

        base_rss = _rss_mib()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step()  # warm-up (allocator, cuDNN/oneDNN algorithm selection)
        times = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = _rss_mib() - base_rss
        times.sort()
        queue.put(
            dict(
                model=spec["name"],
                preset=spec["preset"],
                device=spec["device"],
                input=f"{spec['batch']}x{model.in_channels}x" + "x".join(map(str, shape)),
                params=n_params,
                median_s=times[len(times) // 2],
                min_s=times[0],
                peak_mib=peak,
            )
        )
    except Exception as exc:  # report, keep benchmarking the other presets
        queue.put(
            dict(model=spec["name"], preset=spec["preset"], device=spec["device"], error=repr(exc))
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="vista3d,vista2d,segresnet3d,segresnet2d")
    parser.add_argument("--presets", default="tiny,small,base", help="comma list or 'all'")
    parser.add_argument("--devices", default="auto", help="comma list of cpu/cuda, or 'auto'")
    parser.add_argument("--size3d", default="32,64,64", help="D,H,W of the 3-D input")
    parser.add_argument("--size2d", default="256,256", help="H,W of the 2-D input")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--bf16", action="store_true", help="run under bf16 autocast")
    parser.add_argument("--json", default=None, help="also write results to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from neurons.models import list_presets

    devices = (
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        if args.devices == "auto"
        else args.devices.split(",")
    )
    specs = []
    for device in devices:
        for name in args.models.split(","):
            presets = list_presets(name) if args.presets == "all" else args.presets.split(",")
            for preset in presets:
                specs.append(
                    dict(
                        name=name,
                        preset=preset,
                        device=device,
                        size3d=tuple(int(s) for s in args.size3d.split(",")),
                        size2d=tuple(int(s) for s in args.size2d.split(",")),
                        batch=args.batch,
                        repeats=args.repeats,
                        threads=args.threads,
                        bf16=args.bf16,
                    )
                )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {args.threads or torch.get_num_threads()}, "
        f"load avg {load}, bf16={args.bf16}, fwd+bwd of sum of output means, {args.repeats} timed runs"
    )
    header = "| model | preset | device | input | params | fwd+bwd median (s) | min (s) | peak mem (MiB) |"
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    ctx = mp.get_context("spawn")
    results = []
    for spec in specs:
        queue = ctx.Queue()
        proc = ctx.Process(target=_run_one, args=(spec, queue))
        proc.start()
        proc.join()
        res = (
            queue.get()
            if not queue.empty()
            else dict(
                model=spec["name"],
                preset=spec["preset"],
                device=spec["device"],
                error=f"worker exited with code {proc.exitcode}",
            )
        )
        queue.close()
        queue.join_thread()
        results.append(res)
        if "error" in res:
            print(f"| {res['model']} | {res['preset']} | {res['device']} | ERROR: {res['error']} |")
        else:
            print(
                f"| {res['model']} | {res['preset']} | {res['device']} | {res['input']} | "
                f"{res['params']:,} | {res['median_s']:.3f} | {res['min_s']:.3f} | {res['peak_mib']:.0f} |",
                flush=True,
            )
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"load_avg": load, "results": results}, fh, indent=2)
        os.replace(tmp, args.json)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
