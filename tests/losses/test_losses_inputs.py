"""Supplied targets, missing inputs and degenerate ids (independent numpy references)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from neurons.losses import (
    CentroidEmbeddingLoss,
    GeometryLoss,
    LossInputError,
    SkeletonEmbeddingLoss,
    VistaLoss,
    segment_instances,
)
from neurons.losses import targets as T

R = sys.modules["_losses_refs"]  # the float64 loop references, registered by conftest.py


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), 0)


def test_skeleton_loss_uses_supplied_targets():
    """A supplied (deliberately wrong) ``nearest`` must be used; the others are filled in."""
    shape = (9, 10)
    lab = R.random_labels(shape, 3, b=2, seed=4)
    off = torch.randn(2, 2, *shape, generator=torch.Generator().manual_seed(1))
    near = torch.full((2, 2, *shape), 3.0)
    loss = SkeletonEmbeddingLoss()
    out = loss(off, lab, {"nearest": near})
    fg = lab.numpy() > 0
    e = _grid(shape)[None] + off.double().numpy()
    ref = (((e - 3.0) ** 2).sum(1) * fg).sum() / fg.sum()
    assert abs(out["pull"].item() - ref) < 1e-4 * ref
    # the missing edt targets were computed, so penalty/benefit equal the all-automatic run
    auto = loss(off, lab)
    assert torch.allclose(out["penalty"], auto["penalty"])
    assert torch.allclose(out["benefit"], auto["benefit"])
    assert abs(auto["pull"].item() - ref) > 1e-3
    # a supplied edt_norm of ones makes the benefit exactly 0 wherever the sample stays inside
    ones = loss(off * 0, lab, {"edt_norm": torch.ones(2, *shape)})
    assert ones["benefit"].item() == pytest.approx(0.0, abs=1e-6)


def test_nearest_skeleton_falls_back_to_own_voxels():
    lab = torch.tensor([[[1, 1, 1, 0, 2, 2], [1, 1, 1, 0, 2, 2]]])
    sk = torch.zeros_like(lab, dtype=torch.bool)
    sk[0, 0, 1] = True  # instance 2 has no skeleton voxel
    near = T.nearest_skeleton(lab, skeleton=sk)[0].numpy()
    grid = _grid(lab.shape[1:])
    m1, m2 = lab[0].numpy() == 1, lab[0].numpy() == 2
    # instance 1: brute force over its only skeleton voxel (0, 1)
    assert (near[0][m1] == 0).all() and (near[1][m1] == 1).all()
    # instance 2: each voxel is its own nearest point
    assert (near[:, m2] == grid[:, m2]).all()


def test_vista_missing_geometry_and_geometry_without_image_raise():
    shape = (6, 7)
    lab = R.random_labels(shape, 3, b=1, seed=2)
    outs = {"semantic": torch.randn(1, 3, *shape), "instance": torch.randn(1, 4, *shape)}
    batch = {"semantic": (lab > 0).long(), "instance": lab}
    with pytest.raises(LossInputError, match="geometry"):
        VistaLoss(weight_geometry=1.0)(outs, batch)
    geo = torch.randn(1, 2 + 4 + 4, *shape)
    with pytest.raises(LossInputError, match="image"):
        GeometryLoss(weight_raw=1.0)(geo, lab)
    assert torch.isfinite(GeometryLoss(weight_raw=0.0)(geo, lab)["loss"])


def test_vista_passes_supplied_geometry_targets():
    shape = (6, 7)
    lab = R.random_labels(shape, 3, b=2, seed=3)
    g = torch.Generator().manual_seed(0)
    geo = torch.randn(2, 2 + 4 + 4, *shape, generator=g)
    outs = {"semantic": torch.randn(2, 3, *shape), "instance": torch.randn(2, 4, *shape),
            "geometry": geo}
    direction = torch.full((2, 2, *shape), 5.0)
    structure = torch.full((2, 4, *shape), -2.0)
    batch = {"semantic": (lab > 0).long(), "instance": lab, "image": torch.rand(2, 1, *shape),
             "direction": direction, "structure": structure}
    res = VistaLoss(weight_geometry=1.0, loss_dir="mse", loss_cov="l1")(outs, batch)
    x, fg = geo.double().numpy(), lab.numpy() > 0
    d_ref = np.mean([((x[b, :2] - 5.0) ** 2)[:, fg[b]].mean() for b in range(2)])
    c_ref = np.mean([np.abs(x[b, 2:6] + 2.0)[:, fg[b]].mean() for b in range(2)])
    assert res["loss_geom/dir"].item() == pytest.approx(d_ref, abs=1e-5)
    assert res["loss_geom/cov"].item() == pytest.approx(c_ref, abs=1e-5)


def _relabel(lab, case):
    if case == "max_id":  # one instance gets exactly 2**63 - 1
        return torch.where(lab == 1, torch.full_like(lab, 2**63 - 1), lab)
    if case == "negative":  # negative ids are ignored like background
        return torch.where(lab == 0, torch.full_like(lab, -5), lab)
    return lab


@pytest.mark.parametrize("case", ["max_id", "negative"])
@pytest.mark.parametrize("dim", [2, 3])
def test_extreme_and_negative_ids(case, dim):
    shape = (8, 9) if dim == 2 else (4, 6, 7)
    lab = R.random_labels(shape, 4, b=2, seed=5)
    lab2 = _relabel(lab, case)
    seg = segment_instances(lab2)
    if case == "max_id":
        assert (seg.ids == 2**63 - 1).sum().item() == int((lab == 1).any(dim=tuple(range(1, lab.dim()))).sum())
    else:
        assert (seg.ids > 0).all() and seg.index[(lab2 < 0).reshape(-1)].eq(seg.num).all()
    emb = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(2))
    a, b = CentroidEmbeddingLoss()(emb, lab), CentroidEmbeddingLoss()(emb, lab2)
    for k in ("pull", "push", "norm"):
        assert torch.allclose(a[k], b[k], atol=1e-6)
    off = torch.randn(2, dim, *shape, generator=torch.Generator().manual_seed(3))
    lab_sk = lab2.clamp_min(0)  # the skeleton targets themselves take ids >= 0
    sa, sb = SkeletonEmbeddingLoss()(off, lab), SkeletonEmbeddingLoss()(off, lab_sk)
    assert torch.allclose(sa["push"], sb["push"]) and torch.allclose(sa["pull"], sb["pull"])


@pytest.mark.parametrize("case", ["empty", "one"])
@pytest.mark.parametrize("dim", [2, 3])
def test_embedding_losses_empty_and_single_instance(case, dim):
    shape = (7, 8) if dim == 2 else (4, 5, 6)
    lab = torch.zeros(2, *shape, dtype=torch.long)
    if case == "one":
        lab[(slice(None),) + tuple(slice(1, n - 1) for n in shape)] = 9
    emb = torch.randn(2, 4, *shape, requires_grad=True)
    out = CentroidEmbeddingLoss()(emb, lab)
    assert out["push"].item() == 0
    out["loss"].backward()
    assert torch.isfinite(emb.grad).all()
    if case == "empty":
        assert out["loss"].item() == 0 and (emb.grad == 0).all()
    else:  # one instance: pull and norm as the numpy reference
        m = lab.numpy() == 9
        e = emb.detach().double().numpy()
        pulls, norms = [], []
        for b in range(2):
            v = e[b][:, m[b]]
            mu = v.mean(1, keepdims=True)
            pulls.append((np.maximum(np.linalg.norm(v - mu, axis=0) - 0.5, 0) ** 2).mean())
            norms.append(np.linalg.norm(mu))
        assert out["pull"].item() == pytest.approx(np.mean(pulls), abs=1e-5)
        assert out["norm"].item() == pytest.approx(np.mean(norms), abs=1e-5)
    off = torch.randn(2, dim, *shape, requires_grad=True)
    sk = SkeletonEmbeddingLoss()(off, lab)
    assert sk["push"].item() == 0
    sk["loss"].backward()
    assert torch.isfinite(off.grad).all()
