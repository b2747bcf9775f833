#!/usr/bin/env python
"""Training throughput (optimizer steps/s and samples/s) of a config, default ``synthetic`` on CPU.

Runs ``--steps`` training steps (after ``--warmup`` untimed ones) with validation, logging and
checkpointing off, and prints one line per measured setting. Data loading, forward, loss,
backward and the optimizer step are all inside the timed interval. Each line also gives the
share of that time the training process spent computing training targets (geometry / skeleton
targets, instance weights; in the loss or, with ``data.num_workers=0``, in the data pipeline):
with workers, the pipeline's targets run beside the training step.

Examples
--------
    python scripts/bench_train.py                          # synthetic default, CPU
    python scripts/bench_train.py --steps 50 --modes automatic
    python scripts/bench_train.py --accelerator gpu --override data.batch_size=8
    python scripts/bench_train.py --config snemi3d --modes automatic \
        --override data.root=data/snemi3d --override model.preset=tiny
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("WANDB_MODE", "disabled")


class TargetTimer:
    """Wall time spent computing training targets in this process (loss and data pipeline).

    Wraps the target functions of :mod:`neurons.losses.targets` (geometry / skeleton targets),
    the instance-loss voxel weights and :class:`neurons.train.builders.GeometryTargets` (the
    data-pipeline step; in DataLoader workers when ``data.num_workers > 0``, so not in this
    process). Nested calls are counted once.
    """

    def __init__(self) -> None:
        self.loss_s = 0.0
        self.pipeline_s = 0.0
        self._depth = 0
        self._patched: list[tuple[object, str, object]] = []

    def _wrap(self, owner: object, name: str, bucket: str) -> None:
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                setattr(self, bucket, getattr(self, bucket) + time.perf_counter() - t0)

        self._patched.append((owner, name, fn))
        setattr(owner, name, timed)

    def __enter__(self) -> TargetTimer:
        from neurons.losses import targets, vista
        from neurons.train import builders

        self._wrap(builders.GeometryTargets, "__call__", "pipeline_s")
        for name in ("geometry_targets", "skeleton_targets"):
            self._wrap(targets, name, "loss_s")
        self._wrap(vista, "instance_weights", "loss_s")
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, fn in reversed(self._patched):
            setattr(owner, name, fn)

    @property
    def total_s(self) -> float:
        return self.loss_s + self.pipeline_s


def pipeline_cost(datamodule, n: int = 3) -> float:
    """Seconds per training item the data pipeline spends on targets (timed here, n items)."""
    ds = datamodule.train_set
    timer = TargetTimer()
    with timer:
        for i in range(n):
            ds[10_000 + i]
    return timer.pipeline_s / n


def measure(config: str, overrides: list[str], steps: int, warmup: int) -> dict:
    import lightning.pytorch as pl
    import torch

    from neurons.train import ThroughputMeter, compose_config, run_training

    timer = TargetTimer()
    marks: dict[str, float] = {}

    class TargetShare(pl.Callback):
        """Target time during the timed steps only (after the meter's warmup)."""

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            if batch_idx + 1 == warmup:
                marks["start"] = timer.total_s
            marks["end"] = timer.total_s

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
        with timer:
            result = run_training(cfg, extra_callbacks=[meter, TargetShare()])
        wall = time.perf_counter() - t0
    targets_s = marks.get("end", 0.0) - marks.get("start", 0.0)
    per_sample = pipeline_cost(result.datamodule)
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
        "workers": cfg.data.num_workers,
        "pipeline_s_per_sample": per_sample,
        "targets_share": targets_s / meter.seconds if meter.seconds else float("nan"),
        "targets_s_per_step": targets_s / meter.steps if meter.steps else float("nan"),
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
                f"({r['steps']} timed steps, run {r['wall_s']:.1f} s); targets "
                f"{100 * r['targets_share']:.0f}% of the step time in the training process "
                f"({r['targets_s_per_step']:.2f} s/step, {r['workers']} data workers; the "
                f"pipeline's targets cost {r['pipeline_s_per_sample']:.2f} s/sample)",
                flush=True,
            )


if __name__ == "__main__":
    main()
