"""Supplied targets, missing inputs and degenerate ids (independent numpy references)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from neurons.losses import (
    CentroidEmbeddingLoss,
    GeometryLoss,
    InstanceLoss,
    LossInputError,
    LossInputWarning,
    SemanticLoss,
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


# -- issue 15: batch-size mismatch, empty batch and NaN inputs ------------------------------------


def _pred(b, c, shape, seed=0):
    return torch.randn(b, c, *shape, generator=torch.Generator().manual_seed(seed))


_SHAPE = (6, 7)
_CASES = {
    "semantic-softmax": (lambda p, y: SemanticLoss(mode="softmax")(p, (y > 0).long()), 3),
    "semantic-sigmoid": (lambda p, y: SemanticLoss(mode="sigmoid")(p, (y > 0).long()), 3),
    "instance": (lambda p, y: InstanceLoss()(p, y), 4),
    "centroid": (lambda p, y: CentroidEmbeddingLoss()(p, y), 4),
    "skeleton": (lambda p, y: SkeletonEmbeddingLoss()(p, y), 2),
    "geometry": (lambda p, y: GeometryLoss(weight_raw=0.0)(p, y), 10),
}


@pytest.mark.parametrize("name", list(_CASES))
def test_batch_size_mismatch_raises_the_package_error(name):
    fn, c = _CASES[name]
    lab = R.random_labels(_SHAPE, 3, b=1, seed=1)
    with pytest.raises(LossInputError, match="batch size 1 .* batch size 2"):
        fn(_pred(2, c, _SHAPE), lab)
    lab2 = R.random_labels(_SHAPE, 3, b=2, seed=1)
    assert torch.isfinite(fn(_pred(2, c, _SHAPE), lab2)["loss"])  # matching batches still work


def test_softmax_labels_batch_one_no_longer_broadcast():
    """The issue's case: before the fix this returned a finite loss (labels broadcast)."""
    logits = _pred(2, 2, _SHAPE)
    with pytest.raises(LossInputError, match="semantic: batch size 1"):
        SemanticLoss(mode="softmax")(logits, torch.zeros(1, *_SHAPE, dtype=torch.long))


@pytest.mark.parametrize("name", list(_CASES))
def test_empty_batch_raises_the_package_error(name):
    fn, c = _CASES[name]
    with pytest.raises(LossInputError, match="empty batch"):
        fn(_pred(0, c, _SHAPE), torch.zeros(0, *_SHAPE, dtype=torch.long))


def test_vista_batch_mismatch_names_the_input():
    lab = R.random_labels(_SHAPE, 3, b=1, seed=2)
    outs = {"semantic": _pred(2, 3, _SHAPE), "instance": _pred(2, 4, _SHAPE)}
    with pytest.raises(LossInputError, match="batch size"):
        VistaLoss(weight_geometry=0.0)(outs, {"semantic": (lab > 0).long(), "instance": lab})


@pytest.mark.parametrize("name", ["semantic-softmax", "instance", "centroid"])
def test_nan_prediction_warns_and_can_be_made_an_error(name):
    fn, c = _CASES[name]
    pred = _pred(2, c, _SHAPE)
    pred[1, 0, 2, 3] = float("nan")
    lab = R.random_labels(_SHAPE, 3, b=2, seed=3)
    with pytest.warns(LossInputWarning, match="1 of .* NaN/inf"):
        out = fn(pred, lab)
    assert not torch.isfinite(out["loss"])  # not hidden: the loss itself is NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error", LossInputWarning)
        with pytest.raises(LossInputWarning):
            fn(pred, lab)
