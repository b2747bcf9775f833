"""Targets against SciPy / brute-force per-instance references."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from neurons.losses import targets as T

_spec = importlib.util.spec_from_file_location("_losses_refs", Path(__file__).with_name("_losses_refs.py"))
R = sys.modules.get("_losses_refs") or importlib.util.module_from_spec(_spec)
if "_losses_refs" not in sys.modules:
    sys.modules["_losses_refs"] = R
    _spec.loader.exec_module(R)
random_labels, ref_edt = R.random_labels, R.ref_edt


@pytest.mark.parametrize("shape,sampling", [((17, 19), None), ((6, 11, 9), (2.0, 1.0, 1.5)),
                                            ((7, 8, 9), None), ((13, 12), (1.0, 0.5))])
def test_edt_equals_scipy_per_instance(shape, sampling):
    lab = random_labels(shape, 6, b=2, seed=3)
    d = T.instance_edt(lab, sampling).numpy()
    for b in range(2):
        np.testing.assert_allclose(d[b], ref_edt(lab[b].numpy(), sampling), rtol=1e-6, atol=1e-5)


def test_edt_huge_ids_and_normalised():
    lab = random_labels((12, 13), 4, b=1, seed=4)
    big = torch.where(lab > 0, lab + (2**63 - 10), lab)
    assert torch.equal(T.instance_edt(big), T.instance_edt(lab))
    dn = T.normalized_edt(big).numpy()[0]
    ref = ref_edt(lab[0].numpy())
    for k in range(1, 5):
        m = lab[0].numpy() == k
        if m.any():
            np.testing.assert_allclose(dn[m], ref[m] / ref[m].max(), atol=1e-6)
    assert dn[lab[0].numpy() == 0].max() == 0


def test_edt_gradient_matches_numpy_gradient(labels3d):
    g = T.edt_gradient(labels3d).numpy()
    for b in range(2):
        lab = labels3d[b].numpy()
        for k in np.unique(lab[lab > 0]):
            m = lab == k
            dk = ndi.distance_transform_edt(m)
            ref = np.stack(np.gradient(dk), 0)
            np.testing.assert_allclose(g[b][:, m], ref[:, m], atol=1e-5)


def test_boundary_map_is_morphological_gradient(labels2d, labels3d):
    for lab in (labels2d, labels3d):
        bd = T.boundary_map(lab).numpy()
        for b in range(2):
            x = lab[b].numpy()
            ref = ndi.maximum_filter(x, 3, mode="nearest") != ndi.minimum_filter(x, 3, mode="nearest")
            np.testing.assert_array_equal(bd[b], ref)


def test_centroid_directions_loop(labels3d):
    v = T.centroid_directions(labels3d).numpy()
    for b in range(2):
        lab = labels3d[b].numpy()
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in lab.shape], indexing="ij"), 0)
        for k in np.unique(lab[lab > 0]):
            m = lab == k
            c = grid[:, m].mean(1)
            r = c[:, None] - grid[:, m]
            r = r / np.maximum(np.linalg.norm(r, axis=0), 1e-6)
            np.testing.assert_allclose(v[b][:, m], r, atol=1e-5)
        assert np.all(v[b][:, lab == 0] == 0)


@pytest.mark.parametrize("shape,k", [((40, 44), 7), ((10, 18, 20), 5)])
def test_skeleton_inside_thin_same_components(shape, k):
    lab = random_labels(shape, k, b=2, seed=5, bg=0.0)
    sk = T.skeletonize(lab).numpy()
    s = len(shape)
    full = ndi.generate_binary_structure(s, s)
    face = ndi.generate_binary_structure(s, 1)
    for b in range(2):
        x = lab[b].numpy()
        assert not (sk[b] & (x == 0)).any()
        for kk in np.unique(x[x > 0]):
            m = x == kk
            skk = sk[b] & m
            assert ndi.label(skk, full)[1] == ndi.label(m, full)[1]
            # thin: no skeleton voxel has all its face neighbours in the skeleton
            assert not ndi.binary_erosion(skk, face, border_value=0).any()
            assert skk.sum() < max(2, 0.5 * m.sum())


def test_skeleton_of_ring_keeps_hole():
    yy, xx = np.mgrid[:21, :21]
    r = np.hypot(yy - 10, xx - 10)
    lab = torch.as_tensor(((r > 4) & (r < 9)).astype(np.int64))[None]
    sk = T.skeletonize(lab)[0].numpy()
    # one component, and the hole is still enclosed (2 background 4-components: hole + outside)
    assert ndi.label(sk, np.ones((3, 3)))[1] == 1
    assert ndi.label(~sk)[1] == 2


def test_nearest_skeleton_brute_force(labels2d):
    sk = T.skeletonize(labels2d)
    near = T.nearest_skeleton(labels2d, sk, sampling=(1.0, 1.3), chunk=64).numpy()
    for b in range(2):
        lab = labels2d[b].numpy()
        pts = np.argwhere(lab > 0)
        for p in pts:
            k = lab[tuple(p)]
            cand = np.argwhere(sk[b].numpy() & (lab == k))
            d = (((cand - p) * [1.0, 1.3]) ** 2).sum(1)
            best = d.min()
            got = near[b][(slice(None), *p)]
            assert np.isclose((((got - p) * [1.0, 1.3]) ** 2).sum(), best)
            assert lab[tuple(got.astype(int))] == k


def _ref_structure(lab, sigma=2.0, truncate=3.0):
    s = lab.ndim
    r = int(truncate * sigma + 0.5)
    t = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g /= g.sum()
    out = np.zeros((s * s,) + lab.shape)
    for k in np.unique(lab[lab > 0]):
        m = (lab == k).astype(float)
        d = ndi.distance_transform_edt(m)
        grad = np.gradient(d)
        def smooth(f, m=m):
            v = f * m
            for a in range(s):
                v = ndi.correlate1d(v, g, axis=a, mode="constant") * m
            return v
        den = np.maximum(smooth(np.ones_like(m)), 1e-10)
        tt = np.array([[smooth(grad[i] * grad[j]) / den for j in range(s)] for i in range(s)])
        w = (d / d.max()) ** 2
        tr = sum(tt[i, i] for i in range(s)) / s
        for i in range(s):
            for j in range(s):
                v = (1 - w) * tt[i, j] + (w * tr if i == j else 0)
                out[i * s + j][m > 0] = v[m > 0]
    return out


@pytest.mark.parametrize("shape", [(13, 15), (5, 9, 8)])
def test_structure_tensor_per_instance_reference(shape):
    lab = random_labels(shape, 5, b=1, seed=6)
    st = T.structure_tensor(lab, sigma=2.0).numpy()[0]
    np.testing.assert_allclose(st, _ref_structure(lab[0].numpy()), atol=1e-5)


def test_geometry_targets_shapes_and_raw():
    lab = random_labels((9, 10), 3, b=2, seed=7)
    img = torch.rand(2, 1, 9, 10) * 1.4 - 0.2
    t = T.geometry_targets(lab, img, dir_target="skeleton")
    assert t["direction"].shape == (2, 2, 9, 10)
    assert t["structure"].shape == (2, 4, 9, 10)
    raw = t["raw"]
    assert raw.shape == (2, 4, 9, 10) and raw.min() >= 0 and raw.max() <= 1
    assert torch.equal(raw[:, 3], (lab > 0).float())
    n = torch.linalg.vector_norm(t["direction"], dim=1)
    assert torch.all((n < 1e-6) | ((n - 1).abs() < 1e-5))


def test_targets_empty_batch():
    lab = torch.zeros(2, 6, 7, dtype=torch.long)
    assert T.instance_edt(lab).abs().sum() == 0
    assert not T.skeletonize(lab).any()
    assert T.nearest_skeleton(lab).abs().sum() == 0
    assert T.structure_tensor(lab).abs().sum() == 0
    assert T.centroid_directions(lab).abs().sum() == 0
