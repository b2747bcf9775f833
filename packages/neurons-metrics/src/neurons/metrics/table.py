"""Exact sparse contingency table of two label volumes, computed block by block.

The table lists every pair ``(gt id, pred id)`` that occurs together with its voxel count. It is
never dense by raw id, works for every integer dtype up to uint64, and is *mergeable*: the table
of a volume is the sum of the tables of its blocks (``ContingencyTable.__add__``), so lazy
volumes, files larger than memory and dask arrays are scored block by block.

Algorithm per block (a z-slab of at most ``block_size`` voxels): label volumes are piecewise
constant along rows, so consecutive equal ``(gt, pred)`` voxels of the flattened block are
run-length encoded first (a few % of the voxel count remain). The runs' ids are factorised
(hash-based ``np.unique`` when NumPy has it, else ``np.sort``; then ``np.searchsorted``; on
the run ids, not on voxels). When the grid of factorised (gt, pred) indices has at most 4 Mi
cells (the usual case within a block: ~2k x ~3k ids), one weighted ``np.bincount`` over it
sums the run lengths (32 MiB per worker); otherwise each run becomes one
64-bit key ``pair index << bits | run length``, one ``np.sort`` of these keys groups equal
pairs and ``np.add.reduceat`` sums their lengths. Blocks are processed by a small thread pool
(numpy releases the GIL), and block tables are merged by concatenation and re-reduction.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ._reduce import _I64, _U64, _first_of_runs, _reduce_pairs
from .errors import InputError, ShapeMismatchError, TableMergeError

__all__ = ["ContingencyTable", "contingency_table", "DEFAULT_BLOCK_SIZE"]

#: Default number of voxels per block (4 Mi voxels: ~32 MiB per uint64 input block).
DEFAULT_BLOCK_SIZE = 1 << 22


# --------------------------------------------------------------------------- id dtypes
def _canonical_ids(a: np.ndarray, name: str) -> np.ndarray:
    """View/convert an id array to int64 (signed inputs) or uint64 (unsigned/bool inputs)."""
    dt = a.dtype
    if dt == _U64 or dt == _I64:
        return a
    if dt.kind == "b":
        return a.astype(_U64)
    if dt.kind == "u":
        return a.astype(_U64)
    if dt.kind == "i":
        return a.astype(_I64)
    raise InputError(
        f"{name}: label ids must be an integer (or bool) array, got dtype {dt}; "
        "float labels are not accepted (ids must never pass through floating point)"
    )


def _merge_dtype(arrays: Sequence[np.ndarray], what: str) -> np.dtype:
    """The canonical dtype (int64 or uint64) able to hold the ids of all ``arrays``."""
    dts = {a.dtype for a in arrays}
    if len(dts) == 1:
        return dts.pop()
    neg = any(a.dtype == _I64 and a.size and a.min() < 0 for a in arrays)
    big = any(a.dtype == _U64 and a.size and a.max() >= np.uint64(1 << 63) for a in arrays)
    if neg and big:
        raise TableMergeError(
            f"cannot merge {what} ids: one table has negative int64 ids and another uint64 ids "
            ">= 2**63; no 64-bit integer type holds both"
        )
    return _I64 if neg else _U64


def _as_ids(values: Iterable[int] | int | None, dtype: np.dtype) -> np.ndarray:
    """Ignore-label lists as an array of ``dtype``, dropping values that dtype cannot hold."""
    if values is None:
        return np.empty(0, dtype)
    if np.isscalar(values):
        values = [values]  # type: ignore[list-item]
    out = []
    info = np.iinfo(dtype)
    for v in values:  # type: ignore[union-attr]
        v = int(v)
        if info.min <= v <= info.max:
            out.append(v)
    return np.array(out, dtype=dtype)


# --------------------------------------------------------------------------- blocks
def _block_table(g: np.ndarray, p: np.ndarray) -> ContingencyTable:
    """Table of one in-memory block (run-length encoding, then pair reduction)."""
    g = np.ascontiguousarray(g).reshape(-1)
    p = np.ascontiguousarray(p).reshape(-1)
    n = g.size
    if n == 0:
        return ContingencyTable(g[:0], p[:0], np.zeros(0, _I64), _trusted=True)
    change = g[1:] != g[:-1]
    change |= p[1:] != p[:-1]
    starts = np.flatnonzero(change)
    del change
    starts += 1
    starts = np.concatenate((np.zeros(1, starts.dtype), starts))
    lengths = np.diff(starts, append=n)
    gi, pi, c = _reduce_pairs(g[starts], p[starts], lengths)
    return ContingencyTable(gi, pi, c, _trusted=True)


# --------------------------------------------------------------------------- the table
class ContingencyTable:
    """Sparse contingency table of a ground truth and a prediction labelling.

    Parameters
    ----------
    gt_ids, pred_ids : ndarray
        Ids of each non-zero cell (any integer dtype; stored as int64 or uint64).
    counts : ndarray
        Voxel count of each cell. Repeated ``(gt, pred)`` pairs are summed.

    Notes
    -----
    Entries are kept sorted by ``(gt id, pred id)`` with unique pairs, so two tables of the same
    data compare equal with ``==``. ``a + b`` is the table of the union of the voxels of ``a``
    and ``b`` (block merging). Ignore labels are applied with :meth:`mask`, never implicitly.

    Examples
    --------
    >>> t = ContingencyTable.from_arrays(np.array([1, 1, 2]), np.array([5, 5, 5]))
    >>> t.n, len(t)
    (3, 2)
    """

    __slots__ = ("gt_ids", "pred_ids", "counts", "_pred_sizes")

    def __init__(
        self,
        gt_ids: np.ndarray,
        pred_ids: np.ndarray,
        counts: np.ndarray,
        *,
        _trusted: bool = False,
    ) -> None:
        gt_ids = np.asarray(gt_ids)
        pred_ids = np.asarray(pred_ids)
        counts = np.asarray(counts)
        if not _trusted:
            if not (gt_ids.ndim == pred_ids.ndim == counts.ndim == 1) or not (
                gt_ids.size == pred_ids.size == counts.size
            ):
                raise InputError(
                    "ContingencyTable needs three 1-D arrays of equal length, got shapes "
                    f"{gt_ids.shape}, {pred_ids.shape}, {counts.shape}"
                )
            gt_ids = _canonical_ids(gt_ids, "gt_ids")
            pred_ids = _canonical_ids(pred_ids, "pred_ids")
            if counts.dtype.kind not in "iu":
                raise InputError(f"counts must be integers, got dtype {counts.dtype}")
            if counts.size and counts.min() < 0:
                raise InputError("counts must be non-negative")
            counts = counts.astype(_I64)
            keep = counts > 0
            gt_ids, pred_ids, counts = _reduce_pairs(gt_ids[keep], pred_ids[keep], counts[keep])
        self.gt_ids = gt_ids
        self.pred_ids = pred_ids
        self.counts = counts
        self._pred_sizes: tuple[np.ndarray, np.ndarray] | None = None  # computed once

    # ---- construction
    @classmethod
    def from_arrays(cls, gt: Any, pred: Any, **kwargs: Any) -> ContingencyTable:
        """Table of two label arrays (alias of :func:`contingency_table`)."""
        return contingency_table(gt, pred, **kwargs)

    @classmethod
    def empty(cls, gt_dtype: Any = np.uint64, pred_dtype: Any = np.uint64) -> ContingencyTable:
        """A table with no voxels."""
        g = _canonical_ids(np.zeros(0, gt_dtype), "gt")
        p = _canonical_ids(np.zeros(0, pred_dtype), "pred")
        return cls(g, p, np.zeros(0, _I64), _trusted=True)

    @staticmethod
    def merge(tables: Sequence[ContingencyTable]) -> ContingencyTable:
        """Sum of several tables (the table of the union of their voxels).

        Examples
        --------
        >>> a = contingency_table(np.array([1, 2]), np.array([1, 1]))
        >>> ContingencyTable.merge([a, a]).n
        4
        """
        tables = [t for t in tables if t is not None]
        if not tables:
            return ContingencyTable.empty()
        if len(tables) == 1:
            return tables[0]
        gdt = _merge_dtype([t.gt_ids for t in tables], "gt")
        pdt = _merge_dtype([t.pred_ids for t in tables], "pred")
        g = np.concatenate([t.gt_ids.astype(gdt, copy=False) for t in tables])
        p = np.concatenate([t.pred_ids.astype(pdt, copy=False) for t in tables])
        c = np.concatenate([t.counts for t in tables])
        return ContingencyTable(*_reduce_pairs(g, p, c), _trusted=True)

    def __add__(self, other: ContingencyTable) -> ContingencyTable:
        if not isinstance(other, ContingencyTable):
            return NotImplemented
        return ContingencyTable.merge([self, other])

    def __radd__(self, other: Any) -> ContingencyTable:
        if isinstance(other, int) and other == 0:  # sum([...]) starts with 0
            return self
        return NotImplemented

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContingencyTable):
            return NotImplemented
        return (
            len(self) == len(other)
            and np.array_equal(self.gt_ids, other.gt_ids)
            and np.array_equal(self.pred_ids, other.pred_ids)
            and np.array_equal(self.counts, other.counts)
        )

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return int(self.counts.size)

    def __repr__(self) -> str:
        return (
            f"ContingencyTable(n={self.n}, pairs={len(self)}, gt_labels={self.n_gt}, "
            f"pred_labels={self.n_pred}, gt_dtype={self.gt_ids.dtype}, "
            f"pred_dtype={self.pred_ids.dtype})"
        )

    # ---- properties
    @property
    def n(self) -> int:
        """Number of voxels counted (exact Python int)."""
        return int(self.counts.sum(dtype=_I64))

    @property
    def n_gt(self) -> int:
        """Number of distinct ground-truth labels."""
        return int(self.gt_sizes()[0].size)

    @property
    def n_pred(self) -> int:
        """Number of distinct predicted labels."""
        return int(self.pred_sizes()[0].size)

    def gt_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, voxel counts)`` of every ground-truth label (row marginals), ids sorted."""
        if not len(self):
            return self.gt_ids[:0], np.zeros(0, _I64)
        starts = np.flatnonzero(_first_of_runs(self.gt_ids))  # rows are sorted by gt
        return self.gt_ids[starts], np.add.reduceat(self.counts, starts)

    def pred_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, voxel counts)`` of every predicted label (column marginals), ids sorted."""
        if not len(self):
            return self.pred_ids[:0], np.zeros(0, _I64)
        if self._pred_sizes is None:  # the entries never change after construction
            order = np.argsort(self.pred_ids, kind="stable")
            p = self.pred_ids[order]
            starts = np.flatnonzero(_first_of_runs(p))
            self._pred_sizes = (p[starts], np.add.reduceat(self.counts[order], starts))
        ids, sizes = self._pred_sizes
        return ids.copy(), sizes.copy()

    def row_index(self) -> np.ndarray:
        """For each entry, the index of its gt label in ``gt_sizes()[0]``."""
        return np.cumsum(_first_of_runs(self.gt_ids)) - 1

    def col_index(self) -> np.ndarray:
        """For each entry, the index of its pred label in ``pred_sizes()[0]``."""
        ids = self.pred_sizes()[0]
        return np.searchsorted(ids, self.pred_ids)

    # ---- transforms
    def mask(
        self,
        ignore_gt: Iterable[int] | int | None = (),
        ignore_pred: Iterable[int] | int | None = (),
    ) -> ContingencyTable:
        """Drop the voxels whose gt id is in ``ignore_gt`` **or** whose pred id is in ``ignore_pred``.

        Examples
        --------
        >>> t = contingency_table(np.array([0, 1, 1]), np.array([3, 3, 4]))
        >>> t.mask(ignore_gt=[0]).n
        2
        """
        keep = np.ones(len(self), bool)
        ig = _as_ids(ignore_gt, self.gt_ids.dtype)
        ip = _as_ids(ignore_pred, self.pred_ids.dtype)
        if ig.size:
            keep &= ~np.isin(self.gt_ids, ig)
        if ip.size:
            keep &= ~np.isin(self.pred_ids, ip)
        if keep.all():
            return self
        return ContingencyTable(
            self.gt_ids[keep], self.pred_ids[keep], self.counts[keep], _trusted=True
        )

    def transpose(self) -> ContingencyTable:
        """The table with the roles of gt and pred swapped."""
        return ContingencyTable(
            *_reduce_pairs(self.pred_ids, self.gt_ids, self.counts), _trusted=True
        )

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-friendly representation (ids as Python ints, exact for uint64)."""
        return {
            "gt_ids": self.gt_ids.tolist(),
            "pred_ids": self.pred_ids.tolist(),
            "counts": self.counts.tolist(),
        }


# --------------------------------------------------------------------------- inputs
def _is_dask(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "dask" and hasattr(x, "to_delayed")


def _to_numpy(x: Any) -> np.ndarray:
    """A block as a numpy array (tensors: detached and moved to the CPU without importing torch)."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
    return np.asarray(x)


def _prepare(x: Any, name: str) -> Any:
    """Numpy array, lazy volume (``.shape`` + slicing) or dask array; others via ``__array__``."""
    if isinstance(x, np.ndarray) or _is_dask(x):
        return x
    if hasattr(x, "shape") and hasattr(x, "__getitem__") and hasattr(x, "dtype"):
        return x  # lazy volume / tensor: read block by block
    if hasattr(x, "__array__") or isinstance(x, list | tuple):
        return np.asarray(x)
    raise InputError(
        f"{name}: expected a numpy array, an object with __array__, a lazy volume (shape + "
        f"slicing) or a dask array, got {type(x).__name__}"
    )


def _check_dtype(x: Any, name: str) -> None:
    dt = np.dtype(x.dtype) if not hasattr(x.dtype, "is_floating_point") else None
    if dt is None:  # torch dtype
        if x.dtype.is_floating_point or x.dtype.is_complex:
            raise InputError(f"{name}: label ids must be integers, got dtype {x.dtype}")
        return
    if dt.kind not in "iub":
        raise InputError(
            f"{name}: label ids must be an integer (or bool) array, got dtype {dt}; "
            "ids must never pass through floating point"
        )


def iter_blocks(shape: tuple[int, ...], block_size: int) -> Iterator[tuple[slice, ...]]:
    """Index tuples covering ``shape`` in C order, each with at most ``block_size`` voxels.

    Splits along the first axis (z-slabs); when one index of an axis is already larger than
    ``block_size`` the next axis is split too.
    """
    block_size = max(1, int(block_size))
    if len(shape) == 0:
        yield ()
        return
    inner = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    if inner <= block_size or len(shape) == 1:
        step = max(1, block_size // max(inner, 1))
        for z in range(0, shape[0], step):
            yield (slice(z, min(z + step, shape[0])),)
        return
    for z in range(shape[0]):
        for sub in iter_blocks(shape[1:], block_size):
            yield (slice(z, z + 1), *sub)


class _Progress:
    """Plain-text progress bar on stderr (no dependency)."""

    def __init__(self, total: int, label: str = "contingency", stream: Any = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._last = -1.0

    def update(self, k: int = 1) -> None:
        self.done += k
        now = time.perf_counter()
        if self.done < self.total and now - self._last < 0.2:
            return
        self._last = now
        frac = self.done / self.total
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        self.stream.write(
            f"\r{self.label} [{bar}] {100 * frac:5.1f}% {self.done}/{self.total} blocks "
            f"{now - self.t0:6.1f}s"
        )
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _n_threads(n_threads: int | None) -> int:
    if n_threads is not None:
        return max(1, int(n_threads))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _tree_merge(tables: list[ContingencyTable], fan_in: int = 16) -> ContingencyTable:
    while len(tables) > 1:
        tables = [
            ContingencyTable.merge(tables[i : i + fan_in]) for i in range(0, len(tables), fan_in)
        ]
    return tables[0] if tables else ContingencyTable.empty()


def _dask_table(gt: Any, pred: Any) -> ContingencyTable:
    import dask
    import dask.array as da

    if not _is_dask(gt):
        gt = da.from_array(_to_numpy(gt) if not hasattr(gt, "shape") else gt, chunks=pred.chunks)
    if not _is_dask(pred):
        pred = da.from_array(
            _to_numpy(pred) if not hasattr(pred, "shape") else pred, chunks=gt.chunks
        )
    if pred.chunks != gt.chunks:
        pred = pred.rechunk(gt.chunks)
    gblocks = gt.to_delayed().ravel()
    pblocks = pred.to_delayed().ravel()
    parts = [dask.delayed(_block_table)(g, p) for g, p in zip(gblocks, pblocks, strict=True)]
    merge = dask.delayed(lambda *ts: ContingencyTable.merge(list(ts)))
    while len(parts) > 1:
        parts = [merge(*parts[i : i + 16]) for i in range(0, len(parts), 16)]
    (table,) = dask.compute(parts[0])
    return table


def contingency_table(
    gt: Any,
    pred: Any,
    *,
    block_size: int | None = None,
    n_threads: int | None = None,
    progress: bool | Callable[[int, int], None] | None = None,
) -> ContingencyTable:
    """Exact sparse contingency table of two label volumes.

    Parameters
    ----------
    gt, pred : array-like
        Label volumes of equal shape with integer ids (any dtype up to uint64; 2-D or 3-D or
        any rank). Accepted: numpy arrays, anything with ``__array__`` (e.g. CPU/GPU tensors,
        converted block by block without importing torch), lazy volumes such as
        :func:`neurons.io.open_volume` results (anything with ``.shape``, ``.dtype`` and numpy
        slicing; read one block at a time), and dask arrays (one table per chunk, summed).
    block_size : int, optional
        Maximum voxels per block (default ``DEFAULT_BLOCK_SIZE`` = 4 Mi). Extra memory is
        ~``n_threads * block_size * 3`` bytes plus the block reads of lazy inputs.
    n_threads : int, optional
        Worker threads (default: CPUs available to this process).
    progress : bool or callable, optional
        ``True`` prints a plain-text progress bar on stderr; a callable receives
        ``(blocks_done, blocks_total)``. Default: no progress output.

    Returns
    -------
    ContingencyTable
        All pairs, ignore labels not applied (see :meth:`ContingencyTable.mask`).

    Examples
    --------
    >>> contingency_table(np.array([[1, 1], [2, 2]]), np.array([[7, 8], [8, 8]])).counts
    array([1, 1, 2])
    """
    gt = _prepare(gt, "gt")
    pred = _prepare(pred, "pred")
    gshape, pshape = tuple(gt.shape), tuple(pred.shape)
    if gshape != pshape:
        raise ShapeMismatchError(
            f"gt and pred must have the same shape, got gt {gshape} and pred {pshape}"
        )
    _check_dtype(gt, "gt")
    _check_dtype(pred, "pred")
    if _is_dask(gt) or _is_dask(pred):
        return _dask_table(gt, pred)
    bs = DEFAULT_BLOCK_SIZE if block_size is None else int(block_size)
    if bs < 1:
        raise InputError(f"block_size must be a positive number of voxels, got {block_size}")
    blocks = list(iter_blocks(gshape, bs))
    if not blocks or int(np.prod(gshape, dtype=np.int64)) == 0:
        gdt = np.dtype(gt.dtype) if isinstance(gt.dtype, np.dtype) else np.dtype(np.int64)
        pdt = np.dtype(pred.dtype) if isinstance(pred.dtype, np.dtype) else np.dtype(np.int64)
        return ContingencyTable.empty(gdt, pdt)

    bar: Callable[[int, int], None] | None
    if progress is True:
        pb = _Progress(len(blocks))
        bar = lambda done, total: pb.update()  # noqa: E731
    elif callable(progress):
        bar = progress
    else:
        bar = None

    def work(idx: tuple[slice, ...]) -> ContingencyTable:
        g = _canonical_ids(_to_numpy(gt[idx]), "gt")
        p = _canonical_ids(_to_numpy(pred[idx]), "pred")
        return _block_table(g, p)

    nt = min(_n_threads(n_threads), len(blocks))
    pending: list[ContingencyTable] = []
    done = 0
    if nt == 1:
        results: Iterable[ContingencyTable] = map(work, blocks)
        executor = None
    else:
        executor = ThreadPoolExecutor(nt)
        results = executor.map(work, blocks)
    try:
        for t in results:
            pending.append(t)
            done += 1
            if len(pending) >= 32:  # keep memory bounded: merge as we go
                pending = [ContingencyTable.merge(pending)]
            if bar is not None:
                bar(done, len(blocks))
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return _tree_merge(pending)
