"""Learning quality on real EM: Vista2D decoders vs a classical watershed baseline on ISBI 2012.

Protocol (one run, one machine, CPU):

* data: the ISBI 2012 training stack (30 ssTEM sections, 512 x 512, 4 x 4 x 50 nm); labels
  255 = cell interior, 0 = membrane. Ground-truth instances = connected components (4-connected)
  of the interior in each section.
* split: sections 0-19 train (model weights and every tuned parameter), sections 20-29 test.
  No validation and no calibration on the test sections during training (the last checkpoint is
  used; ``calibration.enabled=false`` because the data config's held-out split *is* the test set).
* learned: ONE Vista2D checkpoint (``configs/isbi2012.yaml`` with CPU-sized overrides, semantic +
  instance-embedding + affinity heads all trained, ``loss.weight_affinity=1``) trained for
  ``--minutes`` minutes. Test sections are predicted with the sliding window of
  ``neurons.train.inference`` and decoded by every registered decoder of
  ``neurons.train.inference.decoders``: mutex watershed and waterz agglomeration of the predicted
  affinities, the repaired embedding decoder (embedding distances -> affinities -> mutex
  watershed) and the seeded watershed of P(neuron), all with ``semantic_mode="dense"``. Each
  decoder's parameters (its registry ``search_space``, via
  ``neurons.train.calibration.search_decoders``: the defaults first, then up to ``--budget``
  grid points) are tuned on evenly spaced sections of 0-19 only (``--tune-sections``).
* baseline: Gaussian-smoothed intensity -> seeded watershed (seeds = components of the smoothed
  image above a threshold, flooding ``1 - smoothed``); sigma and threshold tuned on sections 0-19.
* scores per test section, then averaged: adapted Rand error (CREMI convention, gt background
  ignored), VOI split = H(pred|gt) and VOI merge = H(gt|pred) (bits), from ``neurons.metrics``.
  Tuning minimises the CREMI score sqrt(ARAND * (VOI split + VOI merge)).
* reported with the table: optimizer steps reached, torch threads, and how busy the machine was
  while training (mean 1-minute load average, whole-machine CPU use, this process's CPU share).

Training settings (defaults) and why: preset ``small`` (1.9 M parameters: ``tiny`` cannot
represent membranes at 4 nm well, ``base`` manages too few steps on 2 cores), 128 x 128 patches
(room for the 27-pixel long-range affinities, 3/4 of each patch's pairs stay valid) in batches of
4 (twice the optimizer steps of batch 8 for the same pixels: on a 15-minute CPU budget more
updates beat larger batches), AdamW at lr 2e-3 after 50 warm-up steps (the highest rate that
stayed stable with gradient clipping at 1.0).

Usage::

    python scripts/bench_isbi2012.py                      # 15 minutes of training
    python scripts/bench_isbi2012.py --minutes 1 --quick  # check that it runs end to end
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = (
    Path(os.environ.get("NEURONS_SHARED_DATA", REPO.parent / "shared" / "data")) / "isbi2012"
)

#: decoder (registry name) -> table label, in column order
DECODER_ROWS = {
    "mutex_watershed": "Vista2D: mutex watershed of the affinities",
    "agglomeration": "Vista2D: waterz agglomeration of the affinities",
    "embedding": "Vista2D: embedding -> affinities -> mutex watershed",
    "watershed": "Vista2D: seeded watershed of P(neuron)",
}
#: how the decoders use the semantic output: ``dense`` = every voxel not of another class is
#: decoded as neuron (membranes included). ISBI scores ignore the ground-truth membranes (CREMI
#: ARAND convention) and the challenge expects a dense segmentation; ``classes`` (neurons only
#: inside argmax = neuron) lost on sections 0-19 for every decoder in trial runs, so it is not
#: searched (add it here to search both: twice the tuning time).
SEMANTIC_MODES = ("dense",)


def load_isbi(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Raw (30, 512, 512) uint8 and per-section instance ids (connected interior components)."""
    from skimage.measure import label

    from neurons.io import read_volume

    train = root / "train" if (root / "train").is_dir() else root
    raw = np.asarray(read_volume(train / "image"))
    lab = np.asarray(read_volume(train / "label"))
    if raw.ndim != 3 or raw.shape != lab.shape:
        raise SystemExit(
            f"{train}: expected matching image/label stacks, got {raw.shape} / {lab.shape}"
        )
    gt = np.zeros(lab.shape, dtype=np.int64)
    for z in range(lab.shape[0]):  # per section: 2-D components (one call per section)
        gt[z] = label(lab[z] > 127, background=0, connectivity=1)
    return raw, gt


def score_sections(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Mean over sections of ARAND (cremi), VOI split, VOI merge (neurons.metrics)."""
    from neurons.metrics import adapted_rand_error, variation_of_information

    rows = []
    for z in range(gt.shape[0]):
        a = adapted_rand_error(gt[z], pred[z], convention="cremi")
        v = variation_of_information(gt[z], pred[z])
        rows.append((a.error, v.split, v.merge))
    arr = np.asarray(rows, dtype=np.float64)
    out = dict(zip(("arand", "voi_split", "voi_merge"), arr.mean(0).tolist(), strict=True))
    out["voi"] = out["voi_split"] + out["voi_merge"]
    out["cremi"] = float(np.sqrt(out["arand"] * out["voi"]))
    return out


def watershed_stack(fg: np.ndarray, sigma: float, seed_threshold: float) -> np.ndarray:
    """Section-wise dense seeded watershed of an interior map (ids unique per section)."""
    from neurons.train.inference import seeded_watershed

    out = np.zeros(fg.shape, dtype=np.int64)
    for z in range(fg.shape[0]):
        out[z] = seeded_watershed(fg[z], seed_threshold=seed_threshold, sigma=sigma, mask=None)
    return out


def tune(fg: np.ndarray, gt: np.ndarray, sigmas, thresholds) -> tuple[dict, dict]:
    """Grid search of (sigma, seed_threshold) minimising the mean CREMI score on ``gt``."""
    best, best_score = None, None
    for sigma, thr in itertools.product(sigmas, thresholds):
        s = score_sections(gt, watershed_stack(fg, sigma, thr))
        if best_score is None or s["cremi"] < best_score["cremi"]:
            best, best_score = {"sigma": sigma, "seed_threshold": thr}, s
    return best, best_score


class LoadMonitor:
    """How busy the machine is while a block runs: load average and CPU use, sampled every few
    seconds from ``os.getloadavg`` and ``/proc/stat``, plus this process's CPU time.

    ``summary()`` gives ``load1`` (mean 1-minute load average), ``machine_cpu`` (fraction of all
    cores busy, any process), ``own_cpu`` (this process's CPU seconds / (wall seconds x cores)),
    and ``cores``.
    """

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _proc_stat() -> tuple[float, float] | None:
        try:
            with open("/proc/stat") as f:
                vals = [float(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)  # idle + iowait
        return sum(vals), idle

    def _sample(self) -> None:
        try:
            self.loads.append(os.getloadavg()[0])
        except OSError:  # pragma: no cover - no load average on this platform
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> LoadMonitor:
        self._t0, self._cpu0, self._stat0 = time.perf_counter(), time.process_time(), self._proc_stat()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.wall = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._cpu0
        self._stat1 = self._proc_stat()

    def summary(self) -> dict[str, float]:
        cores = os.cpu_count() or 1
        out = {
            "cores": float(cores),
            "load1": float(np.mean(self.loads)) if self.loads else float("nan"),
            "own_cpu": self.cpu / max(self.wall * cores, 1e-9),
            "machine_cpu": float("nan"),
        }
        if self._stat0 and self._stat1:
            total = self._stat1[0] - self._stat0[0]
            idle = self._stat1[1] - self._stat0[1]
            out["machine_cpu"] = (total - idle) / total if total > 0 else float("nan")
        return out


def train_model(args, root: Path, out_dir: Path) -> tuple[str, float, int]:
    """Train Vista2D on sections 0-19 for ``args.minutes`` minutes; returns the last checkpoint."""
    from neurons.train import compose_config, run_training

    seconds_budget = int(float(args.minutes) * 60)
    hh, rest = divmod(seconds_budget, 3600)
    mm, ss = divmod(rest, 60)
    overrides = [
        f"data.root={root}",
        f"data.patch_size=[{args.patch},{args.patch}]",
        f"data.batch_size={args.batch_size}",
        "data.num_workers=0",
        "data.samples_per_epoch=800",
        "+data.options.val_fraction=0.3334",  # 10 of 30 sections held out: 20-29
        "+data.options.gap=0",
        "+data.options.split=slab",
        f"model.preset={args.preset}",
        "loss.weight_geometry=0.0",
        "loss.weight_instance=1.0",  # the embedding decoder's head
        f"loss.weight_affinity={args.weight_affinity}",  # the affinity decoders' head
        "training.modes=[automatic]",
        "training.max_epochs=100000",
        f"training.max_time=00:{hh:02d}:{mm:02d}:{ss:02d}",
        "training.limit_val_batches=0",
        "training.num_sanity_val_steps=0",
        "training.accelerator=cpu",
        f"training.cpu_threads={args.threads}",
        "training.precision=32-true",
        f"training.output_dir={out_dir}",
        "calibration.enabled=false",  # its validation split is the test set here
        f"scheduler.warmup_steps={args.warmup}",
        f"optimizer.lr={args.lr}",
        "checkpoint.monitor=null",
        "checkpoint.save_top_k=0",
        "checkpoint.every_n_train_steps=100",
        "logging.progress_bar=none",
        "logging.loggers=[csv]",
        "logging.images.enabled=false",
    ]
    cfg = compose_config("isbi2012", overrides)
    t0 = time.perf_counter()
    result = run_training(cfg)
    seconds = time.perf_counter() - t0
    if result.last_checkpoint is None:
        raise SystemExit("training wrote no checkpoint")
    return result.last_checkpoint, seconds, int(result.trainer.global_step)


def predict_stack(model, cfg, raw: np.ndarray, device: str) -> list[dict[str, np.ndarray]]:
    """Blended, activated sliding-window outputs of a 2-D model, one dict per section."""
    from dataclasses import replace

    from neurons.train.inference import predict_volume, settings_from_config

    sw = replace(settings_from_config(cfg, 2).window, device=device, batch_size=4)
    return [predict_volume(model, raw[z], sw) for z in range(raw.shape[0])]


def tune_decoder(name, samples, offsets, budget, time_limit):
    """Best (semantic_mode, params, train score) of one decoder on the tuning sections."""
    from neurons.train.calibration import CalibrationError, search_decoders

    best = None
    for mode in SEMANTIC_MODES:
        try:
            res = search_decoders(
                samples,
                decoders=[name],
                metric="cremi",
                budget=budget,
                time_limit=time_limit,
                offsets=offsets,
                semantic_mode=mode,
            )
        except CalibrationError as exc:
            print(f"  {name} ({mode}): {exc}")
            continue
        if best is None or res.score < best[2]:
            best = (mode, dict(res.params), float(res.score))
    return best


def decode_stack(outs, name, params, offsets, mode) -> np.ndarray:
    from neurons.train.inference.decoders import decode

    return np.stack(
        [
            decode(o, name, params, offsets=offsets, semantic_mode=mode).astype(np.int64)
            for o in outs
        ]
    )


def _fmt(params) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def infer_defaults_column(
    ckpt, raw_test, gt_test, samples, offsets, budget, time_limit, out_dir: Path, device: str
) -> tuple[dict[str, float], dict]:
    """The "neurons-infer defaults" column: what a user gets from the CLI with no decoder flags.

    Decoding is calibrated exactly as training does it (every registered decoder, the semantic
    mode ``neurons-infer`` uses), but on the tuning sections 0-19 (the run's own validation split
    is the test set here); the result is stored next to a *copy* of the checkpoint, then
    ``neurons-infer`` runs on sections 20-29 without decoder flags and its output is scored.
    """
    import shutil

    from neurons.io import read_volume, write_volume
    from neurons.train.calibration import search_decoders, write_sidecar
    from neurons.train.inference.cli import main as infer_main

    work = out_dir / "infer_defaults"
    work.mkdir(parents=True, exist_ok=True)
    ck = work / "model.ckpt"  # never write next to a checkpoint the user named
    shutil.copyfile(ckpt, ck)
    cal = search_decoders(
        samples,
        budget=budget,
        time_limit=time_limit,
        offsets=offsets,
        semantic_modes=("classes", "dense"),  # as the decoder columns; neurons-infer applies it
    )
    write_sidecar(ck, cal)
    print(f"neurons-infer defaults: calibrated on sections 0-19: {cal.summary()}")
    write_volume(f"{work / 'test.h5'}:raw", raw_test)
    argv = [str(ck), f"{work / 'test.h5'}:raw", str(work / "seg.h5"), "--quiet", "--no-previews"]
    if infer_main([*argv, "--device", device]) != 0:
        raise SystemExit("neurons-infer failed on the test sections")
    seg = read_volume(f"{work / 'seg.h5'}:segmentation").astype(np.int64)
    return score_sections(gt_test, seg), {"decoder": cal.decoder, **cal.params}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--root",
        type=Path,
        default=DEFAULT_ROOT,
        help="ISBI 2012 folder (train/image, train/label)",
    )
    p.add_argument("--minutes", type=float, default=15.0, help="training time budget")
    p.add_argument("--preset", default="small", help="Vista2D preset")
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50, help="warm-up optimizer steps")
    p.add_argument("--weight-affinity", type=float, default=1.0)
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: idle cores)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default=None, help="skip training and use this checkpoint")
    p.add_argument("--out", type=Path, default=None, help="working folder (default: a temp folder)")
    p.add_argument("--quick", action="store_true", help="coarser tuning (a quick look)")
    p.add_argument(
        "--tune-sections",
        type=int,
        default=None,
        help="sections of 0-19 (evenly spaced) the decoders are tuned on (default 6, quick 3)",
    )
    p.add_argument(
        "--budget", type=int, default=None, help="parameter sets per decoder (default 16, quick 4)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    import torch

    from neurons.train.inference import idle_cpu_threads

    args.threads = args.threads or idle_cpu_threads()
    torch.set_num_threads(args.threads)
    if not (args.root / "train" / "image").is_dir() and not (args.root / "image").is_dir():
        print(
            f"ISBI 2012 data not found under {args.root} (python scripts/download_isbi2012.py)",
            file=sys.stderr,
        )
        return 2
    n_tune = args.tune_sections or (3 if args.quick else 6)
    budget = args.budget or (4 if args.quick else 16)
    time_limit = 60.0 if args.quick else 300.0  # seconds per decoder, then no new parameter set
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench_isbi2012_"))
    raw, gt = load_isbi(args.root)
    train_sl, test_sl = slice(0, 20), slice(20, 30)
    tune_z = np.unique(np.linspace(0, 19, max(1, min(n_tune, 20))).round().astype(int)).tolist()
    print(
        f"ISBI 2012: {raw.shape} sections; train 0-19, test 20-29; torch threads {args.threads}; "
        f"decoders tuned on sections {tune_z}"
    )

    # --- classical baseline: tuned on 0-19 --------------------------------------------------
    t0 = time.perf_counter()
    img = raw.astype(np.float32) / 255.0
    sigmas = (1.0, 2.0, 3.0) if args.quick else (1.0, 1.5, 2.0, 3.0, 4.0)
    thr = np.round(np.arange(0.3, 0.86, 0.1 if args.quick else 0.05), 3).tolist()
    base_params, base_train = tune(img[train_sl], gt[train_sl], sigmas, thr)
    base_test = score_sections(gt[test_sl], watershed_stack(img[test_sl], **base_params))
    t_base = time.perf_counter() - t0
    print(
        f"baseline tuned in {t_base:.0f} s: {base_params} (train CREMI {base_train['cremi']:.4f})"
    )

    # --- learned model: one checkpoint, every decoder ---------------------------------------
    load = None
    if args.checkpoint:
        ckpt, t_train, steps = args.checkpoint, float("nan"), -1
    else:
        with LoadMonitor() as mon:
            ckpt, t_train, steps = train_model(args, args.root, out_dir / "train")
        load = mon.summary()
        print(
            f"trained {steps} optimizer steps in {t_train / 60:.1f} min -> {ckpt}; machine during "
            f"training: load average {load['load1']:.2f} on {load['cores']:.0f} cores, "
            f"{100 * load['machine_cpu']:.0f}% of all CPU busy, this process "
            f"{100 * load['own_cpu']:.0f}%"
        )
    from neurons.train.calibration import ValidationSample, model_offsets
    from neurons.train.inference import load_model

    model, cfg = load_model(ckpt, args.device)
    offsets = model_offsets(model, cfg)
    t0 = time.perf_counter()
    tune_outs = predict_stack(model, cfg, raw[tune_z], args.device)
    test_outs = predict_stack(model, cfg, raw[test_sl], args.device)
    t_pred = time.perf_counter() - t0
    samples = [
        ValidationSample(f"isbi2012 z={z}", o, gt[z]) for z, o in zip(tune_z, tune_outs, strict=True)
    ]
    rows = [("baseline: smoothed intensity + seeded watershed", base_test, _fmt(base_params))]
    for name, label in DECODER_ROWS.items():
        t0 = time.perf_counter()
        best = tune_decoder(name, samples, offsets, budget, time_limit)
        if best is None:
            print(f"{name}: no parameter set could be tuned (see above); column left out")
            continue
        mode, params, train_score = best
        s = score_sections(gt[test_sl], decode_stack(test_outs, name, params, offsets, mode))
        spent = time.perf_counter() - t0
        print(f"{name}: tuned + tested in {spent:.0f} s (train CREMI {train_score:.4f})")
        rows.append((label, s, f"semantic_mode={mode}, {_fmt(params)}"))
    t0 = time.perf_counter()
    s, params = infer_defaults_column(
        ckpt, raw[test_sl], gt[test_sl], samples, offsets, budget, time_limit, out_dir, args.device
    )
    print(f"neurons-infer defaults: calibrated + run in {time.perf_counter() - t0:.0f} s")
    rows.append(("neurons-infer defaults (no decoder flags, calibrated on 0-19)", s, _fmt(params)))

    print()
    busy = (
        f"machine during training: load average {load['load1']:.2f} on {load['cores']:.0f} "
        f"cores, {100 * load['machine_cpu']:.0f}% of all CPU busy, this process "
        f"{100 * load['own_cpu']:.0f}%"
        if load
        else "given checkpoint (no training in this run)"
    )
    print(
        f"ISBI 2012, test sections 20-29 (mean of 10 sections; lower is better). Training: "
        f"{steps} optimizer steps, {t_train / 60:.1f} min on CPU ({args.threads} thread(s)), "
        f"preset {args.preset}, patches {args.patch}^2 x {args.batch_size}, lr {args.lr}; "
        f"{busy}; inference {t_pred:.0f} s."
    )
    print()
    print("| method | ARAND (cremi) | VOI split | VOI merge | VOI total | tuned on 0-19 |")
    print("|---|---|---|---|---|---|")
    for name, s, params in rows:
        print(
            f"| {name} | {s['arand']:.4f} | {s['voi_split']:.3f} | {s['voi_merge']:.3f} | "
            f"{s['voi']:.3f} | {params} |"
        )
    learned = rows[1:]
    verdict = 1
    if learned:
        best = min(learned, key=lambda r: r[1]["cremi"])
        beats = best[1]["arand"] < base_test["arand"] and best[1]["voi"] < base_test["voi"]
        every = all(
            r[1]["arand"] < base_test["arand"] and r[1]["voi"] < base_test["voi"] for r in learned
        )
        print()
        print(f"best: {best[0]} (ARAND {best[1]['arand']:.4f})")
        print(f"best learned beats the baseline on ARAND and VOI: {'YES' if beats else 'NO'}")
        print(f"every learned decoder beats the baseline: {'YES' if every else 'NO'}")
        verdict = 0 if beats else 1
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": [{"method": n, **s, "params": pr} for n, s, pr in rows],
                    "train_minutes": t_train / 60,
                    "steps": steps,
                    "threads": args.threads,
                    "load": load,
                    "tune_sections": tune_z,
                    "settings": {
                        "preset": args.preset,
                        "patch": args.patch,
                        "batch_size": args.batch_size,
                        "lr": args.lr,
                    },
                },
                indent=2,
                default=str,
            )
        )
    return verdict


if __name__ == "__main__":
    sys.exit(main())
