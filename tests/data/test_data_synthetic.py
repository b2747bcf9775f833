"""The synthetic EM generator: determinism, labels, EM-like appearance and geometry."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from neurons.data.synthetic import SyntheticVolumeError, make_synthetic_volume

SHAPE = (16, 96, 96)


@pytest.fixture(scope="module")
def vol():
    return make_synthetic_volume(SHAPE, seed=1)


def test_deterministic_by_seed(vol):
    again = make_synthetic_volume(SHAPE, seed=1)
    other = make_synthetic_volume(SHAPE, seed=2)
    for k in ("raw", "instance", "semantic"):
        np.testing.assert_array_equal(vol[k], again[k])
    assert not np.array_equal(vol["raw"], other["raw"])
    assert not np.array_equal(vol["instance"], other["instance"])


def test_shapes_dtypes_and_metadata(vol):
    assert vol["raw"].shape == vol["instance"].shape == vol["semantic"].shape == SHAPE
    assert vol["raw"].dtype == np.uint8
    assert vol["instance"].dtype == np.uint32
    assert vol["semantic"].dtype == np.uint8
    assert vol["voxel_size"] == (40.0, 8.0, 8.0)
    flat = make_synthetic_volume((64, 80), seed=0, voxel_size=(50, 4, 4))
    assert flat["raw"].shape == flat["instance"].shape == (64, 80)
    assert flat["voxel_size"] == (50.0, 4.0, 4.0)
    assert set(np.unique(flat["semantic"])) <= {0, 1, 3, 4}


def test_semantic_consistent_with_instances(vol):
    ins, sem = vol["instance"], vol["semantic"]
    assert set(np.unique(sem).tolist()) == {0, 1, 3, 4}
    np.testing.assert_array_equal(sem == 0, ins == 0)
    # each id belongs to exactly one kind: neurite (1) or mitochondrion (3/4)
    kind = np.where(sem == 1, 1, 2)[ins > 0]
    ids = ins[ins > 0]
    pairs = np.unique(np.stack([ids, kind]), axis=1)
    assert np.unique(pairs[0]).size == pairs.shape[1]
    neurite_ids = pairs[0][pairs[1] == 1]
    mito_ids = pairs[0][pairs[1] == 2]
    assert mito_ids.size > 0 and neurite_ids.max() < mito_ids.min()
    # ids are compact 1..K
    np.testing.assert_array_equal(np.unique(ids), np.arange(1, ids.max() + 1))
    # the boundary class is the rim: every mitochondrion voxel next (in-plane) to a
    # non-mitochondrion voxel is class 4, and interior voxels are class 3
    mito = (sem == 3) | (sem == 4)
    rim = mito & ~ndimage.binary_erosion(mito, np.ones((1, 3, 3), bool))
    np.testing.assert_array_equal(sem == 4, rim)


def test_mitochondria_sit_inside_neurites(vol):
    sem = vol["semantic"]
    mito = (sem == 3) | (sem == 4)
    ring = ndimage.binary_dilation(mito, np.ones((1, 3, 3), bool)) & ~mito
    # the ring around a mitochondrion is cytoplasm of a neurite, never membrane
    assert (sem[ring] == 1).mean() > 0.98


def test_membranes_darker_than_interiors(vol):
    raw, sem = vol["raw"].astype(float), vol["semantic"]
    membrane, cyto, mito = raw[sem == 0].mean(), raw[sem == 1].mean(), raw[sem == 3].mean()
    assert membrane + 50 < cyto
    assert mito + 30 < cyto
    assert 0.05 < (sem == 0).mean() < 0.35  # membranes are thin
    assert raw.std() > 10  # texture + noise, not flat


def test_neurites_elongated_along_z(vol):
    ins, sem = vol["instance"], vol["semantic"]
    neurites = np.where(sem == 1, ins, 0)
    boxes = [b for b in ndimage.find_objects(neurites) if b is not None]
    z_extent = np.array([b[0].stop - b[0].start for b in boxes])
    sizes = np.bincount(neurites.ravel())[1:]
    big = sizes[sizes > 0] > 200
    assert np.median(z_extent[big]) >= SHAPE[0] * 0.75
    # and the cross-section moves little between neighbouring sections (tubes, not noise)
    same = (ins[1:] == ins[:-1]) & (ins[1:] > 0)
    assert same.sum() / (ins[1:] > 0).sum() > 0.7


def test_fast_enough():
    t0 = time.perf_counter()
    make_synthetic_volume((32, 256, 256), seed=0)
    assert time.perf_counter() - t0 < 10.0  # ~0.7 s on an idle core; generous for shared CI


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (4,)},
        {"shape": (2, 4, 4)},
        {"shape": (4, 64, 64), "membrane_width": 0},
        {"shape": (4, 64, 64), "voxel_size": (8, 8)},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(SyntheticVolumeError):
        make_synthetic_volume(**kwargs)


@pytest.mark.parametrize("width", [1, 4])
def test_membrane_width(width):
    thin = make_synthetic_volume((4, 96, 96), seed=0, membrane_width=width)
    default = make_synthetic_volume((4, 96, 96), seed=0)
    frac, frac2 = (thin["semantic"] == 0).mean(), (default["semantic"] == 0).mean()
    assert (frac < frac2) if width == 1 else (frac > frac2)
