"""Partial labels: classes a sample's dataset does not annotate contribute no gradient (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurons.losses import SemanticLoss, VistaLoss
from neurons.losses.vista import partial_label_mask



def semantic_ids_vector(classes) -> np.ndarray:
    """The (5,) int64 flags of annotated unified classes (neurons.data's batch key, rebuilt here:
    the losses package is tested without neurons-data installed)."""
    out = np.zeros(5, dtype=np.int64)
    out[list(classes)] = 1
    return out


#: annotated unified classes per dataset, as the readers mark them
ANNOTATED = {
    "snemi3d": (0, 1),
    "cremi3d": (0, 1, 2),
    "microns": (0, 1, 2, 3),
    "mitoem2": (0, 3, 4),
    "isbi2012": (0, 1),
    "synthetic": (0, 1, 3, 4),
}
C = 16


def _labels(annotated, shape=(2, 6, 6)):
    """Half background, half the annotated foreground classes."""
    g = torch.Generator().manual_seed(0)
    fg = [c for c in annotated if c > 0]
    lab = torch.zeros(shape, dtype=torch.long)
    pick = torch.randint(0, len(fg), shape, generator=g)
    mask = torch.rand(shape, generator=g) < 0.5
    lab[mask] = torch.tensor(fg)[pick[mask]]
    return lab


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("dataset", sorted(ANNOTATED))
def test_unannotated_classes_get_exactly_zero_gradient(dataset, mode):
    annotated = ANNOTATED[dataset]
    lab = _labels(annotated)
    sid = torch.from_numpy(semantic_ids_vector(annotated))[None].repeat(2, 1)
    logits = torch.randn(2, C, 6, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = SemanticLoss(mode, weight_ce=1.0, weight_dice=1.0, weight_iou=1.0)(logits, lab, sid)
    loss["loss"].backward()
    unannotated = [c for c in range(5) if c not in annotated]
    bg = (lab == 0).unsqueeze(1)
    for c in unannotated:
        g = logits.grad[:, c : c + 1][bg]
        assert torch.count_nonzero(g) == 0, (dataset, mode, c)
    # annotated classes are still supervised (sigmoid: not the background channel of a partial
    # sample, whose "background" may be an unannotated class)
    for c in annotated:
        if mode == "sigmoid" and c == 0 and unannotated:
            assert torch.count_nonzero(logits.grad[:, 0]) == 0
            continue
        assert logits.grad[:, c].abs().sum() > 0, (dataset, mode, c)


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("dataset", ["mitoem2", "snemi3d", "cremi3d", "synthetic"])
def test_predicting_an_unannotated_class_on_background_costs_nothing(dataset, mode):
    annotated = ANNOTATED[dataset]
    unannotated = [c for c in range(5) if c not in annotated]
    lab = torch.zeros(1, 4, 4, dtype=torch.long)
    lab[0, :2] = max(annotated)  # some annotated foreground
    sid = torch.from_numpy(semantic_ids_vector(annotated))[None]
    good = torch.full((1, C, 4, 4), -10.0)
    good[:, 0] = torch.where(lab[0] == 0, 10.0, -10.0)
    good[:, max(annotated)] = torch.where(lab[0] == max(annotated), 10.0, -10.0)
    wrong = good.clone()
    # confidently predict the unannotated class (and in softmax mode still rank bg above the
    # other annotated classes) on every background voxel
    u = unannotated[0]
    wrong[:, u] = torch.where(lab[0] == 0, 20.0, -10.0)
    crit = SemanticLoss(mode, weight_ce=1.0)
    base = float(crit(good, lab, sid)["ce"])
    cost = float(crit(wrong, lab, sid)["ce"])
    assert cost < 1e-3 and abs(cost - base) < 1e-4
    # without the annotated-classes info, the same prediction is expensive (the bug of issue 11)
    assert float(crit(wrong, lab)["ce"]) > 0.5


def test_softmax_partial_ce_equals_ce_over_the_annotated_classes():
    """Reference: plain cross entropy on the annotated channels only."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 8, 8, generator=g)
    annotated = [0, 3, 4]
    lab = torch.tensor(annotated)[torch.randint(0, 3, (2, 8, 8), generator=g)]
    sid = torch.from_numpy(semantic_ids_vector(annotated))[None].repeat(2, 1)
    got = SemanticLoss("softmax", weight_ce=1.0)(logits, lab, sid)["ce"]
    remap = torch.full((5,), -1, dtype=torch.long)
    remap[annotated] = torch.arange(3)
    ref = F.cross_entropy(logits[:, annotated], remap[lab])
    torch.testing.assert_close(got, ref)


def test_sigmoid_masks_background_channel_of_partial_samples():
    keep = partial_label_mask(torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 1, 1], [1, 1, 1, 1, 1]]),
                              3, 5, torch.device("cpu"), "sigmoid")
    assert keep.tolist() == [
        [False, True, False, False, False],
        [False, False, False, True, True],
        [True, True, True, True, True],
    ]


def test_vista_loss_mixed_batch_per_sample():
    """A combined batch: each sample is masked by its own dataset's classes."""
    lab = torch.zeros(2, 6, 6, dtype=torch.long)
    lab[0, :3] = 1  # snemi3d neuron
    lab[1, :3] = 3  # mitoem2 mitochondrion
    sid = torch.stack([torch.from_numpy(semantic_ids_vector(ANNOTATED["snemi3d"])),
                       torch.from_numpy(semantic_ids_vector(ANNOTATED["mitoem2"]))])
    sem = torch.randn(2, C, 6, 6, requires_grad=True)
    out = {"semantic": sem, "instance": torch.randn(2, 4, 6, 6)}
    VistaLoss(semantic_mode="softmax", weight_dice=1.0, weight_instance=0.0)(
        out, {"semantic": lab, "instance": lab, "semantic_ids": sid})["loss"].backward()
    assert torch.count_nonzero(sem.grad[0, 3:5]) == 0  # mito classes on the SNEMI sample
    assert torch.count_nonzero(sem.grad[1, 1:3]) == 0  # neuron / cleft on the MitoEM2 sample
    assert sem.grad[0, 1].abs().sum() > 0 and sem.grad[1, 3].abs().sum() > 0


# ------------------------------------------------------------------------------------------------
# cheap geometry targets (issue 11): separable nearest-skeleton search vs the exact one
# ------------------------------------------------------------------------------------------------
def _dist(labels, near):
    from neurons.losses import targets as T

    s = labels.dim() - 1
    grid = T._coords(labels.shape[1:], labels.device).T.reshape(1, s, *labels.shape[1:])
    return torch.linalg.vector_norm(near - grid, dim=1)


@pytest.mark.parametrize("sampling", [None, (3.0, 1.0, 1.0)])
def test_separable_nearest_equals_exact_on_boxes(sampling):
    from neurons.losses import targets as T

    g = torch.Generator().manual_seed(5)
    lab = torch.zeros(2, 10, 20, 20, dtype=torch.long)
    for b in range(2):
        for k in range(1, 6):  # random boxes (box-shaped instances: staircase paths stay inside)
            z0, y0, x0 = (int(v) for v in torch.randint(0, 6, (3,), generator=g))
            dz, dy, dx = (int(v) for v in torch.randint(3, 12, (3,), generator=g))
            lab[b, z0:z0 + dz, y0 + 2 * k:y0 + 2 * k + dy, x0:x0 + dx] = k
    sk = T.skeletonize(lab)
    ex = T.nearest_skeleton(lab, sk, sampling)
    sep = T.nearest_skeleton(lab, sk, sampling, method="separable")
    fg = lab > 0
    sp = torch.tensor(sampling or (1.0, 1.0, 1.0)).reshape(1, 3, 1, 1, 1)
    d_ex = torch.linalg.vector_norm((ex - _grid(lab)) * sp, dim=1)
    d_sep = torch.linalg.vector_norm((sep - _grid(lab)) * sp, dim=1)
    torch.testing.assert_close(d_sep[fg], d_ex[fg])
    # every found seed is a skeleton voxel of the voxel's own instance
    idx = sep.permute(0, 2, 3, 4, 1)[fg].long()
    bidx = torch.nonzero(fg)[:, 0]
    assert torch.equal(lab[bidx, idx[:, 0], idx[:, 1], idx[:, 2]], lab[fg])
    assert sk[bidx, idx[:, 0], idx[:, 1], idx[:, 2]].all()


def _grid(labels):
    from neurons.losses import targets as T

    s = labels.dim() - 1
    return T._coords(labels.shape[1:], labels.device).T.reshape(1, s, *labels.shape[1:])


def test_separable_nearest_mostly_exact_on_em_like_labels():
    make_synthetic_volume = pytest.importorskip("neurons.data.synthetic").make_synthetic_volume
    from neurons.losses import targets as T

    v = make_synthetic_volume((12, 48, 48), seed=3)
    lab = torch.from_numpy(v["instance"].astype("int64"))[None]
    sk = T.skeletonize(lab)
    fg = lab > 0
    d_ex = _dist(lab, T.nearest_skeleton(lab, sk))[fg]
    d_sep = _dist(lab, T.nearest_skeleton(lab, sk, method="separable"))[fg]
    same = (d_sep - d_ex).abs() < 1e-4
    assert float(same.float().mean()) > 0.98
    # never closer than the true nearest: seeds are own-instance skeleton voxels (the voxels no
    # staircase reaches get the exact search)
    assert bool((d_sep >= d_ex - 1e-4).all())


# ------------------------------------------------------------------------------------------------
# one embedding segment per instance id (issue 11, item 3)
# ------------------------------------------------------------------------------------------------
def test_instance_grouping_follows_the_id_not_the_class():
    """A mitochondrion's rim (class 4) and interior (class 3) share an id: one segment."""
    sem = torch.zeros(1, 12, 12, dtype=torch.long)
    ids = torch.zeros(1, 12, 12, dtype=torch.long)
    sem[0, 1:9, 1:9], ids[0, 1:9, 1:9] = 4, 1  # rim ...
    sem[0, 3:7, 3:7] = 3  # ... and interior, same id 1
    sem[0, 9:12, 9:12], ids[0, 9:12, 9:12] = 1, 2  # a neuron
    emb = torch.zeros(1, 2, 12, 12)
    emb[0, 0][sem[0] == 4] = 2.0  # rim and interior embedded 2 apart
    emb[0, 0][sem[0] == 3] = 0.0
    emb[0, 1][ids[0] == 2] = 5.0
    loss = VistaLoss(weight_edge=1.0, weight_bone=1.0, delta_v=0.5, delta_d=1.5,
                     instance_per_class=True)  # the old flag no longer splits by class
    out = loss({"semantic": torch.randn(1, 5, 12, 12), "instance": emb},
               {"semantic": sem, "instance": ids})
    # brute-force reference, segments = ids
    pulls, means = [], []
    for k in (1, 2):
        m = ids[0] == k
        e = emb[0][:, m]
        mu = e.mean(1, keepdim=True)
        means.append(mu[:, 0])
        pulls.append(torch.relu((e - mu).norm(dim=0) - 0.5).pow(2).mean())
    ref_pull = torch.stack(pulls).mean()
    assert float(ref_pull) > 0.1  # a split by class would make both halves tight (pull 0)
    torch.testing.assert_close(out["loss_ins/pull"], ref_pull)
    d = (means[0] - means[1]).norm()
    torch.testing.assert_close(out["loss_ins/push"], torch.relu(2 * 1.5 - d).pow(2))
