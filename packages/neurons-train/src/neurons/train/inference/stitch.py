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

This module orchestrates; each concern has its own module: :mod:`.blocks` (geometry),
:mod:`.predictor`, :mod:`.scheduling` (dask), :mod:`.scratch` (node-local memory maps),
:mod:`.matching` (halo IoU), :mod:`.relabel` (union-find, lookup tables). The same steps run on a
``dask.distributed`` cluster over a shared Zarr store in :mod:`.distributed`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .blocks import BlockGrid, as_axis_tuple, halo_mask, inner_box
from .decode import DecodeConfig, decode_instances
from .errors import StitchError
from .matching import match_halo, match_pairs
from .predictor import Predictor
from .relabel import union_find_lut
from .scheduling import LOCAL_SCHEDULERS, compute_tasks
from .scratch import atomic_save, open_scratch, release_freed_memory, scratch_dir, slabs
from .sliding import SlidingWindow, predict_region

__all__ = [
    "BlockGrid",
    "Predictor",
    "SegmentationResult",
    "compute_tasks",
    "match_pairs",
    "segment_blockwise",
    "segment_volume",
    "union_find_lut",
]


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


def _block_task(job: _Job) -> _BlockStats:
    t0 = time.perf_counter()
    out = predict_region(job.predictor, job.source, job.window, job.outer, channels=job.channels)
    ins, sem = decode_instances(out, job.decode)
    del out
    inner = inner_box(job.core, job.outer)
    core = ins[inner]
    core_size = core.size
    glob = np.where(core > 0, core + np.uint64(job.offset), np.uint64(0))
    # no flush(): msync would scan the whole map (O(volume) per block); MAP_SHARED writes are
    # visible to every process through the page cache as soon as they are made
    lab = open_scratch(job.scratch + ".instance.npy")
    lab[job.core] = glob
    semm = open_scratch(job.scratch + ".semantic.npy")
    semm[job.core] = sem[inner]
    del lab, semm
    if job.halo_file is not None:
        halo = ins[halo_mask(job.outer, job.core)]
        atomic_save(job.halo_file, halo.astype(np.uint32) if ins.size < 2**32 else halo)
    ids, sizes = np.unique(glob[glob > 0], return_counts=True)
    del ins, sem, core, glob
    release_freed_memory()
    return _BlockStats(
        job.index, ids, sizes.astype(np.int64), int(core_size), time.perf_counter() - t0
    )


@dataclass
class _MatchJob:
    core: tuple[slice, ...]
    outer: tuple[slice, ...]
    offset: int
    scratch: str
    halo_file: str
    block: tuple[int, ...]
    counts: tuple[int, ...]


def _match_task(job: _MatchJob, threshold: float) -> np.ndarray:
    lab = np.load(job.scratch + ".instance.npy", mmap_mode="r")
    neighbours = np.asarray(lab[job.outer])
    del lab
    pairs = match_halo(
        np.load(job.halo_file), job.offset, neighbours, job.core, job.outer, job.block,
        job.counts, threshold,
    )  # fmt: skip
    del neighbours
    release_freed_memory()
    return pairs


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
    skipped_blocks: int = 0  # blocks a resumed run found finished already (distributed path)

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / max(self.seconds, 1e-9)


def plan_blocks(
    source: Any,
    window: SlidingWindow,
    decode: DecodeConfig | None,
    block_size: int | Sequence[int],
    overlap: int | Sequence[int],
    *,
    channels: bool = False,
    min_size: int | None = None,
) -> tuple[tuple[int, ...], BlockGrid, DecodeConfig, int]:
    """Shape, block grid, per-block decoder settings and global ``min_size`` of a block-wise job.

    Objects are removed by size only after stitching (global sizes), so blocks decode with
    ``min_size=0``.
    """
    decode = decode or DecodeConfig()
    min_size = decode.min_size if min_size is None else int(min_size)
    shape = tuple(int(s) for s in (source.shape[1:] if channels else source.shape))
    ndim = len(shape)
    if ndim != window.ndim:
        raise StitchError(
            f"volume shape {shape} has {ndim} spatial axes, window {window.window} has {window.ndim}"
        )
    grid = BlockGrid(
        shape,
        as_axis_tuple(block_size, ndim, "block_size"),
        as_axis_tuple(overlap, ndim, "overlap"),
    )
    if grid.id_stride * len(grid) >= 2**63:
        raise StitchError(
            f"{len(grid)} blocks of {grid.block} voxels overflow uint64 ids; use larger blocks"
        )
    return shape, grid, replace(decode, min_size=0), min_size


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
        ``threads``, ``processes``, ``sync``, or a ``dask.distributed`` address / client: then
        the job runs on the cluster through :func:`~.distributed.segment_distributed` (output
        must be a ``.zarr`` store every worker can reach; resumable).
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
    if not isinstance(scheduler, str) or scheduler not in LOCAL_SCHEDULERS:
        # a dask.distributed cluster: blocks go to a Zarr store every worker can reach
        if output is None:
            raise StitchError(
                f"scheduler {scheduler!r} is a dask.distributed cluster: give output= a .zarr "
                "path every worker can reach (there is no node-local scratch space there)"
            )
        from .distributed import segment_distributed

        return segment_distributed(
            scheduler, predictor, source, window, decode, output=output, out_key=out_key,
            semantic_key=semantic_key, block_size=block_size, overlap=overlap,
            channels=channels, match_threshold=match_threshold, min_size=min_size,
            voxel_size=voxel_size, compression=compression, progress=progress,
        )  # fmt: skip
    shape, grid, block_decode, min_size = plan_blocks(
        source, window, decode, block_size, overlap, channels=channels, min_size=min_size
    )
    id_stride = grid.id_stride
    out_path = None
    if output is not None:
        from neurons.io import split_key

        out_path, key = split_key(output)
        out_key = key or out_key
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    with scratch_dir(out_path) as work:
        scratch = str(work / "labels")
        np.lib.format.open_memmap(
            scratch + ".instance.npy", mode="w+", dtype=np.uint64, shape=shape
        )
        np.lib.format.open_memmap(scratch + ".semantic.npy", mode="w+", dtype=np.uint8, shape=shape)
        has_halo = grid.has_halo
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
                halo_file=str(work / f"halo_{i}.npy") if has_halo else None,
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

            arrays = [(out_key, np.uint64, slabs(scratch + ".instance.npy", keys, values, planes))]
            if semantic_key:
                arrays.append(
                    (semantic_key, np.uint8, slabs(scratch + ".semantic.npy", None, None, planes))
                )
            for key, dtype, parts in arrays:
                write_blocks(
                    out_path,
                    shape,
                    dtype,
                    parts,
                    key=key,
                    voxel_size=voxel_size,
                    compression=compression,
                )
        else:
            instance = np.concatenate(list(slabs(scratch + ".instance.npy", keys, values, planes)))
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
