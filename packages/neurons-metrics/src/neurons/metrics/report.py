"""``evaluate``: every metric from one contingency table, as a dict-like :class:`Report`."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ._common import Labels
from .ap import average_precision
from .conventions import CREMI_BORDER_NM, apply_convention, isbi2012_scores
from .errors import InputError
from .instance import match_instances, panoptic_quality
from .partition import (
    adapted_rand_error,
    adjusted_mutual_info,
    adjusted_rand_index,
    normalized_mutual_info,
    rand_index,
    variation_of_information,
)
from .semantic import dice, iou
from .table import ContingencyTable, _as_ids, _to_numpy, contingency_table
from .ted import split_merge_edits, tolerant_edit_distance

__all__ = ["Report", "evaluate", "evaluate_batch", "METRICS", "DEFAULT_METRICS"]

#: metric groups understood by :func:`evaluate`
METRICS = (
    "voi", "arand", "cremi", "rand", "ari", "ami", "nmi", "axi", "matching", "ap", "pq",
    "edits", "ted", "dice", "iou",
)  # fmt: skip
#: computed when ``metrics=None`` (TED and the semantic scores are opt-in)
DEFAULT_METRICS = (
    "voi",
    "arand",
    "cremi",
    "rand",
    "ari",
    "ami",
    "nmi",
    "axi",
    "matching",
    "ap",
    "pq",
    "edits",
)

NAMING_CONVENTIONS = {
    "voi_split": "H(pred|gt), bits, over-segmentation",
    "voi_merge": "H(gt|pred), bits, under-segmentation",
    "arand_cremi": "SNEMI3D/CREMI official adapted Rand error (pred-0 term)",
    "arand_pairs": "funlib/waterz/elf pair counting (self-pairs)",
    "cremi_score": "sqrt(arand_cremi * voi_total)",
    "ari/ami/nmi": "scikit-learn definitions (arithmetic normalisation), exact EMI",
    "ap": "MitoEM vol3d_eval exactly (argsort tie rule, official thresholds), 101 recall points",
}


class Report(dict):
    """Flat ``{metric name: value}`` mapping with metadata and serialisation.

    Examples
    --------
    >>> r = evaluate(np.array([1, 1, 2, 2]), np.array([1, 1, 2, 2]), metrics=["voi"])
    >>> r["voi_total"]
    0.0
    """

    def __init__(self, values: dict[str, Any] | None = None, meta: dict[str, Any] | None = None):
        super().__init__(values or {})
        self.meta: dict[str, Any] = dict(meta or {})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict ``{"metrics": ..., "meta": ...}`` (JSON-safe values)."""
        return {
            "metrics": {k: _json_safe(v) for k, v in self.items()},
            "meta": _json_safe(self.meta),
        }

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int = 2) -> str:
        """JSON text; written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            dst = Path(path)
            dst.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text + "\n")
                os.replace(tmp, dst)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return text

    def to_markdown(self) -> str:
        """Two-column markdown table ``| metric | value |`` (and the leaderboard convention used,
        when not the default, below it)."""
        lines = ["| metric | value |", "|---|---|"]
        for k, v in self.items():
            lines.append(f"| {k} | {_fmt(v)} |")
        conv = self.meta.get("convention", {})
        if conv.get("name", "default") != "default":
            details = ", ".join(f"{k}={v}" for k, v in conv.items() if k != "name")
            lines += ["", f"convention: {conv['name']} ({details})"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Report({dict.__repr__(self)})"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _groups(metrics: Iterable[str] | None) -> list[str]:
    if metrics is None:
        return list(DEFAULT_METRICS)
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    out = []
    for m in metrics:
        m = m.lower()
        if m == "all":
            out += [x for x in METRICS if x not in out]
        elif m not in METRICS:
            raise InputError(f"unknown metric {m!r}; expected one of {', '.join(METRICS)} or 'all'")
        elif m not in out:
            out.append(m)
    return out


def _ignored_foreground(ignore_gt: Labels, dtype: np.dtype) -> np.ndarray:
    """Ignore labels other than the instance background 0 that ``dtype`` can hold."""
    ig = _as_ids(ignore_gt, dtype)
    return ig[ig != 0]


def _gt_as_background(table: ContingencyTable, ignore_gt: Labels) -> ContingencyTable:
    """``table`` with gt ids in ``ignore_gt`` relabelled to the instance background 0."""
    ig = _ignored_foreground(ignore_gt, table.gt_ids.dtype)
    if not ig.size:
        return table
    hit = np.isin(table.gt_ids, ig)
    if not hit.any():
        return table
    g = np.where(hit, np.zeros((), table.gt_ids.dtype), table.gt_ids)
    return ContingencyTable(g, table.pred_ids, table.counts)


def _gt_volume_as_background(gt: Any, ignore_gt: Labels) -> Any:
    """Volume version of :func:`_gt_as_background` (for TED, which reads the volume)."""
    g = np.asarray(_to_numpy(gt))
    if g.dtype.kind not in "iu":
        return g
    ig = _ignored_foreground(ignore_gt, g.dtype)
    if not ig.size:
        return g
    return np.where(np.isin(g, ig), np.zeros((), g.dtype), g)


def evaluate(
    gt: Any,
    pred: Any,
    metrics: Iterable[str] | str | None = None,
    *,
    ignore_gt: Labels = (0,),
    ignore_pred: Labels = (),
    iou_threshold: float = 0.5,
    area_ranges: dict[str, tuple[float, float]] | None = None,
    ted_tolerance: float = 10.0,
    voxel_size: tuple[float, ...] | None = None,
    semantic_ignore_index: int | None = 255,
    block_size: int | None = None,
    n_threads: int | None = None,
    progress: bool | None = None,
    table: ContingencyTable | None = None,
    convention: str | None = None,
    border_threshold: float = CREMI_BORDER_NM,
) -> Report:
    """Evaluate a segmentation against ground truth with many metrics from one table.

    Parameters
    ----------
    gt, pred : array-like
        Label volumes (numpy, ``__array__``, lazy ``neurons.io`` volumes, dask arrays).
    metrics : iterable of str or comma-separated str, optional
        Groups from :data:`METRICS` (``"all"`` for every group). Default
        :data:`DEFAULT_METRICS`; ``"ted"`` (reads the volumes fully, size-limited) and
        ``"dice"``/``"iou"`` (semantic maps) are opt-in.
    ignore_gt, ignore_pred : iterable of int
        Ignored labels. The partition metrics (VOI, ARAND, Rand, MI family) drop the voxels
        of these labels. The instance metrics (matching, AP, PQ, edit counts, TED) use 0 as
        background on both sides; gt labels in ``ignore_gt`` are treated as gt background
        there too (they are never scored as instances; a prediction's size still includes
        them, as with background). ``ignore_pred`` only affects the partition metrics.
    iou_threshold : float
        Threshold of the instance matching scores.
    area_ranges : dict, optional
        Size tiers for AP (e.g. :data:`neurons.metrics.MITOEM_AREA_RANGES`).
    ted_tolerance, voxel_size : float, tuple
        TED boundary tolerance (units of ``voxel_size``; voxels when None).
    semantic_ignore_index : int or None
        Ignore index of ``dice``/``iou``.
    block_size, n_threads, progress
        Passed to :func:`contingency_table`.
    table : ContingencyTable, optional
        Precomputed table of ``(gt, pred)`` (skips the volume pass; only without a
        ``convention``).
    convention : {"default", "snemi3d", "isbi2012", "cremi"}, optional
        Leaderboard convention applied before scoring (see the package README):
        ``"snemi3d"`` scores the centred crop :func:`snemi3d_crop`; ``"cremi"`` ignores gt
        voxels within ``border_threshold`` (world units of ``voxel_size``, default CREMI's
        (40, 4, 4) nm) of a label change in the same section, and gt 0; ``"isbi2012"`` scores
        the thinned section-wise regions and adds ``v_rand``/``v_info`` (+ ``_split``/
        ``_merge``). ``report.meta["convention"]`` says which one (crop, mask) was used.
    border_threshold : float
        CREMI border distance (default 25 nm).

    Returns
    -------
    Report
        Flat mapping, e.g. ``voi_split``, ``voi_merge``, ``voi_total``, ``arand_cremi``,
        ``arand_pairs`` (+ ``_precision``/``_recall``), ``cremi_score``, ``rand_index``,
        ``ari``, ``ami``, ``nmi``, ``axi``, ``precision``/``recall``/``f1``/``accuracy``,
        ``ap50``/``ap75``/``map``, ``pq``/``sq``/``rq``, ``splits``/``merges``, ``n_voxels``.

    Examples
    --------
    >>> evaluate(np.array([1, 1, 2, 2]), np.array([1, 1, 1, 1]), metrics="voi,ari")["voi_merge"]
    1.0
    """
    groups = _groups(metrics)
    conv_meta: dict[str, Any] = {"name": "default"}
    if convention not in (None, "default"):
        if table is not None:
            raise InputError(
                f"convention={convention!r} transforms the volumes; pass gt and pred, not a table"
            )
        gt, pred, conv_meta = apply_convention(
            convention, gt, pred, voxel_size=voxel_size, border_threshold=border_threshold
        )
        if conv_meta["name"] == "cremi":
            given = np.atleast_1d(ignore_gt if ignore_gt is not None else [])
            ignore_gt = tuple(sorted({0, *(int(x) for x in given)}))
    if table is None:
        table = contingency_table(
            gt, pred, block_size=block_size, n_threads=n_threads, progress=progress
        )
    t = table.mask(ignore_gt, ignore_pred)
    out: dict[str, Any] = {
        "n_voxels": table.n,
        "n_voxels_scored": t.n,
        "n_gt_labels": t.n_gt,
        "n_pred_labels": t.n_pred,
    }
    if conv_meta["name"] == "isbi2012":
        out.update(isbi2012_scores(None, None, table=table)._asdict())
    kw = {"ignore_gt": (), "ignore_pred": ()}  # t is already masked
    inst_groups = {"matching", "ap", "pq", "edits"}
    ti = _gt_as_background(table, ignore_gt) if inst_groups & set(groups) else table
    if "voi" in groups or "cremi" in groups:
        v = variation_of_information(t, **kw)
        out.update(voi_split=v.split, voi_merge=v.merge, voi_total=v.total)
    if "arand" in groups or "cremi" in groups:
        c = adapted_rand_error(
            table, convention="cremi", ignore_gt=ignore_gt, ignore_pred=ignore_pred
        )
        out.update(
            arand_cremi=c.error, arand_cremi_precision=c.precision, arand_cremi_recall=c.recall
        )
        if "arand" in groups:
            p = adapted_rand_error(t, convention="pairs", **kw)
            out.update(
                arand_pairs=p.error, arand_pairs_precision=p.precision, arand_pairs_recall=p.recall
            )
    if "cremi" in groups:
        out["cremi_score"] = math.sqrt(max(0.0, out["arand_cremi"]) * out["voi_total"])
    if "rand" in groups:
        out["rand_index"] = rand_index(t, **kw)
    if "ari" in groups or "axi" in groups:
        out["ari"] = adjusted_rand_index(t, **kw)
    if "ami" in groups or "axi" in groups:
        out["ami"] = adjusted_mutual_info(t, n_threads=n_threads, **kw)
    if "nmi" in groups:
        out["nmi"] = normalized_mutual_info(t, **kw)
    if "axi" in groups:
        out["axi"] = math.sqrt(max(out["ari"], 0.0) * max(out["ami"], 0.0))
    if "matching" in groups:
        m = match_instances(ti, thresholds=iou_threshold)
        out.update({k: v for k, v in m.scores().items()})  # type: ignore[union-attr]
    if "ap" in groups:
        ap = average_precision(ti, area_ranges=area_ranges)
        out.update(ap50=ap.ap50, ap75=ap.ap75, map=ap.map)
        for tier, vals in ap.tiers.items():
            for k, v in vals.items():
                out[f"{k}_{tier}"] = v
    if "pq" in groups:
        pq = panoptic_quality(ti)
        out.update(pq=pq.pq, sq=pq.sq, rq=pq.rq)
    if "edits" in groups:
        e = split_merge_edits(ti)
        out.update(splits=e.splits, merges=e.merges, edit_false_positives=e.false_positives,
                   edit_false_negatives=e.false_negatives)  # fmt: skip
    if "ted" in groups:
        g_ted = _gt_volume_as_background(gt, ignore_gt)
        r = tolerant_edit_distance(g_ted, pred, tolerance=ted_tolerance, voxel_size=voxel_size)
        out.update(ted_splits=r.splits, ted_merges=r.merges, ted_false_positives=r.false_positives,
                   ted_false_negatives=r.false_negatives, ted_total=r.total, ted_optimal=r.optimal)  # fmt: skip
    if "dice" in groups:
        d = dice(table, ignore_index=semantic_ignore_index)
        out["dice_mean"] = d.mean
        out.update({f"dice_{c}": v for c, v in d.per_class.items()})
    if "iou" in groups:
        d = iou(table, ignore_index=semantic_ignore_index)
        out["iou_mean"] = d.mean
        out.update({f"iou_{c}": v for c, v in d.per_class.items()})
    meta = {
        "metrics": groups,
        "ignore_gt": [int(x) for x in np.atleast_1d(ignore_gt if ignore_gt is not None else [])],
        "ignore_pred": [
            int(x) for x in np.atleast_1d(ignore_pred if ignore_pred is not None else [])
        ],
        "iou_threshold": iou_threshold,
        "convention": conv_meta,
        "conventions": NAMING_CONVENTIONS,
    }
    return Report(out, meta)


def evaluate_batch(
    gt: Any, pred: Any, metrics: Iterable[str] | str | None = None, **kwargs: Any
) -> Report:
    """Evaluate each sample of a batch ``(B, ...)`` and average **every** sample.

    Every numeric metric is the plain mean over the B samples (zeros included: the predecessor
    dropped samples scoring 0, biasing the mean upward). ``voi_total`` is the mean of the
    per-sample totals. Per-sample reports are in ``report.meta["samples"]``.

    Examples
    --------
    >>> g = np.array([[1, 1, 2, 2], [1, 1, 1, 1]]); p = np.array([[1, 1, 2, 2], [1, 2, 3, 4]])
    >>> evaluate_batch(g, p, metrics="ari")["ari"]
    0.5
    """
    if len(gt) != len(pred):
        raise InputError(f"batch sizes differ: gt has {len(gt)} samples, pred has {len(pred)}")
    if len(gt) == 0:
        raise InputError("evaluate_batch needs at least one sample")
    reports = [evaluate(gt[i], pred[i], metrics, **kwargs) for i in range(len(gt))]
    keys = [k for k in reports[0] if all(k in r for r in reports)]
    mean: dict[str, Any] = {}
    for k in keys:
        vals = [r[k] for r in reports]
        if all(isinstance(v, bool) for v in vals):
            mean[k] = all(vals)
        elif all(isinstance(v, int | float) and v is not None for v in vals):
            mean[k] = float(np.mean(vals))
    meta = dict(reports[0].meta)
    meta["batch_size"] = len(reports)
    meta["samples"] = [dict(r) for r in reports]
    return Report(mean, meta)
