"""``neurons-infer CHECKPOINT INPUT OUTPUT``: segment a volume of any size with a trained model.

Examples::

    neurons-infer runs/synthetic/checkpoints/last.ckpt raw.h5:raw seg.h5
    neurons-infer last.ckpt stack.tif seg.zarr --block-size 64 256 256 --overlap 8 32 32 \\
        --tta flips --scheduler processes --workers 4 --gt labels.h5:ids
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .errors import InferenceError

__all__ = ["build_parser", "main"]


def _ints(values: Sequence[str] | None) -> int | tuple[int, ...] | None:
    if values is None:
        return None
    out = tuple(int(v) for v in values)
    return out[0] if len(out) == 1 else out


def _decoder_params(
    parser: argparse.ArgumentParser, decoder: str | None, items: Sequence[str]
) -> dict[str, object]:
    """``KEY=VALUE`` items as a dict (VALUE parsed as JSON, else kept as a string); a key the
    chosen decoder does not have is a usage error (exit 2)."""
    import json

    from .decoders.registry import DECODERS

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--decoder-param {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    if out and decoder not in (None, "auto"):
        unknown = sorted(set(out) - set(DECODERS[decoder].defaults))
        if unknown:
            parser.error(
                f"decoder {decoder!r} has no parameter(s) {unknown}; its parameters are "
                f"{sorted(DECODERS[decoder].defaults)}"
            )
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``neurons-infer`` argument parser."""
    p = argparse.ArgumentParser(
        prog="neurons-infer",
        description=(
            "Sliding-window inference, instance decoding and block stitching with bounded memory. "
            "Writes instance ids (uint64) and semantic classes (uint8) to OUTPUT, PNG previews "
            "next to it, and - with --gt - prints and saves the scores."
        ),
    )
    p.add_argument("checkpoint", help="checkpoint written by neurons-train (.ckpt)")
    p.add_argument("input", help="raw volume (any neurons.io format; 'file.h5:key' allowed)")
    p.add_argument("output", help="output volume (.h5, .zarr, .tif, ...; 'file.h5:key' allowed)")
    p.add_argument("--key", default=None, help="array key inside INPUT")
    p.add_argument("--out-key", default="segmentation", help="key of the instance ids in OUTPUT")
    p.add_argument(
        "--semantic-key",
        default="semantic",
        help="key of the semantic map in OUTPUT ('none' to skip)",
    )
    p.add_argument(
        "--block-size",
        nargs="+",
        type=int,
        default=None,
        metavar="N",
        help="block core size (voxels, 1 or per axis)",
    )
    p.add_argument(
        "--overlap",
        nargs="+",
        type=int,
        default=None,
        metavar="N",
        help=(
            "block halo used to match ids across blocks, in VOXELS (1 or per axis; config key "
            "inference.halo). Not the window overlap: that is --window-overlap, a fraction "
            "(config key inference.overlap)"
        ),
    )
    p.add_argument(
        "--window",
        nargs="+",
        type=int,
        default=None,
        metavar="N",
        help="sliding-window size (default: training patch size)",
    )
    p.add_argument(
        "--window-overlap",
        type=float,
        default=None,
        help=(
            "FRACTION of the sliding window shared by neighbouring windows, in [0, 1) "
            "(default: config key inference.overlap, 0.25)"
        ),
    )
    p.add_argument(
        "--intensity-range",
        nargs=2,
        type=float,
        default=None,
        metavar=("LO", "HI"),
        help=(
            "raw intensities mapped to [0, 1] (default: config inference.intensity_range, else "
            "the range training computes per volume: uint8 0..255, otherwise sampled min/max)"
        ),
    )
    p.add_argument("--batch-size", type=int, default=None, help="windows per forward pass")
    p.add_argument("--tta", choices=["none", "flips"], default=None, help="test-time augmentation")
    from .decoders.registry import DECODERS

    p.add_argument(
        "--decoder",
        choices=["auto", *DECODERS],
        default=None,
        help="; ".join(f"{k}: {v.description}" for k, v in DECODERS.items())
        + " (default: the checkpoint's choice, else auto)",
    )
    p.add_argument(
        "--decoder-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a decoder parameter, e.g. bias=0.6 or threshold=0.3 (repeatable; VALUE is JSON)",
    )
    p.add_argument(
        "--bandwidth", type=float, default=None, help="mean-shift bandwidth (default: loss delta_v)"
    )
    p.add_argument(
        "--min-size", type=int, default=None, help="remove objects smaller than this (voxels)"
    )
    p.add_argument(
        "--match-threshold",
        type=float,
        default=0.5,
        help="IoU in the halo to merge ids across blocks",
    )
    p.add_argument(
        "--scheduler",
        default="threads",
        help=(
            "dask scheduler: threads|processes|sync, or a dask.distributed address "
            "tcp://HOST:PORT: blocks run on the cluster, workers read INPUT and load CHECKPOINT "
            "themselves, OUTPUT must be a .zarr store every worker can reach; rerunning the same "
            "command resumes (OUTPUT.manifest.json)"
        ),
    )
    p.add_argument("--workers", type=int, default=None, help="dask workers (threads/processes)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto")
    p.add_argument(
        "--compression", default=None, help="output compression (e.g. gzip for HDF5/Zarr)"
    )
    p.add_argument("--gt", default=None, help="ground-truth instance volume to score against")
    p.add_argument("--gt-key", default=None, help="array key inside GT")
    p.add_argument("--no-previews", action="store_true", help="do not write PNG previews")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of errors")
    return p


def _progress_bar(quiet: bool):
    """A rich progress bar showing blocks done and voxel throughput; returns (ctx, callback)."""
    if quiet:
        import contextlib

        return contextlib.nullcontext(), None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]blocks"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    state = {"task": None, "t0": time.perf_counter()}

    def callback(done: int, total: int, voxels: int) -> None:
        if state["task"] is None:
            state["task"] = progress.add_task("blocks", total=total, rate="")
        rate = voxels / max(time.perf_counter() - state["t0"], 1e-9)
        progress.update(state["task"], completed=done, rate=f"{rate / 1e6:.2f} Mvox/s")

    return progress, callback


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``neurons-infer``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    decoder_params = _decoder_params(parser, args.decoder, args.decoder_param)
    from neurons.io import VolumeError
    from neurons.train.errors import TrainError

    from .pipeline import run_inference

    ctx, callback = _progress_bar(args.quiet)
    try:
        with ctx:
            run = run_inference(
                args.checkpoint,
                args.input,
                args.output,
                key=args.key,
                out_key=args.out_key,
                semantic_key=None if args.semantic_key.lower() == "none" else args.semantic_key,
                block_size=_ints(args.block_size),
                overlap=_ints(args.overlap),
                window=_ints(args.window) if args.window else None,
                window_overlap=args.window_overlap,
                intensity_range=args.intensity_range,
                batch_size=args.batch_size,
                tta=args.tta,
                decoder=args.decoder,
                decode_options={"params": decoder_params} if decoder_params else None,
                bandwidth=args.bandwidth,
                min_size=args.min_size,
                match_threshold=args.match_threshold,
                scheduler=args.scheduler,
                workers=args.workers,
                device=args.device,
                gt=args.gt,
                gt_key=args.gt_key,
                previews=not args.no_previews,
                compression=args.compression,
                progress=callback,
            )
    except (InferenceError, VolumeError, TrainError) as exc:
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"neurons-infer: error: {message}", file=sys.stderr)
        return 2
    res = run.result
    if run.decoder_choice is not None:
        print(run.decoder_choice.describe())
    print(
        f"wrote {run.output}:{run.out_key}  ({res.num_objects} objects, {res.num_blocks} blocks, "
        f"{res.voxels} voxels in {res.seconds:.1f} s = {res.voxels_per_second / 1e6:.3f} Mvoxel/s)"
    )
    for kind, path in run.previews.items():
        print(f"preview {kind}: {path}")
    if run.scores is not None:
        print(run.scores.to_markdown() if hasattr(run.scores, "to_markdown") else run.scores)
        print(f"scores: {run.scores_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
