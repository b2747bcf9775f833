"""Block-wise segmentation of volumes of any size, with ids consistent across blocks.

Pipeline (memory bounded by the block size, not the volume):

1. **Blocks** (parallel, dask): each block's *core* plus a halo of ``overlap`` voxels is predicted
   with the global sliding-window grid (:func:`~.sliding.predict_region`, so predictions equal
   whole-volume ones) and decoded. The core's labels are written, with a per-block id offset
   (uint64, ``block_index * id_stride``), into a scratch ``.npy`` memory map next to the output;
   the halo's labels go to a small per-block file.
2. **Matching** (parallel): in each block's halo, its own labels are compared with the labels its
   neighbours wrote there; pairs with IoU >= ``match_threshold`` are edges.
3. **Union-find** (driver): connected components of the edge graph over the provisional ids,
   global object sizes (summed over blocks) and small-object removal, giving a lookup table
   provisional id -> final sequential id.
4. **Relabel pass**: the scratch map is streamed slab by slab through the lookup table into the
   output via :func:`neurons.io.write_blocks` (atomic: temporary file, then rename).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .decode import DecodeConfig, decode_instances
from .errors import StitchError
from .sliding import SlidingWindow, predict_region

__all__ = [
    "BlockGrid",
    "SegmentationResult",
    "compute_tasks",
    "match_pairs",
    "segment_blockwise",
    "segment_volume",
    "union_find_lut",
]


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockGrid:
    """Tiling of a volume into blocks with a halo.

    Examples
    --------
    >>> g = BlockGrid((10, 10), (4, 4), (1, 1))
    >>> len(g), g.core(0), g.outer(0)
    (9, (slice(0, 4, None), slice(0, 4, None)), (slice(0, 5, None), slice(0, 5, None)))
    """

    shape: tuple[int, ...]
    block: tuple[int, ...]
    overlap: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.shape) == len(self.block) == len(self.overlap)):
            raise StitchError(
                f"block size {self.block} and overlap {self.overlap} need one entry per axis of "
                f"the volume shape {self.shape}"
            )
        if any(b < 1 for b in self.block) or any(o < 0 for o in self.overlap):
            raise StitchError(
                f"block sizes must be >= 1 and overlaps >= 0, got {self.block}, {self.overlap}"
            )

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / b) for s, b in zip(self.shape, self.block, strict=True))

    def __len__(self) -> int:
        return int(np.prod(self.counts))

    def index(self, i: int) -> tuple[int, ...]:
        return tuple(int(v) for v in np.unravel_index(i, self.counts))

    def core(self, i: int) -> tuple[slice, ...]:
        return tuple(
            slice(k * b, min((k + 1) * b, s))
            for k, b, s in zip(self.index(i), self.block, self.shape, strict=True)
        )

    def outer(self, i: int) -> tuple[slice, ...]:
        return tuple(
            slice(max(c.start - o, 0), min(c.stop + o, s))
            for c, o, s in zip(self.core(i), self.overlap, self.shape, strict=True)
        )


def _tuple(v: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    if isinstance(v, int | np.integer):
        return (int(v),) * n
    out = tuple(int(x) for x in v)
    if len(out) == 1:
        return out * n
    if len(out) != n:
        raise StitchError(f"{name} needs 1 or {n} values (one per axis), got {v!r}")
    return out


def _halo_mask(outer: Sequence[slice], core: Sequence[slice]) -> np.ndarray:
    """Boolean mask over ``outer`` that is True outside ``core``."""
    shape = tuple(o.stop - o.start for o in outer)
    m = np.ones(shape, dtype=bool)
    m[
        tuple(slice(c.start - o.start, c.stop - o.start) for c, o in zip(core, outer, strict=True))
    ] = False
    return m


# --------------------------------------------------------------------------------------------
# predictors (picklable, cached per process)
# --------------------------------------------------------------------------------------------
_PREDICTOR_CACHE: dict[tuple[str, str], Callable] = {}


@dataclass
class Predictor:
    """A picklable prediction callable: a model object or a checkpoint path (loaded lazily,
    once per worker process). ``planewise=True`` runs a 2-D model on ``(B, C, 1, H, W)``
    windows of a 3-D volume (section by section).

    Examples
    --------
    >>> import torch
    >>> p = Predictor(model=torch.nn.Identity())
    >>> p(torch.zeros(1, 1, 4, 4)).shape
    torch.Size([1, 1, 4, 4])
    """

    model: Any = None
    checkpoint: str | None = None
    device: str = "cpu"
    planewise: bool = False

    def __post_init__(self) -> None:
        if (self.model is None) == (self.checkpoint is None):
            raise StitchError("Predictor needs exactly one of model= or checkpoint=")

    def _get(self) -> Callable:
        if self.model is not None:
            return self.model
        key = (str(self.checkpoint), str(self.device))
        if key not in _PREDICTOR_CACHE:
            from .checkpoint import load_model

            _PREDICTOR_CACHE[key] = load_model(self.checkpoint, self.device)[0]
        return _PREDICTOR_CACHE[key]

    def __call__(self, x):
        import torch

        model = self._get()
        if isinstance(model, torch.nn.Module):
            dev = next(iter(model.parameters()), torch.empty(0)).device
            x = x.to(dev)
        if not self.planewise:
            return model(x)
        if x.ndim != 5 or x.shape[2] != 1:
            raise StitchError(
                f"planewise prediction needs (B, C, 1, H, W) windows, got {tuple(x.shape)}"
            )
        out = model(x[:, :, 0])
        if isinstance(out, torch.Tensor):
            return out[:, :, None]
        return {k: v[:, :, None] for k, v in out.items()}

    def __getstate__(self) -> dict:
        return {
            "model": self.model,
            "checkpoint": self.checkpoint,
            "device": self.device,
            "planewise": self.planewise,
        }

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


# --------------------------------------------------------------------------------------------
# dask execution
# --------------------------------------------------------------------------------------------
def compute_tasks(
    func: Callable,
    items: Sequence[Any],
    scheduler: str | Any = "threads",
    num_workers: int | None = None,
    on_done: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Run ``func(item)`` for every item with dask, calling ``on_done(result)`` as each finishes.

    Parameters
    ----------
    scheduler : str or distributed.Client
        ``"threads"``, ``"processes"``, ``"sync"``/``"synchronous"``, a distributed scheduler
        address (``"tcp://host:8786"``) or a ``distributed.Client``.

    Returns
    -------
    list
        Results in the order of ``items``.

    Examples
    --------
    >>> compute_tasks(lambda v: v * 2, [1, 2, 3], "sync")
    [2, 4, 6]
    """
    import dask
    from dask.callbacks import Callback

    if not items:
        return []
    client = None
    if not isinstance(scheduler, str):
        client = scheduler
    elif scheduler not in ("threads", "processes", "sync", "synchronous", "single-threaded"):
        try:
            from distributed import Client
        except ImportError as exc:
            raise StitchError(
                f"scheduler {scheduler!r} looks like a distributed address, but dask.distributed "
                "is not installed (pip install 'dask[distributed]'); or use threads|processes"
            ) from exc
        client = Client(scheduler)
    if client is not None:
        from distributed import as_completed

        futures = client.map(func, list(items), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        for fut in as_completed(futures):
            results[index[fut.key]] = res = fut.result()
            if on_done is not None:
                on_done(res)
        if isinstance(scheduler, str):
            client.close()
        return results

    tasks = [dask.delayed(func, pure=False)(item) for item in items]
    keys = {t.key for t in tasks}

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, id):  # noqa: A002 - dask's signature
            if on_done is not None and key in keys:
                on_done(result)

    kwargs: dict[str, Any] = {"scheduler": "sync" if scheduler.startswith("s") else scheduler}
    if num_workers is not None and scheduler in ("threads", "processes"):
        kwargs["num_workers"] = int(num_workers)
    with _Progress():
        return list(dask.compute(*tasks, **kwargs))


# --------------------------------------------------------------------------------------------
# block tasks
# --------------------------------------------------------------------------------------------
@dataclass
class _Job:
    index: int
    core: tuple[slice, ...]
    outer: tuple[slice, ...]
    offset: int
    source: Any
    channels: bool
    predictor: Any
    window: SlidingWindow
    decode: DecodeConfig
    scratch: str
    halo_file: str | None


@dataclass
class _BlockStats:
    index: int
    ids: np.ndarray  # uint64 provisional ids present in the core
    sizes: np.ndarray  # int64 voxels of each in the core
    voxels: int
    seconds: float


def _open_scratch(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r+")


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to trim
        return None


_MALLOC_TRIM = _load_malloc_trim()


def _release_freed_memory() -> None:
    """Give memory freed by the last block back to the operating system (glibc only).

    Each block allocates and frees tens of MB of numpy/torch buffers of varying sizes; glibc
    keeps such freed heap memory, fragmented, inside the process, so without this the resident
    size grew by about the block's uint64 labels per block (~1 MB per 32x128x128 block),
    i.e. with the volume instead of the block. Costs a few ms per call.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _block_task(job: _Job) -> _BlockStats:
    t0 = time.perf_counter()
    out = predict_region(job.predictor, job.source, job.window, job.outer, channels=job.channels)
    ins, sem = decode_instances(out, job.decode)
    del out
    inner = tuple(
        slice(c.start - o.start, c.stop - o.start) for c, o in zip(job.core, job.outer, strict=True)
    )
    core = ins[inner]
    core_size = core.size
    glob = np.where(core > 0, core + np.uint64(job.offset), np.uint64(0))
    # no flush(): msync would scan the whole map (O(volume) per block); MAP_SHARED writes are
    # visible to every process through the page cache as soon as they are made
    lab = _open_scratch(job.scratch + ".instance.npy")
    lab[job.core] = glob
    semm = _open_scratch(job.scratch + ".semantic.npy")
    semm[job.core] = sem[inner]
    del lab, semm
    if job.halo_file is not None:
        halo = ins[_halo_mask(job.outer, job.core)]
        _atomic_save(job.halo_file, halo.astype(np.uint32) if ins.size < 2**32 else halo)
    ids, sizes = np.unique(glob[glob > 0], return_counts=True)
    del ins, sem, core, glob
    _release_freed_memory()
    return _BlockStats(
        job.index, ids, sizes.astype(np.int64), int(core_size), time.perf_counter() - t0
    )


def _atomic_save(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


@dataclass
class _MatchJob:
    core: tuple[slice, ...]
    outer: tuple[slice, ...]
    offset: int
    scratch: str
    halo_file: str
    block: tuple[int, ...]
    counts: tuple[int, ...]


def match_pairs(
    a: np.ndarray, b: np.ndarray, threshold: float = 0.5, groups: np.ndarray | None = None
) -> np.ndarray:
    """Pairs of ids ``(a_id, b_id)`` whose voxels overlap with IoU >= ``threshold``.

    ``a`` and ``b`` are two labellings of the same voxels (e.g. one block's halo and what its
    neighbours wrote there); 0 is background. With ``groups`` (e.g. which neighbour block each
    voxel belongs to), the IoU of a pair is computed inside the group of its voxels, so an
    object of ``a`` spreading over several neighbours still matches each of them.
    Vectorised (sorts), no table indexed by ids.

    Returns
    -------
    numpy.ndarray
        uint64 ``(M, 2)``.

    Examples
    --------
    >>> match_pairs(np.array([1, 1, 1, 2]), np.array([7, 7, 0, 9])).tolist()
    [[1, 7], [2, 9]]
    """
    a = np.asarray(a).ravel().astype(np.uint64, copy=False)
    b = np.asarray(b).ravel().astype(np.uint64, copy=False)
    g = (
        np.zeros(a.shape, np.uint64)
        if groups is None
        else np.asarray(groups).ravel().astype(np.uint64)
    )
    if not a.shape == b.shape == g.shape:
        raise StitchError(f"match_pairs: labellings differ in size ({a.size}, {b.size}, {g.size})")
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), dtype=np.uint64)
    # compact codes (ranks) instead of raw ids, so each combination is one int64 key
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib, cb = np.unique(b, return_inverse=True, return_counts=True)
    ug, ig = np.unique(g, return_inverse=True)
    ng = np.int64(ug.size)
    ag_key = ia.astype(np.int64) * ng + ig
    uag, cag = np.unique(ag_key, return_counts=True)
    trip_key = (ia[both].astype(np.int64) * np.int64(ub.size) + ib[both]) * ng + ig[both]
    ut, nab = np.unique(trip_key, return_counts=True)
    ta, rest = np.divmod(ut, np.int64(ub.size) * ng)
    tb, tg = np.divmod(rest, ng)
    na = cag[np.searchsorted(uag, ta * ng + tg)]
    nb = cb[tb]
    keep = nab / (na + nb - nab) >= threshold
    return np.stack([ua[ta[keep]], ub[tb[keep]]], axis=1).astype(np.uint64)


def _match_task(job: _MatchJob, threshold: float) -> np.ndarray:
    local = np.load(job.halo_file).astype(np.uint64)
    a = np.where(local > 0, local + np.uint64(job.offset), np.uint64(0))
    halo = _halo_mask(job.outer, job.core)
    lab = np.load(job.scratch + ".instance.npy", mmap_mode="r")
    b = np.asarray(lab[job.outer])[halo]
    del lab
    # which neighbour block each halo voxel belongs to (linear block index)
    coords = np.nonzero(halo)
    group = np.zeros(b.shape, dtype=np.int64)
    for c, o, blk, n in zip(coords, job.outer, job.block, job.counts, strict=True):
        group = group * n + (c + o.start) // blk
    pairs = match_pairs(a, b, threshold, group)
    del a, b, group, coords
    _release_freed_memory()
    return pairs


def union_find_lut(
    ids: np.ndarray, sizes: np.ndarray, edges: np.ndarray, min_size: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge provisional ids along ``edges`` and number the merged objects ``1..K``.

    Parameters
    ----------
    ids : uint64 array
        Provisional ids (any values, unsorted, may repeat across blocks).
    sizes : int array
        Voxel count of each entry of ``ids`` (summed per id).
    edges : uint64 array (M, 2)
        Pairs of provisional ids that are the same object.
    min_size : int
        Merged objects with fewer voxels become 0.

    Returns
    -------
    (keys, values, K)
        Sorted unique provisional ids, their final ids (uint64, 0 = removed) and the count.

    Examples
    --------
    >>> k, v, n = union_find_lut(np.array([5, 9, 11]), np.array([3, 3, 1]), np.array([[5, 11]]))
    >>> v.tolist(), n
    ([1, 2, 1], 2)
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = np.asarray(ids, dtype=np.uint64)
    keys, inv = np.unique(ids, return_inverse=True)
    n = keys.size
    tot = np.bincount(inv, weights=np.asarray(sizes, dtype=np.float64), minlength=n)
    edges = np.asarray(edges, dtype=np.uint64).reshape(-1, 2)
    ei = np.searchsorted(keys, edges[:, 0]) if n else np.zeros(0, np.int64)
    ej = np.searchsorted(keys, edges[:, 1]) if n else np.zeros(0, np.int64)
    ok = (ei < n) & (ej < n)
    ok[ok] &= (keys[ei[ok]] == edges[ok, 0]) & (keys[ej[ok]] == edges[ok, 1])
    graph = coo_matrix((np.ones(int(ok.sum()), np.int8), (ei[ok], ej[ok])), shape=(n, n))
    ncomp, comp = connected_components(graph, directed=False)
    comp_size = np.bincount(comp, weights=tot, minlength=ncomp)
    keep = comp_size >= max(min_size, 1)
    # number kept components in order of their smallest provisional id (deterministic)
    first = np.full(ncomp, n, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n))
    order = np.argsort(first, kind="stable")
    final = np.zeros(ncomp, dtype=np.uint64)
    kept = order[keep[order]]
    final[kept] = np.arange(1, kept.size + 1, dtype=np.uint64)
    return keys, final[comp], int(kept.size)


def _apply_lut(block: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(block.shape, dtype=np.uint64)
    fg = block > 0
    if keys.size and fg.any():
        v = block[fg]
        idx = np.minimum(np.searchsorted(keys, v), keys.size - 1)
        out[fg] = np.where(keys[idx] == v, values[idx], np.uint64(0))
    return out


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------
@dataclass
class SegmentationResult:
    """What :func:`segment_blockwise` produced.

    ``instance``/``semantic`` are arrays when no output path was given, else ``None``;
    ``output`` is the written file; ``timings`` has seconds per phase.
    """

    instance: np.ndarray | None
    semantic: np.ndarray | None
    output: Path | None
    num_objects: int
    num_blocks: int
    voxels: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / max(self.seconds, 1e-9)


@contextlib.contextmanager
def _scratch_dir(near: Path | None) -> Iterator[Path]:
    parent = near.parent if near is not None else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    name = f".{near.name}.neurons-infer-" if near is not None else "neurons-infer-"
    d = Path(tempfile.mkdtemp(prefix=name, dir=parent))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _slabs(
    path: str, keys: np.ndarray | None, values: np.ndarray | None, planes: int
) -> Iterator[np.ndarray]:
    # plain reads, not a memory map: pages of a whole-volume map stay resident in (and are
    # counted against) this process while it walks the file, so memory would grow with the volume
    with open(path, "rb") as f:
        fmt = np.lib.format
        version = fmt.read_magic(f)
        header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = header(f)
        if fortran:
            raise StitchError(f"{path}: scratch array is Fortran-ordered")
        plane = int(np.prod(shape[1:], dtype=np.int64))
        for z in range(0, shape[0], planes):
            n = min(planes, shape[0] - z)
            block = np.fromfile(f, dtype=dtype, count=n * plane).reshape(n, *shape[1:])
            yield _apply_lut(block, keys, values) if keys is not None else block


def segment_blockwise(
    predictor: Callable,
    source: Any,
    window: SlidingWindow,
    decode: DecodeConfig | None = None,
    *,
    block_size: int | Sequence[int] = 256,
    overlap: int | Sequence[int] = 16,
    output: str | os.PathLike | None = None,
    out_key: str = "segmentation",
    semantic_key: str | None = "semantic",
    channels: bool = False,
    scheduler: str | Any = "threads",
    num_workers: int | None = None,
    match_threshold: float = 0.5,
    min_size: int | None = None,
    voxel_size: Sequence[float] | None = None,
    compression: str | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> SegmentationResult:
    """Segment ``source`` block by block; ids are consistent across blocks.

    Memory per worker is about ``(block + 2 * halo + window)`` voxels times
    ``4 B * (5 + emb_dim) + ~40 B`` (blended outputs + decoding), independent of the volume;
    e.g. ~0.5 GB for blocks of 32 x 256 x 256 with a 16-channel embedding.

    Parameters
    ----------
    predictor : callable
        Tensor ``(B, C, *window)`` -> dict of output tensors; for ``processes``/distributed
        schedulers it must be picklable (use :class:`Predictor`).
    source : array-like or neurons.io Volume
        ``(*spatial)`` (or ``(C, *spatial)`` with ``channels=True``); only the regions a block
        needs are read.
    window : SlidingWindow
        Sliding-window settings (the window grid is global).
    decode : DecodeConfig, optional
        Decoder settings; its ``min_size`` is applied *globally* after stitching.
    block_size, overlap : int or sequence of int
        Core size of a block and its halo (voxels) per axis.
    output : path, optional
        Where to write (``.h5``, ``.zarr``, ...; ``"file.h5:key"`` allowed). ``None`` returns
        arrays instead (the scratch space is still on disk, in the temp folder).
    out_key, semantic_key : str
        Keys of the instance (uint64) and semantic (uint8) arrays; ``semantic_key=None`` skips
        the semantic map.
    scheduler : str or distributed.Client
        ``threads``, ``processes``, ``sync`` or a distributed address.
    match_threshold : float
        IoU in the halo above which two blocks' objects are merged.
    min_size : int, optional
        Remove objects smaller than this (global sizes); default ``decode.min_size``.
    progress : callable, optional
        Called as ``progress(blocks_done, blocks_total, voxels_done)``.

    Returns
    -------
    SegmentationResult

    Examples
    --------
    >>> import torch
    >>> sw = SlidingWindow(window=(16, 16))
    >>> res = segment_blockwise(lambda x: {"semantic": torch.cat([1 - x, x], 1) * 10},
    ...                         np.zeros((40, 30), np.uint8), sw, block_size=16, scheduler="sync")
    >>> res.instance.shape, res.num_blocks
    ((40, 30), 6)
    """
    decode = decode or DecodeConfig()
    min_size = decode.min_size if min_size is None else int(min_size)
    block_decode = replace(decode, min_size=0)
    shape = tuple(int(s) for s in (source.shape[1:] if channels else source.shape))
    ndim = len(shape)
    if ndim != window.ndim:
        raise StitchError(
            f"volume shape {shape} has {ndim} spatial axes, window {window.window} has {window.ndim}"
        )
    grid = BlockGrid(
        shape, _tuple(block_size, ndim, "block_size"), _tuple(overlap, ndim, "overlap")
    )
    id_stride = int(np.prod([b + 2 * o for b, o in zip(grid.block, grid.overlap, strict=True)])) + 1
    if id_stride * len(grid) >= 2**63:
        raise StitchError(
            f"{len(grid)} blocks of {grid.block} voxels overflow uint64 ids; use larger blocks"
        )
    out_path = None
    if output is not None:
        from neurons.io import split_key

        out_path, key = split_key(output)
        out_key = key or out_key
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    with _scratch_dir(out_path) as scratch_dir:
        scratch = str(scratch_dir / "labels")
        np.lib.format.open_memmap(
            scratch + ".instance.npy", mode="w+", dtype=np.uint64, shape=shape
        )
        np.lib.format.open_memmap(scratch + ".semantic.npy", mode="w+", dtype=np.uint8, shape=shape)
        has_halo = any(o > 0 for o in grid.overlap) and len(grid) > 1
        jobs = [
            _Job(
                index=i,
                core=grid.core(i),
                outer=grid.outer(i),
                offset=i * id_stride,
                source=source,
                channels=channels,
                predictor=predictor,
                window=window,
                decode=block_decode,
                scratch=scratch,
                halo_file=str(scratch_dir / f"halo_{i}.npy") if has_halo else None,
            )
            for i in range(len(grid))
        ]
        done = [0, 0]

        def _on_block(stats: _BlockStats) -> None:
            done[0] += 1
            done[1] += stats.voxels
            if progress is not None:
                progress(done[0], len(grid), done[1])

        t0 = time.perf_counter()
        stats = compute_tasks(_block_task, jobs, scheduler, num_workers, _on_block)
        timings["blocks"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        edges = np.zeros((0, 2), dtype=np.uint64)
        if has_halo:
            mjobs = [
                _MatchJob(j.core, j.outer, j.offset, scratch, j.halo_file, grid.block, grid.counts)
                for j in jobs
            ]
            pairs = compute_tasks(_MatchRunner(match_threshold), mjobs, scheduler, num_workers)
            edges = np.concatenate([edges, *pairs]) if pairs else edges
        ids = np.concatenate([s.ids for s in stats]) if stats else np.zeros(0, np.uint64)
        sizes = np.concatenate([s.sizes for s in stats]) if stats else np.zeros(0, np.int64)
        keys, values, nobj = union_find_lut(ids, sizes, edges, min_size)
        timings["match"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        # slabs of the relabel pass hold about one block's worth of voxels
        planes = max(1, min(shape[0], int(np.prod(grid.block)) // max(1, int(np.prod(shape[1:])))))
        instance = semantic = None
        if out_path is not None:
            from neurons.io import write_blocks

            arrays = [(out_key, np.uint64, _slabs(scratch + ".instance.npy", keys, values, planes))]
            if semantic_key:
                arrays.append(
                    (semantic_key, np.uint8, _slabs(scratch + ".semantic.npy", None, None, planes))
                )
            for key, dtype, slabs in arrays:
                write_blocks(
                    out_path,
                    shape,
                    dtype,
                    slabs,
                    key=key,
                    voxel_size=voxel_size,
                    compression=compression,
                )
        else:
            instance = np.concatenate(list(_slabs(scratch + ".instance.npy", keys, values, planes)))
            semantic = np.load(scratch + ".semantic.npy")
        timings["relabel"] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    return SegmentationResult(
        instance=instance,
        semantic=semantic,
        output=out_path,
        num_objects=nobj,
        num_blocks=len(grid),
        voxels=int(np.prod(shape)),
        seconds=total,
        timings=timings,
    )


@dataclass
class _MatchRunner:
    threshold: float

    def __call__(self, job: _MatchJob) -> np.ndarray:
        return _match_task(job, self.threshold)


def segment_volume(
    predictor: Callable,
    volume: Any,
    window: SlidingWindow,
    decode: DecodeConfig | None = None,
    *,
    channels: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-volume (single block, in memory) prediction and decoding.

    Returns
    -------
    (instance, semantic)
        uint64 ids and uint8 classes, like :func:`~.decode.decode_instances`.

    Examples
    --------
    >>> import torch
    >>> ins, sem = segment_volume(lambda x: {"semantic": torch.cat([1 - x, x], 1) * 10},
    ...                           np.full((8, 8), 255, np.uint8), SlidingWindow(window=(8, 8)))
    >>> int(ins.max())
    1
    """
    out = predict_region(predictor, volume, window, None, channels=channels)
    return decode_instances(out, decode)
