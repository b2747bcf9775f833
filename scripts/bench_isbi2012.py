"""Learning quality on real EM: Vista2D vs a classical watershed baseline on ISBI 2012.

Protocol (one run, one machine, CPU):

* data: the ISBI 2012 training stack (30 ssTEM sections, 512 x 512, 4 x 4 x 50 nm); labels
  255 = cell interior, 0 = membrane. Ground-truth instances = connected components (4-connected)
  of the interior in each section.
* split: sections 0-19 train (model weights and every tuned parameter), sections 20-29 test.
  No validation on the test sections during training (the last checkpoint is used).
* learned: Vista2D (``configs/isbi2012.yaml`` with CPU-sized overrides) trained for
  ``--minutes`` minutes; test sections segmented with ``neurons.train.inference`` (sliding
  window, block-wise) and decoded by (a) seeded watershed of the predicted neuron probability and
  (b) mean-shift of the instance embedding. Decoder thresholds are tuned on sections 0-19.
* baseline: Gaussian-smoothed intensity -> seeded watershed (seeds = components of the smoothed
  image above a threshold, flooding ``1 - smoothed``); sigma and threshold tuned on sections 0-19.
* scores per test section, then averaged: adapted Rand error (CREMI convention, gt background
  ignored), VOI split = H(pred|gt) and VOI merge = H(gt|pred) (bits), from ``neurons.metrics``.
  Tuning minimises the CREMI score sqrt(ARAND * (VOI split + VOI merge)).

Usage::

    python scripts/bench_isbi2012.py                     # 15 minutes of training
    python scripts/bench_isbi2012.py --minutes 2 --quick # a fast look
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = (
    Path(os.environ.get("NEURONS_SHARED_DATA", REPO.parent / "shared" / "data")) / "isbi2012"
)


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


def train_model(args, root: Path, out_dir: Path) -> tuple[str, float, int]:
    """Train Vista2D on sections 0-19 for ``args.minutes`` minutes; returns the last checkpoint."""
    from neurons.train import compose_config, run_training

    minutes = float(args.minutes)
    hh, mm = divmod(int(minutes * 60), 3600)
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
        "training.modes=[automatic]",
        "training.max_epochs=100000",
        f"training.max_time=00:{hh:02d}:{mm // 60:02d}:{mm % 60:02d}",
        "training.limit_val_batches=0",
        "training.num_sanity_val_steps=0",
        "training.accelerator=cpu",
        f"training.cpu_threads={args.threads}",
        "training.precision=32-true",
        f"training.output_dir={out_dir}",
        "scheduler.warmup_steps=50",
        "optimizer.lr=2e-3",
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


def predict_stack(checkpoint: str, raw: np.ndarray, device: str) -> dict[str, np.ndarray]:
    """Blended sliding-window outputs of a 2-D checkpoint on every section (semantic, embedding)."""
    from dataclasses import replace

    from neurons.train.inference import load_model, predict_volume, settings_from_config

    model, cfg = load_model(checkpoint, device)
    sw = replace(settings_from_config(cfg, 2).window, device=device, batch_size=4)
    outs = [predict_volume(model, raw[z], sw) for z in range(raw.shape[0])]
    return {k: np.stack([o[k] for o in outs], axis=1) for k in outs[0]}


def embedding_stack(out: dict[str, np.ndarray], bandwidth: float) -> np.ndarray:
    from neurons.train.inference import DecodeConfig, decode_instances

    ins, _ = decode_instances(
        out, DecodeConfig(method="embedding", bandwidth=bandwidth, min_size=20, planewise=True)
    )
    return ins.astype(np.int64)


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
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: idle cores)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default=None, help="skip training and use this checkpoint")
    p.add_argument("--out", type=Path, default=None, help="working folder (default: a temp folder)")
    p.add_argument("--quick", action="store_true", help="coarser tuning grids")
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
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench_isbi2012_"))
    raw, gt = load_isbi(args.root)
    train_sl, test_sl = slice(0, 20), slice(20, 30)
    print(f"ISBI 2012: {raw.shape} sections; train 0-19, test 20-29; torch threads {args.threads}")

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

    # --- learned model ---------------------------------------------------------------------
    if args.checkpoint:
        ckpt, t_train, steps = args.checkpoint, float("nan"), -1
    else:
        ckpt, t_train, steps = train_model(args, args.root, out_dir / "train")
        print(f"trained {steps} steps in {t_train / 60:.1f} min -> {ckpt}")
    t0 = time.perf_counter()
    pred_train = predict_stack(ckpt, raw[train_sl], args.device)
    pred_test = predict_stack(ckpt, raw[test_sl], args.device)
    t_pred = time.perf_counter() - t0
    fg_train = pred_train["semantic"][1]  # P(neuron interior)
    fg_test = pred_test["semantic"][1]
    ws_params, ws_train = tune(
        fg_train,
        gt[train_sl],
        (0.0, 1.0, 2.0),
        np.round(np.arange(0.3, 0.96, 0.15 if args.quick else 0.05), 3).tolist(),
    )
    ws_test = score_sections(gt[test_sl], watershed_stack(fg_test, **ws_params))
    rows = [
        ("baseline: smoothed intensity + seeded watershed", base_test, base_params),
        ("Vista2D: seeded watershed of P(neuron)", ws_test, ws_params),
    ]
    if "instance" in pred_test:
        best_bw, best_s = None, None
        for bw in (0.5, 0.75, 1.0, 1.5, 2.0):
            s = score_sections(
                gt[train_sl][:5], embedding_stack({k: v[:, :5] for k, v in pred_train.items()}, bw)
            )
            if best_s is None or s["cremi"] < best_s["cremi"]:
                best_bw, best_s = bw, s
        emb_test = score_sections(gt[test_sl], embedding_stack(pred_test, best_bw))
        rows.append(
            ("Vista2D: mean-shift of the instance embedding", emb_test, {"bandwidth": best_bw})
        )

    print()
    print(
        f"ISBI 2012, test sections 20-29 (mean of 10 sections; lower is better). Training: "
        f"{steps} steps, {t_train / 60:.1f} min on CPU ({args.threads} thread(s)), preset "
        f"{args.preset}, patches {args.patch}^2 x {args.batch_size}; inference {t_pred:.0f} s."
    )
    print()
    print("| method | ARAND (cremi) | VOI split | VOI merge | VOI total | tuned on 0-19 |")
    print("|---|---|---|---|---|---|")
    for name, s, params in rows:
        print(
            f"| {name} | {s['arand']:.4f} | {s['voi_split']:.3f} | {s['voi_merge']:.3f} | "
            f"{s['voi']:.3f} | {params} |"
        )
    best = min(rows[1:], key=lambda r: r[1]["cremi"])
    beats = best[1]["arand"] < base_test["arand"] and best[1]["voi"] < base_test["voi"]
    print()
    print(f"learned ({best[0]}) beats the baseline on ARAND and VOI: {'YES' if beats else 'NO'}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": [{"method": n, **s, "params": pr} for n, s, pr in rows],
                    "train_minutes": t_train / 60,
                    "steps": steps,
                    "threads": args.threads,
                    "beats": beats,
                },
                indent=2,
                default=str,
            )
        )
    return 0 if beats else 1


if __name__ == "__main__":
    sys.exit(main())
