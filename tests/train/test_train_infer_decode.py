"""Instance decoding: mean-shift on embeddings, seeded watershed, per-class unified ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import morphology
from skimage.segmentation import relabel_sequential as sk_relabel

from neurons.train.inference import (
    DecodeConfig,
    DecodeError,
    cluster_embeddings,
    decode_instances,
    relabel_sequential,
    remove_small_objects,
    seeded_watershed,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test machine is shared: OpenMP spin-waiting on busy cores slows torch ~1000x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True iff a and b are the same labelling up to renaming (0 maps to 0)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]).astype(np.uint64), axis=1)
    if ((pairs[0] == 0) != (pairs[1] == 0)).any():
        return False
    return np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size


def _perfect_embedding(labels: np.ndarray, dim: int, rng, spread: float = 3.0) -> np.ndarray:
    ids, inv = np.unique(labels, return_inverse=True)
    centres = rng.normal(size=(ids.size, dim)).astype(np.float32) * spread
    return np.moveaxis(centres[inv.reshape(labels.shape)], -1, 0)


@pytest.mark.parametrize("shape", [(12, 40, 40), (90, 70)])
def test_perfect_embeddings_recovered_exactly(rng, shape):
    labels = rng.integers(0, 40, size=shape)  # 39 instances, scattered voxels, 0 = background
    emb = _perfect_embedding(labels, 8, rng)
    out = cluster_embeddings(emb, labels > 0, bandwidth=0.5, max_samples=2000, max_seeds=16)
    assert _same_partition(out, labels)


def test_perfect_embeddings_tiny_instances_not_sampled(rng):
    labels = np.ones((60, 60), dtype=np.int64)
    labels[5, 5] = 2  # single voxels: almost never in a 500-voxel subsample
    labels[50, 7] = 3
    labels[30:, 30:] = 4
    emb = _perfect_embedding(labels, 4, rng)
    out = cluster_embeddings(emb, None, bandwidth=0.5, max_samples=500, max_seeds=4)
    assert _same_partition(out, labels)


def test_noisy_embeddings_within_pull_margin(rng):
    labels = np.repeat(np.arange(1, 9), 400).reshape(8, 20, 20)
    emb = _perfect_embedding(labels, 6, rng, spread=4.0)
    noise = rng.normal(size=emb.shape).astype(np.float32)
    noise *= 0.15 / np.maximum(np.linalg.norm(noise, axis=0, keepdims=True), 1e-6)  # |noise| = 0.15
    out = cluster_embeddings(emb + noise, None, bandwidth=0.5)
    assert _same_partition(out, labels)


def test_decode_instances_per_class_unique_ids_and_connected_split(rng):
    sem = np.zeros((40, 40), dtype=np.int64)
    sem[2:12, 2:12] = 1  # neuron A
    sem[2:12, 20:30] = 1  # neuron B: same embedding as A, but not connected -> split
    sem[25:35, 5:15] = 3  # mitochondrion with a boundary ring of class 4
    sem[25, 5:15] = 4
    sem[25:35, 22:26] = 2  # cleft
    probs = np.eye(5, dtype=np.float32)[sem].transpose(2, 0, 1)
    emb = np.zeros((3, 40, 40), dtype=np.float32)
    emb[:, np.isin(sem, (3, 4))] = 5.0
    out_ins, out_sem = decode_instances(
        {"semantic": probs, "instance": emb}, DecodeConfig(method="embedding")
    )
    np.testing.assert_array_equal(out_sem, sem)
    expected = np.zeros((40, 40), dtype=np.int64)
    expected[2:12, 2:12] = 1
    expected[2:12, 20:30] = 2
    expected[25:35, 5:15] = 3  # boundary voxels (class 4) belong to the mitochondrion
    expected[25:35, 22:26] = 4
    assert out_ins.dtype == np.uint64
    assert _same_partition(out_ins, expected)
    # the watershed decoder sees the same objects here
    ws, _ = decode_instances({"semantic": probs}, DecodeConfig(method="watershed"))
    assert _same_partition(ws, expected)


def test_seeded_watershed_splits_touching_cells():
    yy, xx = np.mgrid[:40, :70]
    d1 = np.hypot(yy - 20, xx - 20)
    d2 = np.hypot(yy - 20, xx - 48)
    fg = np.clip(1.2 - np.minimum(d1, d2) / 15.0, 0, 1)  # two blobs touching along x ~ 34
    labels = seeded_watershed(fg, threshold=0.3, seed_threshold=0.9)
    assert labels.max() == 2
    assert labels[20, 20] != labels[20, 48]
    assert labels[20, 33] == labels[20, 20] and labels[20, 35] == labels[20, 48]
    dist = seeded_watershed(fg, threshold=0.3, seed_threshold=None, seed_distance=10.0)
    assert dist.max() == 2


def test_small_object_removal_matches_skimage(rng):
    labels = ndimage.label(rng.random((60, 60)) > 0.6)[0]
    ours = remove_small_objects(labels, 5)
    ref = morphology.remove_small_objects(labels, max_size=4)  # removes sizes <= 4, i.e. < 5
    np.testing.assert_array_equal(ours, ref)


def test_relabel_sequential_uint64_ids():
    big = np.array([[0, 2**63 + 5, 7], [7, 0, 2**64 - 2]], dtype=np.uint64)
    ours, n = relabel_sequential(big)
    ref = sk_relabel(np.array([[0, 3, 1], [1, 0, 4]]))[0]  # same order as the raw ids
    assert n == 3
    np.testing.assert_array_equal(ours, ref)


def test_decode_errors():
    with pytest.raises(DecodeError, match="instance"):
        decode_instances({"semantic": np.ones((2, 4, 4))}, DecodeConfig(method="embedding"))
    with pytest.raises(DecodeError, match="method"):
        DecodeConfig(method="magic")
    with pytest.raises(DecodeError, match="mask shape"):
        cluster_embeddings(np.zeros((2, 4, 4)), np.ones((3, 3), bool))
