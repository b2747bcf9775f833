#!/usr/bin/env python
"""Training throughput (optimizer steps/s and samples/s) of a config, default ``synthetic`` on CPU.

Runs ``--steps`` training steps (after ``--warmup`` untimed ones) with validation, logging and
checkpointing off, and prints one line per measured setting. Data loading, forward, loss,
backward and the optimizer step are all inside the timed interval.

Examples
--------
    python scripts/bench_train.py                          # synthetic default, CPU
    python scripts/bench_train.py --steps 50 --modes automatic
    python scripts/bench_train.py --accelerator gpu --override data.batch_size=8
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("WANDB_MODE", "disabled")


def measure(config: str, overrides: list[str], steps: int, warmup: int) -> dict:
    import torch

    from neurons.train import ThroughputMeter, compose_config, run_training

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config(
            config,
            [
                f"training.output_dir={out}",
                f"training.max_steps={steps + warmup}",
                "training.limit_val_batches=0",
                "training.num_sanity_val_steps=0",
                "checkpoint.enabled=false",
                "logging.loggers=[]",
                "logging.progress_bar=none",
                "logging.model_summary=false",
                f"data.samples_per_epoch={max(64, 2 * (steps + warmup))}",
                *overrides,
            ],
        )
        meter = ThroughputMeter(warmup=warmup)
        t0 = time.perf_counter()
        result = run_training(cfg, extra_callbacks=[meter])
        wall = time.perf_counter() - t0
    return {
        "config": config,
        "overrides": overrides,
        "modes": list(cfg.training.modes),
        "patch": list(cfg.data.patch_size),
        "batch": cfg.data.batch_size,
        "model": f"{cfg.model.name}/{cfg.model.preset}",
        "device": str(result.module.device),
        "threads": torch.get_num_threads(),
        "steps": meter.steps,
        "steps_per_s": meter.steps_per_s,
        "samples_per_s": meter.samples_per_s,
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default="synthetic")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument(
        "--modes",
        nargs="+",
        default=None,
        help="training modes to measure separately (default: the config's, then automatic)",
    )
    ap.add_argument("--override", action="append", default=[], help="extra Hydra override")
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="torch CPU threads to measure, e.g. --threads 1 2 (default: torch's default)",
    )
    args = ap.parse_args()

    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# bench_train: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"load average {load:.1f} before start, torch {torch.__version__}, "
        f"default {torch.get_num_threads()} threads"
    )
    settings = [[]] if args.modes is None else [[f"training.modes=[{m}]"] for m in args.modes]
    if args.modes is None:
        settings.append(["training.modes=[automatic]"])
    threads = args.threads or [torch.get_num_threads()]
    for n in threads:
        for extra in settings:
            r = measure(
                args.config,
                [
                    f"training.accelerator={args.accelerator}",
                    f"training.cpu_threads={n}",
                    *args.override,
                    *extra,
                ],
                args.steps,
                args.warmup,
            )
            print(
                f"{r['config']:10s} modes={'+'.join(r['modes']):20s} model={r['model']:14s} "
                f"patch={r['patch']} batch={r['batch']} threads={r['threads']} "
                f"device={r['device']}: {r['steps_per_s']:.2f} steps/s, "
                f"{r['samples_per_s']:.2f} samples/s "
                f"({r['steps']} timed steps, run {r['wall_s']:.1f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
