"""``neurons-eval GT PRED``: score a segmentation file against ground truth."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .conventions import CONVENTIONS, CREMI_BORDER_NM
from .errors import MetricsError
from .report import METRICS, evaluate

__all__ = ["main", "build_parser"]

#: show a progress bar from this many voxels on (unless --quiet)
PROGRESS_VOXELS = 1 << 26


def build_parser() -> argparse.ArgumentParser:
    """The ``neurons-eval`` argument parser."""
    p = argparse.ArgumentParser(
        prog="neurons-eval",
        description="Evaluate a segmentation against ground truth (VOI, ARAND, CREMI score, "
        "ARI/AMI/NMI, matching, AP, PQ, split/merge edits; TED on request). Files are read "
        "block by block with neurons.io (HDF5, Zarr, TIFF, PNG, NRRD, NIfTI, npy, slice "
        "folders; N5 is not supported), with 'file.h5:key' syntax.",
    )
    p.add_argument("gt", help="ground-truth label volume (path or path:key)")
    p.add_argument("pred", help="predicted label volume (path or path:key)")
    p.add_argument("--gt-key", default=None, help="dataset key inside the gt file")
    p.add_argument("--pred-key", default=None, help="dataset key inside the pred file")
    p.add_argument(
        "--metrics", default=None,
        help=f"comma-separated groups from: {', '.join(METRICS)}, all (default: all but ted/dice/iou)",
    )  # fmt: skip
    p.add_argument(
        "--ignore-gt", type=int, nargs="*", default=[0], help="ignored gt ids (default 0)"
    )
    p.add_argument("--ignore-pred", type=int, nargs="*", default=[], help="ignored pred ids")
    p.add_argument("--iou-threshold", type=float, default=0.5)
    p.add_argument(
        "--ted-tolerance", type=float, default=10.0,
        help="TED tolerance (units of --voxel-size; voxels without it)",
    )  # fmt: skip
    p.add_argument(
        "--convention", choices=CONVENTIONS, default="default",
        help="leaderboard convention: snemi3d (centred crop), isbi2012 (thinned V_rand/V_info), "
        "cremi (gt border mask; see --voxel-size, --border-threshold)",
    )  # fmt: skip
    p.add_argument(
        "--voxel-size", type=float, nargs="+", default=None, metavar="NM",
        help="voxel size (z y x) in nm for --convention cremi (default 40 4 4) and TED",
    )  # fmt: skip
    p.add_argument(
        "--border-threshold", type=float, default=CREMI_BORDER_NM,
        help=f"CREMI border distance in nm (default {CREMI_BORDER_NM:g})",
    )  # fmt: skip
    p.add_argument("--json", default=None, metavar="OUT", help="also write the report as JSON")
    p.add_argument("--block-size", type=int, default=None, help="voxels per block (default 4Mi)")
    p.add_argument("--threads", type=int, default=None, help="worker threads")
    p.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="dask.distributed scheduler (tcp://HOST:PORT): blocks are scored on the cluster "
        "(workers read the files) and their contingency tables merged",
    )  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``neurons-eval``; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    from neurons.io import VolumeError, open_volume

    try:
        t0 = time.perf_counter()
        with open_volume(args.gt, args.gt_key) as gt, open_volume(args.pred, args.pred_key) as pred:
            if tuple(gt.shape) != tuple(pred.shape):
                raise MetricsError(
                    f"shape mismatch: gt {args.gt} has shape {tuple(gt.shape)}, "
                    f"pred {args.pred} has shape {tuple(pred.shape)}"
                )
            n = 1
            for s in gt.shape:
                n *= int(s)
            show = (not args.quiet) and n >= PROGRESS_VOXELS
            if args.scheduler and args.convention != "default":
                raise MetricsError(
                    f"--convention {args.convention} is applied on one machine; "
                    "it cannot be combined with --scheduler"
                )
            if args.scheduler:
                from .distributed import evaluate_distributed

                report = evaluate_distributed(
                    gt, pred, args.scheduler, args.metrics, block_size=args.block_size,
                    ignore_gt=args.ignore_gt, ignore_pred=args.ignore_pred,
                    iou_threshold=args.iou_threshold, ted_tolerance=args.ted_tolerance,
                )  # fmt: skip
            else:
                report = evaluate(
                    gt, pred, args.metrics, ignore_gt=args.ignore_gt, ignore_pred=args.ignore_pred,
                    iou_threshold=args.iou_threshold, ted_tolerance=args.ted_tolerance,
                    block_size=args.block_size, n_threads=args.threads, progress=show,
                    convention=args.convention, border_threshold=args.border_threshold,
                    voxel_size=tuple(args.voxel_size) if args.voxel_size else None,
                )  # fmt: skip
        report.meta.update(gt=str(args.gt), pred=str(args.pred), seconds=time.perf_counter() - t0)
        print(report.to_markdown())
        if args.json:
            report.to_json(args.json)
            print(f"wrote {args.json}", file=sys.stderr)
    except (MetricsError, VolumeError, OSError, ValueError, KeyError) as e:
        print(f"neurons-eval: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
