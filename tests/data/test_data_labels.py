"""Unified label space and per-patch renumbering."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from neurons.data.labels import (
    IGNORE_INDEX,
    NUM_UNIFIED_CLASSES,
    UNIFIED_CLASSES,
    cremi_to_unified,
    interior_to_unified,
    mitoem2_to_unified,
    renumber_instances,
    semantic_ids_vector,
)


def test_constants():
    assert UNIFIED_CLASSES == (
        "background", "neuron", "synaptic_cleft", "mitochondrion", "mitochondrion_boundary",
    )
    assert NUM_UNIFIED_CLASSES == 5 and IGNORE_INDEX == 255
    assert semantic_ids_vector([0, 3, 4]).tolist() == [1, 0, 0, 1, 1]
    with pytest.raises(ValueError):
        semantic_ids_vector([5])


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint64])
def test_renumber_matches_bruteforce(dtype, rng):
    ids = rng.choice(np.array([0, 3, 7, 200], dtype=np.int64), size=(5, 6, 7)).astype(dtype)
    out, k = renumber_instances(ids)
    assert out.dtype == np.int64 and k == 3
    lut = {0: 0, 3: 1, 7: 2, 200: 3}  # brute force, hand-built
    np.testing.assert_array_equal(out, np.vectorize(lut.get)(ids.astype(np.int64)))


def test_renumber_huge_uint64_without_background():
    big = np.array([2**64 - 2, 2**63 + 1, 2**63 + 1, 5], dtype=np.uint64).reshape(2, 2)
    out, k = renumber_instances(big)
    assert k == 3 and out.tolist() == [[3, 2], [2, 1]]  # no 0 -> ids start at 1
    with pytest.raises(TypeError):
        renumber_instances(np.zeros(3, np.float32))


def test_cremi_no_data_and_cleft_background():
    nd = np.iinfo(np.uint64).max
    n = np.array([[5, nd, 9, 0]], dtype=np.uint64)
    c = np.array([[nd, nd, 4, 0]], dtype=np.uint64)
    m = np.array([[0, 0, 0, 0]], dtype=np.uint64)
    inst, sem = cremi_to_unified(n, c, m)
    # the cleft voxel gets its own instance id, not neuron 9's (issue 11)
    assert inst.tolist() == [[5, 0, 10, 0]]
    assert sem.tolist() == [[1, IGNORE_INDEX, 2, 0]]


def test_mitoem2_instances_include_boundaries():
    lab = np.zeros((12, 12), np.uint8)
    lab[1:6, 1:6] = 2
    lab[2:5, 2:5] = 1
    lab[6:11, 1:11] = 2
    lab[7:10, 2:10] = 1
    inst, sem = mitoem2_to_unified(lab)
    assert set(np.unique(sem)) == {0, 3, 4}
    assert len(np.unique(inst[inst > 0])) == 2 and ((inst > 0) == (lab > 0)).all()
    with pytest.raises(ValueError, match="0/1/2"):
        mitoem2_to_unified(np.array([0, 3]))


def test_interior_components_per_section():
    lab = np.zeros((2, 5, 5), np.uint8)
    lab[:, 0:2, :] = 255
    lab[:, 3:5, :] = 255
    inst, sem = interior_to_unified(lab)
    assert len(np.unique(inst[inst > 0])) == 4  # 2 per section, no z links
    ref, n = ndimage.label(lab > 0)
    assert n == 2  # the 3D labelling would link sections
    inst3, _ = interior_to_unified(lab, per_section=False)
    assert len(np.unique(inst3[inst3 > 0])) == 2
    assert sem.max() == 1
