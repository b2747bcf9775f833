"""Every loss term against plain float64 per-instance loops; gradients; degenerate inputs."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurons.losses import (
    CentroidEmbeddingLoss,
    GeometryLoss,
    InstanceLoss,
    LossConfigError,
    LossInputError,
    SemanticLoss,
    SkeletonEmbeddingLoss,
    Vista2DLoss,
    Vista3DLoss,
    VistaLoss,
)
from neurons.losses import targets as T
from neurons.losses._core import pairwise_distance

R = sys.modules["_losses_refs"]  # the float64 loop references, registered by conftest.py

ATOL = 1e-5


def _emb(lab, e=4, seed=0, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(lab.shape[0], e, *lab.shape[1:], generator=g) * scale


@pytest.mark.parametrize("dim", [2, 3])
def test_centroid_embedding_matches_loop(dim, labels2d, labels3d):
    lab = labels2d if dim == 2 else labels3d
    emb = _emb(lab)
    out = CentroidEmbeddingLoss(w_norm=0.01)(emb, lab)
    pull, push, norm = R.ref_discriminative(emb.double().numpy(), lab.numpy())
    assert abs(out["pull"].item() - pull) < ATOL
    assert abs(out["push"].item() - push) < ATOL
    assert abs(out["norm"].item() - norm) < ATOL
    assert abs(out["loss"].item() - (pull + push + 0.01 * norm)) < ATOL


@pytest.mark.parametrize("dim", [2, 3])
def test_instance_loss_weighted_matches_loop(dim, labels2d, labels3d):
    lab = labels2d if dim == 2 else labels3d
    emb = _emb(lab, seed=1)
    out = InstanceLoss(weight_edge=5, weight_bone=3)(emb, lab)
    w = np.stack([R.ref_weights(lab[b].numpy(), 5, 3) for b in range(lab.shape[0])])
    pull, push, norm = R.ref_discriminative(emb.double().numpy(), lab.numpy(), weights=w)
    assert abs(out["pull"].item() - pull) < ATOL
    assert abs(out["push"].item() - push) < ATOL
    assert abs(out["norm"].item() - norm) < ATOL


def test_instance_loss_per_class_matches_loop(labels3d):
    emb = _emb(labels3d, seed=2)
    g = torch.Generator().manual_seed(3)
    sem = torch.randint(0, 3, labels3d.shape, generator=g)
    sem[0, 0] = 255
    out = InstanceLoss(weight_edge=1, weight_bone=1)(emb, labels3d, sem)
    cls = torch.where(sem == 255, 0, sem).numpy()
    pull, push, norm = R.ref_discriminative(emb.double().numpy(), labels3d.numpy(), classes=cls)
    assert abs(out["pull"].item() - pull) < ATOL
    assert abs(out["push"].item() - push) < ATOL
    assert abs(out["norm"].item() - norm) < ATOL


def _ref_semantic(logits, lab, mode, cw, ignore=255, eps=1e-5):
    x = logits.double().numpy()
    b, c = x.shape[:2]
    lab = lab.numpy()
    valid = lab != ignore
    ce_num = ce_den = 0.0
    dices, ious = [], []
    for i in range(b):
        for ch in range(c):
            t = ((lab[i] == ch) & valid[i]).astype(float)
            if mode == "sigmoid":
                p = 1 / (1 + np.exp(-x[i, ch]))
                bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
                ce_num += (cw[ch] * bce * valid[i]).sum()
                ce_den += valid[i].sum()
            else:
                z = x[i] - x[i].max(0)
                p = np.exp(z[ch]) / np.exp(z).sum(0)
            p = p * valid[i]
            if t.sum() > 0:
                inter = (p * t).sum()
                dices.append((2 * inter + eps) / (p.sum() + t.sum() + eps))
                ious.append((inter + eps) / (p.sum() + t.sum() - inter + eps))
        if mode == "softmax":
            z = x[i] - x[i].max(0)
            logp = z - np.log(np.exp(z).sum(0))
            for idx in zip(*np.nonzero(valid[i]), strict=True):
                k = lab[i][idx]
                ce_num += -cw[k] * logp[(k, *idx)]
                ce_den += cw[k]
    return ce_num / ce_den, 1 - np.mean(dices), 1 - np.mean(ious)


@pytest.mark.parametrize("mode,dim", list(itertools.product(["sigmoid", "softmax"], [2, 3])))
def test_semantic_matches_loop(mode, dim):
    g = torch.Generator().manual_seed(4)
    shape = (2, 4, 7, 8) if dim == 3 else (2, 9, 8)
    c = 4
    logits = torch.randn(shape[0], c, *shape[1:], generator=g) * 2
    lab = torch.randint(0, c - 1, shape, generator=g)  # class 3 absent
    lab[0, ..., :2] = 255
    cw = [1.0, 2.0, 0.5, 1.5]
    out = SemanticLoss(mode, weight_ce=1, weight_dice=1, weight_iou=1, class_weights=cw)(logits, lab)
    ce, dice, iou = _ref_semantic(logits, lab, mode, cw)
    assert abs(out["ce"].item() - ce) < ATOL
    assert abs(out["dice"].item() - dice) < ATOL
    assert abs(out["iou"].item() - iou) < ATOL
    assert abs(out["loss"].item() - (ce + dice + iou)) < 1e-4


def test_semantic_ids_mask_channels_and_errors():
    logits = torch.randn(2, 5, 6, 6)
    lab = torch.randint(0, 2, (2, 6, 6))
    ids = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    a = SemanticLoss()(logits, lab, ids)["ce"]
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(lab, 5).movedim(-1, 1).float(),
                                             reduction="none")
    # sample 0 leaves classes 2-4 unannotated: its background channel is masked too (issue 11)
    ref = (bce[0, 1:2].sum() + bce[1].sum()) / (36 * 1 + 36 * 5)
    assert abs(a.item() - ref.item()) < ATOL
    with pytest.raises(LossInputError, match="outside"):
        SemanticLoss()(logits, torch.full((2, 6, 6), 7))
    with pytest.raises(LossConfigError):
        SemanticLoss(mode="softmaxx")


def _ref_sample_own(field, lab, pos):
    """Own-label multilinear interpolation, per voxel loop."""
    out = np.zeros(lab.shape)
    s = lab.ndim
    for idx in np.ndindex(*lab.shape):
        p = pos[(slice(None), *idx)]
        base = np.floor(p).astype(int)
        fr = p - base
        acc = 0.0
        for corner in itertools.product((0, 1), repeat=s):
            q = base + np.array(corner)
            if np.any(q < 0) or np.any(q >= np.array(lab.shape)) or lab[tuple(q)] != lab[idx]:
                continue
            acc += np.prod([fr[a] if corner[a] else 1 - fr[a] for a in range(s)]) * field[tuple(q)]
        out[idx] = acc
    return out


@pytest.mark.parametrize("dim", [2, 3])
def test_skeleton_embedding_matches_loop(dim):
    shape = (11, 12) if dim == 2 else (4, 7, 8)
    lab = R.random_labels(shape, 4, b=2, seed=8)
    g = torch.Generator().manual_seed(5)
    off = torch.randn(2, dim, *shape, generator=g) * 2
    out = SkeletonEmbeddingLoss(delta_push=6.0)(off, lab)
    tg = T.skeleton_targets(lab)
    o, lb = off.double().numpy(), lab.numpy()
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), 0)
    fg = lb > 0
    nfg = fg.sum()
    pull = pen = ben = 0.0
    push = []
    for b in range(2):
        e = grid + o[b]
        near = tg["nearest"][b].double().numpy()
        pull += (((e - near) ** 2).sum(0) * fg[b]).sum()
        gr = tg["edt_grad"][b].double().numpy()
        ou = o[b] / np.maximum(np.linalg.norm(o[b], axis=0), 1e-5)
        gu = gr / np.maximum(np.linalg.norm(gr, axis=0), 1e-5)
        pen += ((1 - (ou * gu).sum(0)) * fg[b]).sum()
        dn = _ref_sample_own(tg["edt_norm"][b].double().numpy(), lb[b], e)
        ben += ((1 - dn) * fg[b]).sum()
        ids = np.unique(lb[b][fg[b]])
        mus = [e[:, lb[b] == k].mean(1) for k in ids]
        if len(ids):
            acc = [max(6.0 - np.linalg.norm(mus[i] - mus[j]), 0) ** 2
                   for i in range(len(ids)) for j in range(len(ids)) if i != j]
            push.append(np.sum(acc) / max(len(ids) * (len(ids) - 1), 1))
    assert abs(out["pull"].item() - pull / nfg) < 1e-4 * max(1, pull / nfg)
    assert abs(out["penalty"].item() - pen / nfg) < ATOL
    assert abs(out["benefit"].item() - ben / nfg) < ATOL
    assert abs(out["push"].item() - np.mean(push)) < 1e-4


@pytest.mark.parametrize("dim", [2, 3])
def test_geometry_loss_matches_loop(dim, labels2d, labels3d):
    lab = labels2d if dim == 2 else labels3d
    c = dim + dim * dim + 4
    g = torch.Generator().manual_seed(6)
    geo = torch.randn(lab.shape[0], c, *lab.shape[1:], generator=g)
    img = torch.rand(lab.shape[0], 1, *lab.shape[1:], generator=g)
    out = GeometryLoss(loss_dir="smooth_l1", loss_cov="mse", loss_raw="l1", sigma=2.0)(geo, lab, img)
    tg = T.geometry_targets(lab, img, sigma=2.0)
    x = geo.double().numpy()
    fg = lab.numpy() > 0
    d_, c_, r_ = [], [], []
    for b in range(lab.shape[0]):
        dd = x[b, :dim] - tg["direction"][b].double().numpy()
        ad = np.abs(dd)
        sl1 = np.where(ad < 1, 0.5 * dd**2, ad - 0.5)
        d_.append(sl1[:, fg[b]].mean())
        c_.append(((x[b, dim:dim + dim * dim] - tg["structure"][b].double().numpy()) ** 2)[:, fg[b]].mean())
        p = 1 / (1 + np.exp(-x[b, dim + dim * dim:]))
        r_.append(np.abs(p - tg["raw"][b].double().numpy()).mean())
    assert abs(out["dir"].item() - np.mean(d_)) < ATOL
    assert abs(out["cov"].item() - np.mean(c_)) < ATOL
    assert abs(out["raw"].item() - np.mean(r_)) < ATOL


def test_centroid_projection_heads():
    lab = R.random_labels((10, 11), 3, b=2, seed=9)
    img = torch.rand(2, 1, 10, 11)
    loss = CentroidEmbeddingLoss(embedding_dim=4, spatial_dims=2, w_dir=1, w_cov=0.5, w_raw=2,
                                 dir_target="skeleton")
    emb = _emb(lab).requires_grad_()
    out = loss(emb, lab, image=img)
    tg = T.geometry_targets(lab, img, dir_target="skeleton")
    with torch.no_grad():
        e = emb.movedim(1, -1)
        pd = loss.proj_dir(e).movedim(-1, 1)
        fg = (lab > 0).numpy()
        ref = np.mean([((pd[b] - tg["direction"][b]) ** 2).numpy()[:, fg[b]].mean() for b in range(2)])
        pr = torch.sigmoid(loss.proj_raw(e).movedim(-1, 1))
        rref = ((pr - tg["raw"]) ** 2).mean()
    assert abs(out["dir"].item() - ref) < ATOL
    assert abs(out["raw"].item() - rref.item()) < ATOL
    out["loss"].backward()
    assert torch.isfinite(emb.grad).all() and loss.proj_cov.weight.grad is not None
    with pytest.raises(LossConfigError):
        CentroidEmbeddingLoss(w_dir=1.0)


def test_gradcheck_pairwise_and_losses():
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pairwise_distance, (x,))
    lab = torch.tensor([[[1, 1, 2], [0, 2, 3]], [[4, 4, 4], [0, 5, 5]]])
    emb = (torch.randn(2, 3, 2, 3, dtype=torch.float64) * 0.8).requires_grad_()
    ins = InstanceLoss(weight_edge=2, weight_bone=2, delta_v=0.1, delta_d=1.0)
    assert torch.autograd.gradcheck(lambda e: ins(e, lab)["loss"], (emb,))
    cen = CentroidEmbeddingLoss(delta_v=0.1)
    assert torch.autograd.gradcheck(lambda e: cen(e, lab)["loss"], (emb,))
    logits = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    sem_lab = torch.tensor([[[0, 1, 2], [255, 1, 1]], [[2, 2, 0], [1, 0, 255]]])
    for mode in ("sigmoid", "softmax"):
        sl = SemanticLoss(mode, weight_dice=1, weight_iou=1)
        assert torch.autograd.gradcheck(lambda z, sl=sl: sl(z, sem_lab)["loss"], (logits,))
    off = (torch.randn(2, 2, 2, 3, dtype=torch.float64) * 0.3 + 0.37).requires_grad_()
    sk = SkeletonEmbeddingLoss(delta_push=5.0)
    tg = T.skeleton_targets(lab)
    assert torch.autograd.gradcheck(lambda o: sk(o, lab, tg)["loss"], (off,))


def _vista_batch(dim, k=3, b=2, ids=None):
    shape = (6, 7) if dim == 2 else (3, 5, 6)
    lab = R.random_labels(shape, k, b=b, seed=10)
    if ids is not None:
        lab = ids(lab)
    sem = (lab > 0).long()
    out = {"semantic": torch.randn(b, 5, *shape, requires_grad=True),
           "instance": torch.randn(b, 6, *shape, requires_grad=True),
           "geometry": torch.randn(b, dim + dim * dim + 4, *shape, requires_grad=True)}
    tg = {"semantic": sem, "instance": lab, "image": torch.rand(b, 1, *shape),
          "semantic_ids": torch.tensor([[1, 1, 0, 0, 0]] * b)}
    return out, tg


@pytest.mark.parametrize("dim", [2, 3])
def test_vista_loss_keys_and_backward(dim):
    out, tg = _vista_batch(dim)
    loss = (Vista2DLoss if dim == 2 else Vista3DLoss)(weight_geometry=0.5, weight_dice=1)
    res = loss(out, tg)
    assert {"loss", "loss_sem", "loss_sem/ce", "loss_sem/dice", "loss_sem/iou", "loss_ins",
            "loss_ins/pull", "loss_ins/push", "loss_ins/norm", "loss_geom", "loss_geom/dir",
            "loss_geom/cov", "loss_geom/raw"} <= set(res)
    total = res["loss_sem"] + res["loss_ins"] + 0.5 * res["loss_geom"]
    assert torch.allclose(res["loss"], total)
    res["loss"].backward()
    assert all(torch.isfinite(v.grad).all() for v in out.values())
    with pytest.raises(TypeError):
        VistaLoss(weight_pul=1.0)
    with pytest.raises(LossInputError, match="instance"):
        VistaLoss()(out, {"semantic": tg["semantic"]})


@pytest.mark.parametrize("case", ["empty", "one", "huge_ids", "ignore"])
def test_degenerate_inputs_finite(case):
    def ids(lab):
        if case == "empty":
            return torch.zeros_like(lab)
        if case == "one":
            return (lab > 0).long() * 7
        if case == "huge_ids":
            return torch.where(lab > 0, 2**63 - 1 - lab * 1000003, lab)
        return lab
    out, tg = _vista_batch(3, ids=ids)
    if case == "ignore":
        tg["semantic"] = torch.full_like(tg["semantic"], 255)
    res = VistaLoss(weight_geometry=1.0, weight_dice=1, weight_iou=1)(out, tg)
    assert all(torch.isfinite(v).all() for v in res.values())
    res["loss"].backward()
    assert all(torch.isfinite(v.grad).all() for v in out.values())
    if case in ("empty", "one"):
        assert res["loss_ins/push"].item() == 0
    if case == "huge_ids":
        ref, tg2 = _vista_batch(3)
        for v_ref, v in zip(ref.values(), out.values(), strict=True):
            v_ref.data.copy_(v.data)
        res2 = VistaLoss(weight_geometry=1.0, weight_dice=1, weight_iou=1)(ref, tg2)
        assert torch.allclose(res["loss_ins"], res2["loss_ins"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_half_precision(dtype):
    out, tg = _vista_batch(2)
    half = {k: v.detach().to(dtype).requires_grad_() for k, v in out.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = VistaLoss(weight_geometry=1.0)(half, tg)
    assert res["loss"].dtype == torch.float32 and torch.isfinite(res["loss"])
    res["loss"].backward()
    assert all(torch.isfinite(v.grad.float()).all() for v in half.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    out, tg = _vista_batch(3, k=4)
    loss = VistaLoss(weight_geometry=1.0, weight_dice=1)
    cpu = loss(out, tg)
    gout = {k: v.detach().cuda().requires_grad_() for k, v in out.items()}
    gtg = {k: v.cuda() for k, v in tg.items()}
    with torch.autocast("cuda", dtype=torch.float16):
        gpu = loss.cuda()(gout, gtg)
    for k in cpu:
        assert torch.allclose(cpu[k], gpu[k].cpu(), atol=1e-4, rtol=1e-4), k
    gpu["loss"].backward()
    assert T.instance_edt(gtg["instance"]).is_cuda
    assert torch.equal(T.skeletonize(gtg["instance"]).cpu(), T.skeletonize(tg["instance"]))
