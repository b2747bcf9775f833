"""Affinity targets (against a brute-force per-pair loop) and the affinity loss."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from neurons.losses import AffinityLoss, LossInputError, VistaLoss, affinity_targets

OFFSETS_2D = [(-1, 0), (0, -1), (0, -3), (-3, 0), (2, 1), (0, 9), (-20, 0)]
OFFSETS_3D = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, -3, 0), (0, 0, -4), (-2, 0, 0),
              (1, 1, -1), (0, 0, 30)]


def brute_force(labels, offsets, ignore=None, mask=None):
    """Per-pair Python loop: the definition of the targets, written independently."""
    lab = np.asarray(labels, dtype=object)
    b, *spatial = lab.shape
    t = np.zeros((b, len(offsets), *spatial), np.float32)
    v = np.zeros((b, len(offsets), *spatial), bool)
    for n, (k, off) in itertools.product(range(b), enumerate(offsets)):
        for p in itertools.product(*(range(s) for s in spatial)):
            q = tuple(pi + oi for pi, oi in zip(p, off, strict=True))
            if not all(0 <= qi < s for qi, s in zip(q, spatial, strict=True)):
                continue
            a, c = lab[(n, *p)], lab[(n, *q)]
            known = not (ignore is not None and (a == ignore or c == ignore))
            if mask is not None:
                known = known and bool(mask[(n, *p)]) and bool(mask[(n, *q)])
            v[(n, k, *p)] = known
            t[(n, k, *p)] = float(a == c and a != 0)
    return t, v


def _labels(shape, n_ids, seed, b=2):
    """Blocky random instance maps (runs of equal ids, so many 'connected' pairs)."""
    g = np.random.default_rng(seed)
    coarse = g.integers(0, n_ids, size=(b, *[-(-s // 2) for s in shape]))
    lab = coarse
    for ax in range(1, len(shape) + 1):
        lab = np.repeat(lab, 2, axis=ax)
    return lab[(slice(None), *(slice(0, s) for s in shape))]


@pytest.mark.parametrize(
    "shape,offsets", [((9, 11), OFFSETS_2D), ((4, 7, 6), OFFSETS_3D)], ids=["2d", "3d"]
)
def test_targets_match_brute_force(shape, offsets):
    lab = _labels(shape, 5, seed=len(shape))
    lab[0].flat[::7] = 99  # ignore label sprinkled in
    t, v = affinity_targets(torch.from_numpy(lab), offsets, ignore_label=99)
    rt, rv = brute_force(lab, offsets, ignore=99)
    np.testing.assert_array_equal(v.numpy(), rv)
    np.testing.assert_array_equal(t.numpy(), rt)
    assert t.dtype == torch.float32 and v.dtype == torch.bool
    assert 0 < rt.mean() < 1 and 0 < rv.mean() < 1  # the case exercises both classes


def test_background_pairs_are_cut_and_offsets_beyond_patch_invalid():
    lab = torch.zeros(1, 5, 5, dtype=torch.int64)
    lab[0, 1:4, 1:4] = 7
    t, v = affinity_targets(lab, [(0, -1), (0, -5), (6, 0)])
    assert not v[:, 1:].any()  # |offset| >= size: no pair fits
    bg = (lab[0, :, 1:] == 0) & (lab[0, :, :-1] == 0)
    assert bool(v[0, 0, :, 1:].all()) and not v[0, 0, :, 0].any()
    assert float(t[0, 0, :, 1:][bg].sum()) == 0  # background-background is "not connected"
    assert float(t[0, 0].sum()) == 3 * 2  # 3 rows of 7s, 2 interior pairs each


def test_uint64_ids_compared_bit_exactly():
    big = 2**64 - 1
    ids = np.array([[[2**63 + 1, 2**63 + 1, 2**63 + 2, big],
                     [2**53 + 1, 2**53, 2**53, 0]]], dtype=np.uint64)
    # float32/float64 would merge 2**63 + 1 with 2**63 + 2 and 2**53 + 1 with 2**53
    assert np.float64(ids[0, 0, 1]) == np.float64(ids[0, 0, 2])
    offs = [(0, -1), (-1, 0), (0, 1)]
    t, v = affinity_targets(torch.from_numpy(ids), offs, ignore_label=big)
    rt, rv = brute_force(ids.astype(object), offs, ignore=big)
    np.testing.assert_array_equal(t.numpy(), rt)
    np.testing.assert_array_equal(v.numpy(), rv)
    assert t[0, 0, 0, 1] == 1 and t[0, 0, 0, 2] == 0 and t[0, 0, 1, 1] == 0
    assert not v[0, 0, 0, 3]  # touches the ignore label 2**64 - 1
    t64, _ = affinity_targets(torch.from_numpy(ids.view(np.int64)), offs)
    np.testing.assert_array_equal(t64.numpy(), rt)  # int64 view of the same bits: same result


def test_mask_and_channel_axis_and_single_slice_3d():
    lab = _labels((1, 6, 8), 4, seed=3)  # (B, D=1, H, W) with 3-D offsets: one section deep
    mask = np.random.default_rng(0).random(lab.shape) > 0.2
    t, v = affinity_targets(torch.from_numpy(lab), OFFSETS_3D, mask=torch.from_numpy(mask))
    rt, rv = brute_force(lab, OFFSETS_3D, mask=mask)
    np.testing.assert_array_equal(t.numpy(), rt)
    np.testing.assert_array_equal(v.numpy(), rv)
    t2, v2 = affinity_targets(torch.from_numpy(lab[:, 0])[:, None], OFFSETS_2D)  # (B, 1, H, W)
    rt2, rv2 = brute_force(lab[:, 0], OFFSETS_2D)
    np.testing.assert_array_equal(t2.numpy(), rt2)
    np.testing.assert_array_equal(v2.numpy(), rv2)


@pytest.mark.parametrize(
    "labels,offsets,match",
    [
        (torch.zeros(1, 4, 4), [(0, -1)], "float"),
        (torch.zeros(1, 4, 4, dtype=torch.long), [(0, -1, 0)], "shape"),
        (torch.zeros(1, 4, 4, dtype=torch.long), [], "non-empty"),
        (torch.zeros(1, 4, 4, dtype=torch.long), [(0, 0.5)], "integers"),
    ],
)
def test_target_errors(labels, offsets, match):
    with pytest.raises(LossInputError, match=match):
        affinity_targets(labels, offsets)


def _bce(x, t):  # by hand: -t log s(x) - (1 - t) log(1 - s(x))
    s = 1 / (1 + math.exp(-x))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


def test_class_balanced_bce_hand_computed():
    # one channel (0, -1) on a 1x5 row [1, 1, 1, 1, 2]: valid pairs at x = 1..4 with targets
    # 1, 1, 1, 0 -> 3 connected, 1 cut; weights 4 / (2 * 3) and 4 / (2 * 1)
    lab = torch.tensor([[[1, 1, 1, 1, 2]]])
    logits = torch.tensor([[[[5.0, 0.5, -1.0, 2.0, 1.5]]]])
    e = [_bce(0.5, 1), _bce(-1.0, 1), _bce(2.0, 1), _bce(1.5, 0)]
    balanced = ((4 / 6) * (e[0] + e[1] + e[2]) + 2.0 * e[3]) / 4
    plain = sum(e) / 4
    out = AffinityLoss([(0, -1)], weight_dice=0.0)(logits, lab)
    assert out["bce"].item() == pytest.approx(balanced, rel=1e-6)
    assert out["loss"].item() == pytest.approx(balanced, rel=1e-6)
    out = AffinityLoss([(0, -1)], weight_dice=0.0, balance=False)(logits, lab)
    assert out["bce"].item() == pytest.approx(plain, rel=1e-6)
    # the first column (pair leaves the patch) never matters
    logits2 = logits.clone()
    logits2[..., 0] = -40.0
    assert AffinityLoss([(0, -1)])(logits2, lab)["loss"].item() == pytest.approx(
        AffinityLoss([(0, -1)])(logits, lab)["loss"].item(), rel=1e-6
    )


def test_soft_dice_hand_computed():
    lab = torch.tensor([[[1, 1, 1, 1, 2]]])
    logits = torch.tensor([[[[0.0, 0.5, -1.0, 2.0, 1.5]]]])
    p = [1 / (1 + math.exp(-x)) for x in (0.5, -1.0, 2.0, 1.5)]
    t = [1, 1, 1, 0]
    eps = 1e-5
    d_pos = (2 * sum(a * b for a, b in zip(p, t, strict=True)) + eps) / (sum(p) + sum(t) + eps)
    q, u = [1 - a for a in p], [1 - b for b in t]
    d_neg = (2 * sum(a * b for a, b in zip(q, u, strict=True)) + eps) / (sum(q) + sum(u) + eps)
    out = AffinityLoss([(0, -1)], weight_bce=0.0)(logits, lab)
    assert out["dice"].item() == pytest.approx(1 - (d_pos + d_neg) / 2, rel=1e-6)


@pytest.mark.parametrize("shape,offsets", [((10, 12), OFFSETS_2D[:4]), ((3, 8, 8), OFFSETS_3D[:5])])
def test_loss_gradient_and_perfect_prediction(shape, offsets):
    lab = torch.from_numpy(_labels(shape, 4, seed=5))
    logits = torch.randn(2, len(offsets), *shape, requires_grad=True)
    out = AffinityLoss(offsets)(logits, lab)
    out["loss"].backward()
    _, valid = affinity_targets(lab, offsets)
    g = logits.grad
    assert torch.isfinite(g).all() and g[valid].abs().sum() > 0
    assert (g[~valid] == 0).all()  # invalid pairs get no gradient
    t, _ = affinity_targets(lab, offsets)
    perfect = AffinityLoss(offsets)((t * 2 - 1) * 30.0, lab)
    assert perfect["loss"].item() < 1e-4 < out["loss"].item()


def test_channel_mismatch_and_missing_offsets():
    lab = torch.zeros(1, 6, 6, dtype=torch.long)
    with pytest.raises(LossInputError, match="2 channels but 1 offsets"):
        AffinityLoss([(0, -1)])(torch.zeros(1, 2, 6, 6), lab)
    with pytest.raises(LossInputError, match="no affinity offsets"):
        AffinityLoss()(torch.zeros(1, 1, 6, 6), lab)


def test_vista_loss_adds_the_affinity_term_and_masks_ignored_voxels():
    g = torch.Generator().manual_seed(0)
    b, shape, offs = 2, (12, 12), OFFSETS_2D[:3]
    ins = torch.from_numpy(_labels(shape, 4, seed=7))
    sem = (ins > 0).long()
    sem[:, :4] = 255  # unannotated rows
    outputs = {
        "semantic": torch.randn(b, 3, *shape, generator=g),
        "instance": torch.randn(b, 4, *shape, generator=g),
        "affinity": torch.randn(b, len(offs), *shape, generator=g, requires_grad=True),
    }
    batch = {"semantic": sem, "instance": ins}
    base = VistaLoss(semantic_mode="softmax")(outputs, batch)
    full = VistaLoss(semantic_mode="softmax", weight_affinity=0.5, affinity_offsets=offs)(
        outputs, batch
    )
    ref = AffinityLoss(offs)(outputs["affinity"], ins, mask=sem != 255)
    assert full["loss_aff"].item() == pytest.approx(ref["loss"].item(), rel=1e-6)
    assert full["loss"].item() == pytest.approx(base["loss"].item() + 0.5 * ref["loss"].item(),
                                                rel=1e-5)
    full["loss"].backward()
    assert (outputs["affinity"].grad[:, :, :3] == 0).all()  # pairs inside the ignored rows
    with pytest.raises(LossInputError, match="affinity"):
        VistaLoss(weight_affinity=1.0, affinity_offsets=offs)(
            {k: v for k, v in outputs.items() if k != "affinity"}, batch
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_targets_stay_on_cuda():
    lab = torch.from_numpy(_labels((16, 16), 4, seed=1)).cuda()
    t, v = affinity_targets(lab, OFFSETS_2D)
    assert t.is_cuda and v.is_cuda
    rt, rv = affinity_targets(lab.cpu(), OFFSETS_2D)
    assert torch.equal(t.cpu(), rt) and torch.equal(v.cpu(), rv)
