"""``neurons-tune CKPT [overrides...]``: calibrate decoding of a checkpoint on its validation split.

Examples::

    neurons-tune outputs/synthetic/checkpoints/last.ckpt
    neurons-tune last.ckpt data.root=/data/snemi3d --metric voi --decoders mutex_watershed watershed
    neurons-tune last.ckpt --metric ap75 --embed        # write into the checkpoint itself

By default the result goes to ``CKPT.calibration.json`` (the checkpoint is not modified);
``neurons-infer CKPT ...`` then uses the winning decoder when given no decoder flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["apply_overrides", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``neurons-tune`` argument parser."""
    from .objective import OBJECTIVES

    p = argparse.ArgumentParser(
        prog="neurons-tune",
        description=(
            "Predict the validation split of the checkpoint's own data config (never test data), "
            "search every decoder's parameters for the best validation score and store the "
            "winner with the checkpoint; neurons-infer uses it when given no decoder flags."
        ),
    )
    p.add_argument("checkpoint", help="checkpoint written by neurons-train (.ckpt)")
    p.add_argument(
        "overrides",
        nargs="*",
        help="config overrides applied to the checkpoint's config (e.g. data.root=/new/place)",
    )
    p.add_argument(
        "--metric",
        default="cremi",
        choices=sorted(OBJECTIVES),
        help="objective (default cremi: sqrt(arand * voi); ap* and ari/ami/pq are maximised)",
    )
    p.add_argument("--decoders", nargs="+", default=None, help="decoders to consider (default all)")
    p.add_argument("--budget", type=int, default=24, help="parameter sets tried per decoder")
    p.add_argument(
        "--semantic-modes",
        nargs="+",
        default=None,
        choices=["classes", "dense"],
        help="also search how the semantic output is used (default: classes only)",
    )
    p.add_argument(
        "--time-limit", type=float, default=None, help="seconds per decoder (no new trial after)"
    )
    p.add_argument(
        "--max-voxels", type=int, default=2_000_000, help="validation voxels predicted (budget)"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--embed", action="store_true", help="write into CKPT itself (atomic) instead of a JSON"
    )
    where.add_argument(
        "--output", default=None, help="JSON file to write (default CKPT.calibration.json)"
    )
    where.add_argument("--dry-run", action="store_true", help="print the result, write nothing")
    return p


def apply_overrides(cfg: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``cfg`` with ``a.b=value`` overrides applied and validated (names the bad key).

    Examples
    --------
    >>> apply_overrides({"data": {"val_patches": 8}}, ["data.val_patches=2"])["data"]["val_patches"]
    2
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from neurons.train.config import to_plain_dict, validate_config
    from neurons.train.errors import ConfigError

    if not overrides:
        return dict(cfg)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r}: expected key=value (e.g. data.root=/data)")
    try:
        merged = OmegaConf.merge(
            OmegaConf.create(dict(cfg)), OmegaConf.from_dotlist([o.lstrip("+") for o in overrides])
        )
    except OmegaConfBaseException as exc:
        raise ConfigError(f"overrides {list(overrides)}: {exc}") from exc
    if not {"data", "model"} <= set(cfg):  # a partial config (tests): no schema to check
        return to_plain_dict(merged)
    return to_plain_dict(validate_config(merged))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``neurons-tune``; returns the exit status (2 on a user error)."""
    args = build_parser().parse_args(argv)
    from neurons.data.errors import DataError
    from neurons.io import VolumeError
    from neurons.train.errors import TrainError
    from neurons.train.inference.errors import InferenceError

    from .api import calibrate
    from .storage import write_sidecar

    try:
        if args.budget < 1:
            from .errors import CalibrationError

            raise CalibrationError(f"--budget {args.budget}: expected >= 1")
        device = args.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        cfg = None
        if args.overrides:
            from neurons.train.inference import load_model

            _, ck_cfg = load_model(args.checkpoint, "cpu")
            cfg = apply_overrides(ck_cfg, args.overrides)
        result = calibrate(
            args.checkpoint,
            cfg,
            decoders=args.decoders,
            metric=args.metric,
            budget=args.budget,
            time_limit=args.time_limit,
            max_voxels=args.max_voxels,
            device=device,
            write=None,
            semantic_modes=args.semantic_modes,
        )
        written = None
        if args.embed:
            from .storage import embed_calibration

            written = embed_calibration(args.checkpoint, result)
        elif not args.dry_run:
            written = write_sidecar(args.checkpoint, result, args.output)
    except (TrainError, InferenceError, VolumeError, DataError) as exc:
        print(f"neurons-tune: error: {exc}", file=sys.stderr)
        return 2
    print(f"| decoder | best {result.key} | trials | seconds | parameters |")
    print("|---|---|---|---|---|")
    for name, r in result.per_decoder.items():
        if r.params is None:
            print(f"| {name} | - | {r.trials} | {r.seconds:.1f} | skipped: {r.skipped} |")
        else:
            print(f"| {name} | {r.score:.4f} | {r.trials} | {r.seconds:.1f} | {r.params} |")
    print(
        f"calibrated decoder: {result.summary()}; {result.voxels} validation voxels, "
        f"prediction {result.predict_seconds:.1f} s, total {result.seconds:.1f} s"
    )
    if written is not None:
        print(f"wrote {written}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
