"""Targets against SciPy / brute-force per-instance references."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from neurons.losses import targets as T

R = sys.modules["_losses_refs"]  # the float64 loop references, registered by conftest.py
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


def _has_full_block(x):
    """Any all-True 2x2 (2-D) / 2x2x2 (3-D) block."""
    n = x.ndim
    v = np.ones(tuple(m - 1 for m in x.shape), bool)
    for o in itertools.product((0, 1), repeat=n):
        v &= x[tuple(slice(c, m - 1 + c) for c, m in zip(o, x.shape, strict=True))]
    return v.any()


def _torus():
    zz, yy, xx = np.mgrid[:13, :27, :27]
    return ((np.hypot(yy - 13, xx - 13) - 8) ** 2 + (zz - 6) ** 2 < 4.2**2).astype(np.int64)


def _two_blobs():
    yy, xx = np.mgrid[:22, :40]
    lab = ((np.hypot(yy - 10, xx - 9) < 7) | (np.hypot(yy - 11, xx - 29) < 8)).astype(np.int64)
    lab[(yy > 16) & (xx < 3)] = 2  # a second id next to them
    return lab


def _annulus():
    yy, xx = np.mgrid[:31, :33]
    r = np.hypot(yy - 15, xx - 16)
    return ((r > 5) & (r < 13)).astype(np.int64) * 3


@pytest.mark.parametrize("case", ["two_blobs", "annulus", "torus", "voronoi2d", "voronoi3d"])
def test_skeleton_topology_against_scipy_skimage(case):
    measure = pytest.importorskip("skimage.measure")
    lab = {"two_blobs": _two_blobs, "annulus": _annulus, "torus": _torus}.get(case)
    if lab is None:
        shape = (40, 44) if case == "voronoi2d" else (16, 20, 22)
        lab = R.random_labels(shape, 6, b=1, seed=8, bg=0.0)[0].numpy()
    else:
        lab = lab()
    s = lab.ndim
    sk = T.skeletonize(torch.as_tensor(lab)[None])[0].numpy()
    full = ndi.generate_binary_structure(s, s)  # 8 / 26-connectivity, as documented
    assert not (sk & (lab == 0)).any()
    for k in np.unique(lab[lab > 0]):
        m, skk = lab == k, sk & (lab == k)
        assert ndi.label(skk, full)[1] == ndi.label(m, full)[1]
        assert measure.euler_number(skk, connectivity=s) == measure.euler_number(m, connectivity=s)
        assert not _has_full_block(skk)
    if case == "two_blobs":
        assert ndi.label(sk & (lab == 1), full)[1] == 2
    if case == "annulus":  # one component with one hole
        assert measure.euler_number(sk, connectivity=2) == 0 and ndi.label(sk, full)[1] == 1
        assert ndi.label(~sk)[1] == 2
        morph = pytest.importorskip("skimage.morphology")
        assert measure.euler_number(morph.skeletonize(lab > 0), connectivity=2) == 0
    if case == "torus":  # one component with one tunnel
        assert measure.euler_number(lab > 0, connectivity=3) == 0
        assert measure.euler_number(sk, connectivity=3) == 0 and ndi.label(sk, full)[1] == 1
    # fixed point: thinning the skeleton again (same ids) changes nothing
    again = T.skeletonize(torch.as_tensor(np.where(sk, lab, 0))[None])[0].numpy()
    np.testing.assert_array_equal(again, sk)


def test_skeleton_idempotent_noisy_labels():
    # one-voxel holes can make a 2^S block topologically necessary, so no block check here
    for shape in ((30, 33), (9, 14, 15)):
        lab = R.random_labels(shape, 6, b=2, seed=9, bg=0.15)
        sk = T.skeletonize(lab)
        assert torch.equal(T.skeletonize(torch.where(sk, lab, torch.zeros_like(lab))), sk)


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


def _ref_structure_exact(lab, sigma=2.0, truncate=3.0, sampling=None):
    """Exact per-instance definition: T = G*(J m) / G*m, independent of the implementation."""
    s = lab.ndim
    sp = (1.0,) * s if sampling is None else tuple(sampling)
    out = np.zeros((s * s,) + lab.shape)
    for k in np.unique(lab[lab > 0]):
        m = (lab == k).astype(float)
        d = ndi.distance_transform_edt(m, sampling=sp)
        grad = np.gradient(d, *sp)
        def smooth(f):
            return ndi.gaussian_filter(f, sigma, truncate=truncate, mode="constant")
        den = np.maximum(smooth(m), 1e-10)
        tt = np.array([[smooth(grad[i] * grad[j] * m) / den for j in range(s)] for i in range(s)])
        w = (d / d.max()) ** 2
        tr = sum(tt[i, i] for i in range(s)) / s
        for i in range(s):
            for j in range(s):
                v = (1 - w) * tt[i, j] + (w * tr if i == j else 0)
                out[i * s + j][m > 0] = v[m > 0]
    return out


def _staircase_bad(lab, r):
    """Instance voxels p with a same-instance q in their window whose staircase path
    q -> (p0, q1, ..) -> (p0, p1, q2, ..) -> p leaves the instance (brute force)."""
    s = lab.ndim
    pad = np.pad(lab, r, constant_values=-1)
    def at(o):
        return pad[tuple(slice(r + c, r + c + n) for c, n in zip(o, lab.shape, strict=True))]
    bad = np.zeros(lab.shape, bool)
    for t in itertools.product(range(-r, r + 1), repeat=s):
        same = at(t) == lab
        for j in range(1, s):
            bad |= same & (at((0,) * j + t[j:]) != lab)
    return bad & (lab > 0)


def _box_labels(shape, seed):
    """Tiling of the patch by random boxes (unique ids, a few background boxes)."""
    g = np.random.default_rng(seed)
    cuts = [np.sort(g.choice(np.arange(2, n - 1), size=2, replace=False)) for n in shape]
    cell = np.stack(np.meshgrid(*[np.searchsorted(c, np.arange(n), side="right")
                                  for c, n in zip(cuts, shape, strict=True)], indexing="ij"), 0)
    lab = np.ravel_multi_index(tuple(cell), (3,) * len(shape)) + 1
    lab[np.isin(lab, g.choice(lab.max(), 2, replace=False) + 1)] = 0
    return lab


def _check_tensor_props(st, lab, s):
    assert np.isfinite(st).all()
    assert np.all(st[:, lab == 0] == 0)
    mat = np.moveaxis(st.reshape((s, s) + lab.shape), (0, 1), (-2, -1))
    np.testing.assert_allclose(mat, np.swapaxes(mat, -1, -2), atol=1e-7)
    assert np.linalg.eigvalsh(mat[lab > 0].astype(np.float64)).min() > -1e-6


@pytest.mark.parametrize("shape,sampling", [((13, 15), None), ((17, 12), (1.0, 0.6)),
                                            ((7, 11, 10), None), ((8, 9, 10), (2.0, 1.0, 1.5))])
@pytest.mark.parametrize("seed", [0, 1])
def test_structure_tensor_exact_on_boxes(shape, sampling, seed):
    lab = _box_labels(shape, seed)
    assert not _staircase_bad(lab, 6).any()
    st = T.structure_tensor(torch.as_tensor(lab)[None], sigma=2.0, sampling=sampling).numpy()[0]
    np.testing.assert_allclose(st, _ref_structure_exact(lab, 2.0, sampling=sampling), atol=1e-5)
    _check_tensor_props(st, lab, len(shape))


def _l_shape():
    lab = np.zeros((16, 16), np.int64)
    lab[1:14, 1:6] = 1
    lab[9:14, 1:15] = 1
    return lab


def _ring():
    yy, xx = np.mgrid[:21, :22]
    r = np.hypot(yy - 10, xx - 11)
    return ((r > 3.5) & (r < 9)).astype(np.int64)


@pytest.mark.parametrize("case", ["l_shape", "ring", "voronoi2d", "voronoi3d"])
def test_structure_tensor_non_convex_differs_only_where_expected(case):
    if case == "l_shape":
        lab = _l_shape()
        # axis-convex: every row and column meets it in one interval -- still not exact
        for a in (0, 1):
            for line in np.moveaxis(lab, a, 0):
                assert np.count_nonzero(np.diff(np.r_[0, line, 0])) in (0, 2)
    elif case == "ring":
        lab = _ring()
    else:
        # convex (but not box) cells, plus one-voxel background noise in 2-D
        shape = (19, 21) if case == "voronoi2d" else (9, 16, 16)
        lab = R.random_labels(shape, 4, b=1, seed=6, bg=0.1 if len(shape) == 2 else 0.0)[0].numpy()
    s = lab.ndim
    st = T.structure_tensor(torch.as_tensor(lab)[None], sigma=2.0).numpy()[0]
    ex = _ref_structure_exact(lab, 2.0)
    _check_tensor_props(st, lab, s)
    bad = _staircase_bad(lab, 6)
    assert bad.any()
    if case != "voronoi2d":
        assert (~bad & (lab > 0)).any()
    np.testing.assert_allclose(st[:, ~bad], ex[:, ~bad], atol=1e-5)
    assert np.abs(st - ex)[:, bad].max() > 1e-3  # the approximation is genuinely not exact


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
