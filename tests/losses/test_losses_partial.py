"""Partial labels: classes a sample's dataset does not annotate contribute no gradient (issue 11)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neurons.data.labels import semantic_ids_vector
from neurons.losses import SemanticLoss, VistaLoss
from neurons.losses.vista import partial_label_mask

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
