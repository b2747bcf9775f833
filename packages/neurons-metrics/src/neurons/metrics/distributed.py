"""Evaluation on a ``dask.distributed`` cluster: one contingency table per block, summed.

Each task opens the two volumes lazily through :mod:`neurons.io` (by path, so the workers read
the files themselves), reads one block of each and returns its sparse table; tables are merged
in a tree on the cluster (the table of a volume is the sum of its blocks' tables), and every
metric of :func:`~neurons.metrics.evaluate` is computed from the merged table. Memory per task
is bounded by the block; the client only ever holds tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import InputError, MetricsError, ShapeMismatchError
from .report import Report, evaluate
from .table import DEFAULT_BLOCK_SIZE, ContingencyTable, contingency_table, iter_blocks

__all__ = ["distributed_table", "evaluate_distributed"]


def _client(scheduler: Any) -> tuple[Any, bool]:
    if not isinstance(scheduler, str):
        return scheduler, False
    try:
        from distributed import Client
    except ImportError as exc:
        raise MetricsError(
            f"scheduler {scheduler!r}: dask.distributed is not installed "
            "(pip install 'neurons-metrics[distributed]')"
        ) from exc
    try:
        return Client(scheduler), True
    except (OSError, TimeoutError, ValueError) as exc:
        raise MetricsError(
            f"cannot reach the dask.distributed scheduler at {scheduler!r} ({exc}); expected a "
            "running scheduler, e.g. tcp://HOST:8786"
        ) from exc


def _open(src: Any, key: str | None) -> Any:
    """A lazy ``neurons.io`` Volume for a path (pickles by reference), else ``src`` itself."""
    if isinstance(src, str | os.PathLike):
        from neurons.io import open_volume

        return open_volume(src, key)
    return src


def _block_table(gt: Any, pred: Any, box: tuple[slice, ...]) -> ContingencyTable:
    return contingency_table(np.asarray(gt[box]), np.asarray(pred[box]), n_threads=1)


def distributed_table(
    gt: Any,
    pred: Any,
    scheduler: Any,
    *,
    gt_key: str | None = None,
    pred_key: str | None = None,
    block_size: int | None = None,
    fan_in: int = 16,
) -> ContingencyTable:
    """Contingency table of two volumes computed block by block on a ``dask.distributed`` cluster.

    Parameters
    ----------
    gt, pred : path, neurons.io Volume or array
        Label volumes of equal shape; paths (``"gt.h5:ids"``, ``"seg.zarr:segmentation"``) and
        Volumes are read by the workers, one block at a time (they must reach the files).
    scheduler : distributed.Client or str
        A client or a scheduler address (``"tcp://host:8786"``).
    gt_key, pred_key : str, optional
        Array keys inside the containers.
    block_size : int, optional
        Voxels per block task (default 4 Mi); memory per task is about ``20 B`` per voxel.
    fan_in : int
        Tables merged per merge task.

    Returns
    -------
    ContingencyTable
        Exactly the table of :func:`~neurons.metrics.contingency_table` on the whole volumes.

    Examples
    --------
    >>> t = distributed_table("gt.zarr", "seg.zarr:segmentation", "tcp://10.0.0.1:8786")  # doctest: +SKIP
    """
    gt, pred = _open(gt, gt_key), _open(pred, pred_key)
    for name, v in (("gt", gt), ("pred", pred)):
        if not hasattr(v, "shape") or not hasattr(v, "__getitem__"):
            raise InputError(f"{name}: expected a path, a neurons.io Volume or an array")
    if tuple(gt.shape) != tuple(pred.shape):
        raise ShapeMismatchError(
            f"gt and pred must have the same shape, got gt {tuple(gt.shape)} "
            f"and pred {tuple(pred.shape)}"
        )
    bs = DEFAULT_BLOCK_SIZE if block_size is None else int(block_size)
    if bs < 1:
        raise InputError(f"block_size must be a positive number of voxels, got {block_size}")
    client, own = _client(scheduler)
    try:
        boxes = list(iter_blocks(tuple(int(s) for s in gt.shape), bs))
        if not boxes:
            return ContingencyTable.empty()
        parts = [client.submit(_block_table, gt, pred, box, pure=False) for box in boxes]
        while len(parts) > 1:
            parts = [
                client.submit(ContingencyTable.merge, parts[i : i + fan_in], pure=False)
                for i in range(0, len(parts), fan_in)
            ]
        try:
            return parts[0].result()
        except Exception as exc:
            raise MetricsError(
                f"distributed evaluation failed ({type(exc).__name__}: {exc})"
            ) from exc
    finally:
        if own:
            client.close()


def evaluate_distributed(
    gt: Any,
    pred: Any,
    scheduler: Any,
    metrics: Iterable[str] | str | None = None,
    *,
    gt_key: str | None = None,
    pred_key: str | None = None,
    block_size: int | None = None,
    **kwargs: Any,
) -> Report:
    """:func:`~neurons.metrics.evaluate` with the contingency table computed on a cluster.

    ``kwargs`` go to :func:`~neurons.metrics.evaluate` (``ignore_gt``, ``iou_threshold``, ...).
    Every table-based metric is exact; ``"ted"`` reads both volumes whole on the client.

    Examples
    --------
    >>> r = evaluate_distributed("gt.h5:ids", "seg.zarr:segmentation", client)  # doctest: +SKIP
    >>> r["voi_split"], r["arand_cremi"]  # doctest: +SKIP
    """
    gt, pred = _open(gt, gt_key), _open(pred, pred_key)
    table = distributed_table(gt, pred, scheduler, block_size=block_size)
    report = evaluate(gt, pred, metrics, table=table, **kwargs)
    report.meta["scheduler"] = scheduler if isinstance(scheduler, str) else "distributed.Client"
    return report
