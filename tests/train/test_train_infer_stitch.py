"""Block-wise inference: equals whole-volume inference, one id per object across blocks,
bounded memory, dask schedulers, outputs through neurons.io."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import measure

from neurons.io import read_volume, write_volume
from neurons.train.inference import (
    BlockGrid,
    DecodeConfig,
    Predictor,
    SlidingWindow,
    StitchError,
    compute_tasks,
    match_pairs,
    predict_region,
    predict_volume,
    segment_blockwise,
    segment_volume,
    union_find_lut,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test machine is shared: OpenMP spin-waiting on busy cores slows torch ~1000x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]).astype(np.uint64), axis=1)
    if ((pairs[0] == 0) != (pairs[1] == 0)).any():
        return False
    return np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size


class ChannelModel(torch.nn.Module):
    """Channel 0 is the foreground intensity, channels 1.. the embedding (a 'perfect' model)."""

    def forward(self, x):
        logit = 20.0 * (x[:, :1] - 0.5)
        return {"semantic": torch.cat([-logit, logit], 1), "instance": x[:, 1:]}


def _voronoi_cells(shape, n, rng, membrane: bool = True) -> np.ndarray:
    """Instance volume of Voronoi cells with 1-voxel membranes (0) between them."""
    pts = np.stack([rng.integers(0, s, n) for s in shape], 1)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    d = ((grid[..., None, :] - pts) ** 2).sum(-1)
    lab = d.argmin(-1) + 1
    if membrane:
        edge = np.zeros(shape, bool)
        for ax in range(len(shape)):
            diff = np.diff(lab, axis=ax) != 0
            sl = [slice(None)] * len(shape)
            sl[ax] = slice(1, None)
            edge[tuple(sl)] |= diff
        lab[edge] = 0
    # a membrane can cut a thin corner off a cell: objects are the connected pieces
    return measure.label(lab, background=0, connectivity=1)


def _source(gt: np.ndarray, rng, dim: int = 4) -> np.ndarray:
    ids, inv = np.unique(gt, return_inverse=True)
    centres = rng.normal(size=(ids.size, dim)).astype(np.float32) * 3
    emb = np.moveaxis(centres[inv.reshape(gt.shape)], -1, 0)
    return np.concatenate([(gt > 0)[None].astype(np.float32), emb])


@pytest.mark.parametrize(
    ("shape", "block", "overlap", "window"),
    [
        ((16, 60, 52), (8, 24, 20), (2, 4, 4), (8, 16, 16)),
        ((70, 90), (32, 25), (5, 5), (16, 24)),
        ((16, 60, 52), (16, 60, 20), (0, 0, 3), (8, 16, 16)),
    ],
)
def test_blockwise_ids_consistent_across_borders(rng, shape, block, overlap, window):
    gt = _voronoi_cells(shape, 25, rng)
    src = _source(gt, rng)
    sw = SlidingWindow(window=window, overlap=0.25)
    res = segment_blockwise(
        ChannelModel(),
        src,
        sw,
        DecodeConfig(method="embedding"),
        block_size=block,
        overlap=overlap,
        channels=True,
        scheduler="sync",
    )
    assert res.num_blocks > 1
    assert res.instance.dtype == np.uint64 and res.instance.shape == shape
    # every cell crosses or touches block borders somewhere; each must keep exactly one id
    assert _same_partition(res.instance, gt)
    assert res.num_objects == len(np.unique(gt)) - 1
    np.testing.assert_array_equal(np.unique(res.instance), np.arange(res.num_objects + 1))
    whole, _ = segment_volume(
        ChannelModel(), src, sw, DecodeConfig(method="embedding"), channels=True
    )
    assert _same_partition(res.instance, whole)


def test_object_crossing_many_blocks_keeps_one_id(rng):
    gt = np.zeros((8, 30, 100), dtype=np.int64)
    gt[2:6, 10:14, 3:97] = 1  # a long neurite crossing 5 block borders along x
    gt[2:6, 20:25, 0:40] = 2
    src = _source(gt, rng)
    res = segment_blockwise(
        ChannelModel(),
        src,
        SlidingWindow(window=(8, 16, 16)),
        DecodeConfig(method="embedding"),
        block_size=(8, 30, 16),
        overlap=(0, 0, 4),
        channels=True,
        scheduler="threads",
    )
    assert res.num_objects == 2
    assert _same_partition(res.instance, gt)


class SmoothModel(torch.nn.Module):
    """A fixed conv net with a receptive field: predictions depend on the window context."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 5, padding=2, bias=False)
        torch.nn.init.constant_(self.conv.weight, 1.0 / 125)

    def forward(self, x):
        p = self.conv(x)
        logit = 30.0 * (p - 0.5)
        return {"semantic": torch.cat([-logit, logit], 1)}


def _balls(shape, spacing, radius, rng) -> np.ndarray:
    """uint8 volume of separated bright balls on a jittered grid (smoothed edges)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    fg = np.zeros(shape, bool)
    for c in itertools.product(*[range(spacing // 2, s - 2, spacing) for s in shape]):
        c = np.asarray(c) + rng.integers(-1, 2, len(shape))
        fg |= ((grid - c) ** 2).sum(-1) <= radius**2
    return (ndimage.gaussian_filter(fg.astype(np.float32), 1.0) * 255).astype(np.uint8)


def test_blockwise_equals_whole_volume_with_watershed(rng):
    vol = _balls((24, 64, 64), 12, 4, rng)
    sw = SlidingWindow(window=(8, 24, 24), overlap=0.5)
    model = SmoothModel().eval()
    dec = DecodeConfig(method="watershed", seed_threshold=0.9)
    # predictions: block regions (any tiling) == whole volume
    whole_pred = predict_volume(model, vol, sw)
    grid = BlockGrid(vol.shape, (7, 20, 30), (2, 3, 3))
    for i in range(len(grid)):
        part = predict_region(model, vol, sw, grid.outer(i))
        np.testing.assert_allclose(
            part["semantic"], whole_pred["semantic"][(slice(None), *grid.outer(i))], atol=1e-5
        )
    # segmentation: the same objects as decoding the whole volume at once (halo >= object size)
    whole, _ = segment_volume(model, vol, sw, dec)
    res = segment_blockwise(
        model, vol, sw, dec, block_size=(12, 32, 32), overlap=(10, 10, 10), scheduler="sync"
    )
    assert res.num_objects == int(whole.max()) > 20
    assert _same_partition(res.instance, whole)


def test_match_pairs_and_union_find_against_brute_force(rng):
    a = rng.integers(0, 6, 500).astype(np.uint64) + np.uint64(2**60)
    a[a == 2**60] = 0
    b = np.where(rng.random(500) < 0.8, a + np.uint64(7), rng.integers(0, 3, 500).astype(np.uint64))
    got = {tuple(p) for p in match_pairs(a, b, 0.5).tolist()}
    ref = set()
    for x in np.unique(a[a > 0]):
        for y in np.unique(b[b > 0]):
            inter = np.sum((a == x) & (b == y))
            union = np.sum((a == x) | (b == y))
            if inter and inter / union >= 0.5:
                ref.add((int(x), int(y)))
    assert got == ref and got
    ids = np.array([10, 20, 30, 40, 50, 10], dtype=np.uint64)
    sizes = np.array([1, 2, 3, 4, 100, 5])
    edges = np.array([[10, 30], [30, 40], [2**63, 10]], dtype=np.uint64)  # unknown id ignored
    keys, values, n = union_find_lut(ids, sizes, edges, min_size=3)
    lut = dict(zip(keys.tolist(), values.tolist(), strict=True))
    assert lut[10] == lut[30] == lut[40] == 1  # merged, 1 + 5 + 3 + 4 voxels
    assert lut[20] == 0  # 2 voxels < 3: removed
    assert lut[50] == 2 and n == 2


def test_outputs_written_through_neurons_io(tmp_path, rng):
    gt = _voronoi_cells((8, 40, 40), 10, rng)
    src = _source(gt, rng)
    raw_path = tmp_path / "in.npy"
    np.save(raw_path, src)
    from neurons.io import open_volume

    for name in ("seg.h5", "seg.zarr"):
        with open_volume(raw_path) as vol:
            res = segment_blockwise(
                ChannelModel(),
                vol,
                SlidingWindow(window=(8, 16, 16)),
                DecodeConfig(method="embedding"),
                block_size=(8, 16, 16),
                overlap=(0, 4, 4),
                channels=True,
                output=tmp_path / name,
                voxel_size=(40.0, 4.0, 4.0),
                scheduler="threads",
                num_workers=2,
            )
        assert res.instance is None and res.output == tmp_path / name
        ins = read_volume(tmp_path / name, "segmentation")
        sem = read_volume(tmp_path / name, "semantic")
        assert ins.dtype == np.uint64 and sem.dtype == np.uint8
        assert _same_partition(ins, gt)
        np.testing.assert_array_equal(sem, (gt > 0).astype(np.uint8))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # scratch space and temporary files are gone


def test_memory_bounded_by_block_not_volume(tmp_path, rng):
    shape = (32, 192, 192)  # whole-volume float32 probabilities 9.4 MB, uint64 ids 9.4 MB
    gt = _voronoi_cells((8, 48, 48), 12, rng, membrane=False)
    gt = np.kron(gt, np.ones((4, 4, 4), dtype=np.int64))  # cheap large volume
    raw = ((gt % 2) * 200 + 30).astype(np.uint8)
    write_volume(tmp_path / "raw.h5:raw", raw)
    del gt, raw
    from neurons.io import open_volume

    model = SmoothModel().eval()
    sw = SlidingWindow(window=(8, 32, 32), overlap=0.25)
    dec = DecodeConfig(method="watershed", seed_threshold=0.8)
    kwargs = dict(block_size=(16, 48, 48), overlap=(2, 4, 4), scheduler="sync")
    # warm-up on a small volume: first-use imports (dask, h5py internals) are not block memory
    segment_blockwise(model, np.zeros((16, 64, 64), np.uint8), sw, dec, **kwargs)
    vol_bytes = int(np.prod(shape)) * 8  # the uint64 segmentation of the whole volume
    with open_volume(tmp_path / "raw.h5", "raw") as vol:
        tracemalloc.start()
        res = segment_blockwise(model, vol, sw, dec, output=tmp_path / "seg.h5", **kwargs)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert res.num_blocks == 2 * 4 * 4
    assert peak < 0.5 * vol_bytes, (
        f"peak {peak / 2**20:.1f} MiB vs volume labels {vol_bytes / 2**20:.1f} MiB"
    )
    assert read_volume(tmp_path / "seg.h5", "segmentation").shape == shape


@pytest.mark.slow
def test_processes_scheduler_with_picklable_predictor(rng):
    # worker processes cannot import this test module (pytest's importlib mode gives it a
    # name that is not on sys.path), so its model class travels by value
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    gt = _voronoi_cells((8, 40, 40), 10, rng)
    src = _source(gt, rng)
    res = segment_blockwise(
        Predictor(model=ChannelModel()),
        src,
        SlidingWindow(window=(8, 16, 16)),
        DecodeConfig(method="embedding"),
        block_size=(8, 20, 20),
        overlap=(0, 4, 4),
        channels=True,
        scheduler="processes",
        num_workers=2,
    )
    assert _same_partition(res.instance, gt)


def test_compute_tasks_progress_and_errors():
    seen = []
    out = compute_tasks(lambda v: v * v, [1, 2, 3], "threads", 2, seen.append)
    assert out == [1, 4, 9] and sorted(seen) == [1, 4, 9]
    import dask

    # no scheduler listens on port 1: a typed error naming the address, not a bare OSError
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(StitchError, match="127.0.0.1:1") as err:
            compute_tasks(lambda v: v, [1], "tcp://127.0.0.1:1")
    assert "dask.distributed" in str(err.value)  # unreachable, or not installed
    with pytest.raises(StitchError, match="block"):
        BlockGrid((10, 10), (0, 4), (1, 1))



_USS_CHILD = r"""
import json, sys, threading, time
import numpy as np, psutil, torch
from neurons.io import open_volume
from neurons.train.inference import DecodeConfig, SlidingWindow, segment_blockwise

torch.set_num_threads(1)

class Smooth(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False)
        torch.nn.init.constant_(self.conv.weight, 1.0 / 27)
    def forward(self, x):
        logit = 30.0 * (self.conv(x) - 0.5)
        return {"semantic": torch.cat([-logit, logit], 1)}

model = Smooth().eval()
sw = SlidingWindow(window=(8, 64, 64), overlap=0.25)
dec = DecodeConfig(method="watershed", seed_threshold=0.8)
kw = dict(block_size=(16, 96, 96), overlap=(2, 8, 8), scheduler="sync")
segment_blockwise(model, np.zeros((16, 96, 96), np.uint8), sw, dec, **kw)  # warm-up
proc = psutil.Process()
base = proc.memory_full_info().uss  # private memory: heap, torch, numpy, touched mapped pages
out = []
for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):
    peak, done = [base], threading.Event()
    def sample():
        while not done.wait(0.01):
            peak[0] = max(peak[0], proc.memory_full_info().uss)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    with open_volume(src, "raw") as vol:
        res = segment_blockwise(model, vol, sw, dec, output=dst, **kw)
    done.set()
    t.join()
    out.append({"growth": peak[0] - base, "blocks": res.num_blocks, "objects": res.num_objects})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_process_private_memory_bounded_by_block_not_volume(tmp_path):
    """A whole inference process (torch, h5py, decoding, stitching, output) keeps its private
    memory independent of the volume: twice the blocks, about the same peak, far below the
    volume's own labels."""
    import json
    import subprocess
    import sys

    pytest.importorskip("psutil")
    argv = []
    for nz in (48, 96):  # 75 and 150 blocks; uint64 labels 84 and 169 MiB
        z, y, x = np.ogrid[:nz, :480, :480]
        raw = np.where(((y // 40 + x // 40 + z // 12) % 2) == 0, 220, 30).astype(np.uint8)
        write_volume(tmp_path / f"raw{nz}.h5:raw", raw)
        argv += [str(tmp_path / f"raw{nz}.h5"), str(tmp_path / f"seg{nz}.h5")]
    res = subprocess.run(
        [sys.executable, "-c", _USS_CHILD, *argv], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    small, large = json.loads(res.stdout.strip().splitlines()[-1])
    assert (small["blocks"], large["blocks"]) == (75, 150) and large["objects"] > 100
    labels_large = 96 * 480 * 480 * 8
    # before: +~1 MB of retained heap per block, and the relabel pass's whole-volume memory map
    # resident at the end (growth ~ the labels' size, doubling with the volume)
    msg = f"peak private memory growth {small['growth'] >> 20} / {large['growth'] >> 20} MiB"
    assert large["growth"] < 1.25 * small["growth"] + (16 << 20), msg
    assert large["growth"] < 0.5 * labels_large, msg
    assert read_volume(tmp_path / "seg96.h5", "segmentation").shape == (96, 480, 480)
