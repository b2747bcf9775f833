"""Block-wise inference on a ``dask.distributed`` cluster over a shared Zarr store, resumable.

The same steps as :func:`~.stitch.segment_blockwise`, as tasks on the cluster:

1. **blocks**: each worker reads its block (core + halo + window context) lazily through
   ``neurons.io``, predicts it with the global window grid (the model is loaded by the worker
   from the checkpoint path, once per process), decodes it with :func:`~.decode.decode_instances`
   and writes the core's provisional ids (block offset added), the semantic classes and,
   optionally, the blended predictions into the job's Zarr store, whose chunks are the blocks
   (one writer per chunk). Its halo labels and id sizes go to a small file next to the store.
2. **match**: each block compares its halo labels with what its neighbours wrote there.
3. **union-find** on the client (ids and edges only), then **relabel**: each block maps its own
   chunk through the slice of the lookup table that covers its id range.
4. The store gets OME-NGFF metadata and is renamed onto the output.

A manifest next to the output records finished blocks per phase; running the same job again
skips them. A worker killed mid-task is retried by the scheduler (tasks are idempotent: they
rewrite whole chunks); a block that fails for good fails the job with its coordinates.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .blocks import BlockGrid, halo_mask, inner_box
from .chunked_store import (
    create_arrays,
    finalize_store,
    publish,
    read_region,
    remove_array,
    write_region,
)
from .decode import DecodeConfig, decode_instances
from .errors import StitchError
from .manifest import Manifest, fingerprint, manifest_path
from .matching import match_halo
from .predictor import Predictor
from .relabel import apply_lut, lut_slice, union_find_lut
from .scheduling import connect
from .scratch import atomic_save, release_freed_memory
from .sliding import SlidingWindow, predict_region
from .stitch import SegmentationResult, plan_blocks

__all__ = ["PROVISIONAL_KEY", "segment_distributed"]

#: scratch array of provisional (per-block) ids inside the job's store; removed when done
PROVISIONAL_KEY = "_provisional"


# --------------------------------------------------------------------------------------------
# tasks (run on workers; arguments are small and picklable, data moves through the store)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Block:
    index: int
    core: tuple[slice, ...]
    outer: tuple[slice, ...]
    offset: int
    store: str
    work: str

    def file(self, kind: str) -> str:
        return os.path.join(self.work, f"{kind}_{self.index}.npy")


@dataclass(frozen=True)
class _Settings:
    window: SlidingWindow
    decode: DecodeConfig
    channels: bool
    semantic_key: str | None
    predictions_key: str | None
    has_halo: bool


def _block_task(b: _Block, s: _Settings, source: Any, predictor: Callable) -> tuple:
    t0 = time.perf_counter()
    out = predict_region(predictor, source, s.window, b.outer, channels=s.channels)
    inner = inner_box(b.core, b.outer)
    if s.predictions_key:
        for name, value in out.items():
            box = (slice(None), *b.core)
            write_region(b.store, f"{s.predictions_key}/{name}", box, value[(slice(None), *inner)])
    ins, sem = decode_instances(out, s.decode)
    del out
    core = ins[inner]
    glob = np.where(core > 0, core + np.uint64(b.offset), np.uint64(0))
    write_region(b.store, PROVISIONAL_KEY, b.core, glob)
    if s.semantic_key:
        write_region(b.store, s.semantic_key, b.core, sem[inner])
    ids, sizes = np.unique(glob[glob > 0], return_counts=True)
    halo = ins[halo_mask(b.outer, b.core)] if s.has_halo else np.zeros(0, np.uint64)
    atomic_save(b.file("halo"), halo)
    atomic_save(b.file("ids"), np.stack([ids, sizes.astype(np.uint64)]))
    voxels = int(core.size)
    del ins, sem, core, glob, halo
    release_freed_memory()
    return ids, sizes.astype(np.int64), voxels, time.perf_counter() - t0


def _match_task(b: _Block, grid: BlockGrid, threshold: float) -> np.ndarray:
    neighbours = read_region(b.store, PROVISIONAL_KEY, b.outer)
    pairs = match_halo(
        np.load(b.file("halo")), b.offset, neighbours, b.core, b.outer, grid.block,
        grid.counts, threshold,
    )  # fmt: skip
    atomic_save(b.file("pairs"), pairs)
    del neighbours
    release_freed_memory()
    return pairs


def _relabel_task(b: _Block, out_key: str, keys: np.ndarray, values: np.ndarray) -> int:
    ids = read_region(b.store, PROVISIONAL_KEY, b.core)
    write_region(b.store, out_key, b.core, apply_lut(ids, keys, values))
    return b.index


def _probe_task(source: Any, predictor: Callable, window: SlidingWindow, channels: bool) -> dict:
    shape = source.shape[1:] if channels else source.shape
    region = tuple(slice(0, min(int(w), int(n))) for w, n in zip(window.window, shape, strict=True))
    out = predict_region(predictor, source, window, region, channels=channels)
    return {k: int(v.shape[0]) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# client side
# --------------------------------------------------------------------------------------------
def _identity(obj: Any) -> Any:
    """What identifies a predictor or a source across processes (for the job fingerprint)."""
    if isinstance(obj, Predictor) and obj.checkpoint is not None:
        p = Path(obj.checkpoint)
        st = p.stat() if p.exists() else None
        return {
            "checkpoint": str(p.resolve()),
            "size": st.st_size if st else None,
            "mtime_ns": st.st_mtime_ns if st else None,
            "planewise": obj.planewise,
        }
    if hasattr(obj, "path") and hasattr(obj, "format") and hasattr(obj, "key"):  # neurons.io
        p = Path(obj.path)
        return {"path": str(p.resolve()), "key": obj.key, "mtime_ns": p.stat().st_mtime_ns}
    if isinstance(obj, np.ndarray):
        return {"array": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()}
    model = obj.model if isinstance(obj, Predictor) else obj
    if hasattr(model, "state_dict"):  # torch module: its class and weights
        h = hashlib.sha256()
        for k, v in model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        return {"module": kind, "weights": h.hexdigest(), "planewise": getattr(obj, "planewise", 0)}
    try:
        import cloudpickle

        return {"pickle": hashlib.sha256(cloudpickle.dumps(obj)).hexdigest()}
    except (pickle.PicklingError, TypeError, AttributeError):
        return {"type": f"{type(obj).__module__}.{type(obj).__qualname__}"}


def _box(box: Sequence[slice]) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in box) + "]"


def _run_phase(
    client: Any,
    manifest: Manifest,
    phase: str,
    fn: Callable,
    calls: Mapping[int, tuple],
    blocks: Sequence[_Block],
    retries: int,
    on_result: Callable[[int, Any], None] | None = None,
) -> None:
    """Submit ``fn(*calls[i])`` per pending block, record each finished one in the manifest."""
    from distributed import as_completed

    if not calls:
        return
    token = manifest.fingerprint[:16]
    futures = {
        client.submit(fn, *args, key=f"neurons-{phase}-{token}-{i}", retries=retries): i
        for i, args in calls.items()
    }
    try:
        for fut in as_completed(list(futures)):
            i = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:
                b = blocks[i]
                raise StitchError(
                    f"{phase} task of block {i} (core {_box(b.core)}, outer {_box(b.outer)}) "
                    f"failed for good (after {retries} retries): {type(exc).__name__}: {exc}; "
                    f"finished blocks are recorded in {manifest.path}"
                ) from exc
            if on_result is not None:
                on_result(i, res)
            manifest.mark(phase, i)
            manifest.save(force=False)
            fut.release()
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        manifest.save()


def _load_stats(work: Path, i: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        both = np.load(work / f"ids_{i}.npy")
    except (OSError, ValueError):
        return None
    return both[0], both[1].astype(np.int64)


def _output_path(output: str | os.PathLike, out_key: str, source: Any) -> tuple[Path, str]:
    from neurons.io import split_key

    path, key = split_key(output)
    if path.suffix.lower() != ".zarr":
        raise StitchError(
            f"{output}: distributed inference writes a Zarr store every worker can reach; give an "
            "output ending in .zarr (convert afterwards with neurons-io convert if needed)"
        )
    src = getattr(source, "path", None)
    if src is not None and Path(src).resolve() == path.resolve():
        raise StitchError(
            f"{output}: the output would replace the input {src}; choose another path"
        )
    return path, key or out_key


def segment_distributed(
    client: Any,
    predictor: Callable,
    source: Any,
    window: SlidingWindow,
    decode: DecodeConfig | None = None,
    *,
    output: str | os.PathLike,
    out_key: str = "segmentation",
    semantic_key: str | None = "semantic",
    predictions_key: str | None = None,
    source_key: str | None = None,
    block_size: int | Sequence[int] = 256,
    overlap: int | Sequence[int] = 16,
    channels: bool = False,
    match_threshold: float = 0.5,
    min_size: int | None = None,
    voxel_size: Sequence[float] | None = None,
    compression: str | None = None,
    retries: int = 2,
    progress: Callable[[int, int, int], None] | None = None,
) -> SegmentationResult:
    """Segment ``source`` block by block on a ``dask.distributed`` cluster into a Zarr store.

    Parameters
    ----------
    client : distributed.Client or str
        A client, or a scheduler address (``"tcp://host:8786"``).
    predictor : callable
        :class:`~.predictor.Predictor` (``Predictor(checkpoint=path)`` makes each worker load
        the model itself) or any picklable ``tensor -> dict of tensors``.
    source : path, neurons.io Volume or array
        Raw volume; a path (``"raw.h5:raw"``) or Volume is read lazily by the workers (it must
        be reachable from them); an array is shipped with every task (small inputs only).
    window : SlidingWindow
        Sliding-window settings (global window grid: blockwise equals whole-volume prediction).
    decode : DecodeConfig, optional
        Decoder settings (any decoder of :func:`~.decode.decode_instances`); ``min_size`` is
        applied globally after stitching.
    output : path
        Zarr store (``seg.zarr``; ``seg.zarr:key`` names the instance array). Built at a hidden
        sibling and renamed onto ``output`` when complete; ``<output>.manifest.json`` records
        progress, so running the same call again resumes.
    out_key, semantic_key, predictions_key : str or None
        Arrays: uint64 instances, uint8 classes (``None`` skips), float32 blended predictions
        under ``<predictions_key>/<output name>`` with shape ``(K, *spatial)`` (``None`` skips).
    block_size, overlap : int or sequence of int
        Block core (= chunk) size and halo, per axis.
    match_threshold, min_size, voxel_size, compression
        As for :func:`~.stitch.segment_blockwise`; ``compression`` is a Zarr codec
        (``zstd``, ``gzip``, ``blosc``, ``none``; default zarr's).
    retries : int
        Extra attempts of a task that raised; worker deaths are retried by the scheduler
        (``distributed.scheduler.allowed-failures``).
    progress : callable, optional
        ``progress(blocks_done, blocks_total, voxels_done)`` during the block phase.

    Returns
    -------
    SegmentationResult
        ``output`` set, arrays ``None``; ``skipped_blocks`` counts blocks a resumed run found done.

    Raises
    ------
    StitchError
        Bad geometry or output, an unreachable scheduler, or a block that failed for good
        (message names the block's coordinates).

    Examples
    --------
    >>> from distributed import Client  # doctest: +SKIP
    >>> res = segment_distributed(Client("tcp://10.0.0.1:8786"), Predictor(checkpoint="last.ckpt"),
    ...                           "raw.zarr:raw", SlidingWindow(window=(16, 128, 128)),
    ...                           output="seg.zarr", block_size=(64, 256, 256))  # doctest: +SKIP
    """
    from neurons.io import open_volume

    if isinstance(client, str):
        client = connect(client)
        try:
            return segment_distributed(
                client, predictor, source, window, decode, output=output, out_key=out_key,
                semantic_key=semantic_key, predictions_key=predictions_key,
                source_key=source_key, block_size=block_size, overlap=overlap,
                channels=channels, match_threshold=match_threshold, min_size=min_size,
                voxel_size=voxel_size, compression=compression, retries=retries,
                progress=progress,
            )  # fmt: skip
        finally:
            client.close()
    if isinstance(source, str | os.PathLike):
        source = open_volume(source, source_key)
    path, out_key = _output_path(output, out_key, source)
    shape, grid, block_decode, min_size = plan_blocks(
        source, window, decode, block_size, overlap, channels=channels, min_size=min_size
    )
    t_start = time.perf_counter()
    params = {
        "source": _identity(source),
        "shape": list(shape),
        "output": str(path.resolve()),
        "keys": [out_key, semantic_key, predictions_key],
        "block": list(grid.block),
        "overlap": list(grid.overlap),
        "window": repr(window),
        "decode": repr(block_decode),
        "predictor": _identity(predictor),
        "match_threshold": float(match_threshold),
        "min_size": int(min_size),
        "channels": bool(channels),
        "compression": compression,
    }
    manifest, resumed = Manifest.load_or_new(manifest_path(path), fingerprint(params), params)
    partial = path.parent / f".{path.name}.partial"
    work = path.parent / f".{path.name}.work"
    n = len(grid)
    result = SegmentationResult(None, None, path, 0, n, int(np.prod(shape)), 0.0, {}, 0)
    if resumed and manifest.status == "complete" and path.exists():
        result.num_objects = int(manifest.info.get("num_objects", 0))
        result.skipped_blocks = n
        result.seconds = time.perf_counter() - t_start
        return result
    if not resumed:
        for d in (partial, work):
            shutil.rmtree(d, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    blocks = [
        _Block(i, grid.core(i), grid.outer(i), i * grid.id_stride, str(partial), str(work))
        for i in range(n)
    ]
    arrays: dict[str, tuple] = {
        PROVISIONAL_KEY: (shape, np.uint64, grid.block),
        out_key: (shape, np.uint64, grid.block),
    }
    if semantic_key:
        arrays[semantic_key] = (shape, np.uint8, grid.block)
    if predictions_key:
        if "prediction_channels" not in manifest.info:
            fut = client.submit(_probe_task, source, predictor, window, channels, pure=False)
            manifest.info["prediction_channels"] = fut.result()
        for name, k in manifest.info["prediction_channels"].items():
            arrays[f"{predictions_key}/{name}"] = ((k, *shape), np.float32, (k, *grid.block))
    # killed between publishing the store and recording it: only the bookkeeping is left
    finished = (
        resumed and len(manifest.done["relabel"]) == n and not partial.exists() and path.exists()
    )
    if not finished:
        create_arrays(partial, arrays, compression)
    manifest.save()

    # phase 1: predict + decode each block
    ids: dict[int, np.ndarray] = {}
    sizes: dict[int, np.ndarray] = {}
    for i in list(manifest.done["blocks"]):
        st = _load_stats(work, i)
        if st is None:
            manifest.done["blocks"].discard(i)
        else:
            ids[i], sizes[i] = st
    result.skipped_blocks = len(ids)
    voxels = [sum(int(np.prod([s.stop - s.start for s in blocks[i].core])) for i in ids)]

    def on_block(i: int, res: tuple) -> None:
        ids[i], sizes[i], v, _ = res
        voxels[0] += v
        if progress is not None:
            progress(len(ids), n, voxels[0])

    settings = _Settings(
        window, block_decode, channels, semantic_key, predictions_key, grid.has_halo
    )
    t0 = time.perf_counter()
    pending = manifest.pending("blocks", range(n)) if not finished else []
    calls = {i: (blocks[i], settings, source, predictor) for i in pending}
    _run_phase(client, manifest, "blocks", _block_task, calls, blocks, retries, on_block)
    result.timings["blocks"] = time.perf_counter() - t0

    # phase 2: halo matching, then union-find on the client
    t0 = time.perf_counter()
    edges: dict[int, np.ndarray] = {}
    if grid.has_halo and not finished:
        for i in list(manifest.done["match"]):
            try:
                edges[i] = np.load(work / f"pairs_{i}.npy")
            except (OSError, ValueError):
                manifest.done["match"].discard(i)
        calls = {
            i: (blocks[i], grid, float(match_threshold))
            for i in manifest.pending("match", range(n))
        }
        _run_phase(
            client, manifest, "match", _match_task, calls, blocks, retries, edges.__setitem__
        )
    all_ids = np.concatenate([ids[i] for i in sorted(ids)]) if ids else np.zeros(0, np.uint64)
    all_sizes = np.concatenate([sizes[i] for i in sorted(sizes)]) if sizes else np.zeros(0)
    all_edges = (
        np.concatenate([edges[i] for i in sorted(edges)]) if edges else np.zeros((0, 2), np.uint64)
    )
    keys, values, result.num_objects = union_find_lut(all_ids, all_sizes, all_edges, min_size)
    result.timings["match"] = time.perf_counter() - t0

    # phase 3: relabel each chunk with its slice of the lookup table, then publish
    t0 = time.perf_counter()
    stride = grid.id_stride
    calls = {
        i: (blocks[i], out_key, *lut_slice(keys, values, i * stride, (i + 1) * stride))
        for i in (manifest.pending("relabel", range(n)) if not finished else [])
    }
    _run_phase(client, manifest, "relabel", _relabel_task, calls, blocks, retries)
    if not finished:
        remove_array(partial, PROVISIONAL_KEY)
        names = [out_key, *([semantic_key] if semantic_key else [])]
        names += [f"{predictions_key}/{k}" for k in manifest.info.get("prediction_channels", {})]
        finalize_store(partial, names, voxel_size)
        publish(partial, path)
    manifest.status = "complete"
    manifest.info["num_objects"] = result.num_objects
    manifest.save()
    shutil.rmtree(work, ignore_errors=True)
    result.timings["relabel"] = time.perf_counter() - t0
    result.seconds = time.perf_counter() - t_start
    return result
