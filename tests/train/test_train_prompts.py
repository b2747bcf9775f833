"""Point prompts from ground truth and the targets of a prompted forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurons.train import prompted_targets, sample_point_prompts


def _labels(shape, seed=0):
    g = np.random.default_rng(seed)
    ins = np.zeros(shape, dtype=np.int64)
    ins[..., 2:6, 2:6] = 11
    ins[..., 8:14, 3:9] = 2**62 + 5  # huge id, must survive untouched
    ins[..., 1:4, 10:15] = 3
    sem = (ins > 0).astype(np.int64)
    sem[ins == 3] = 3
    sem[..., 0, :] = 255  # ignored row
    return torch.from_numpy(sem), torch.from_numpy(ins), g


@pytest.mark.parametrize("shape", [(2, 16, 16), (2, 4, 16, 16)])
def test_instance_prompts_inside_and_outside_the_object(shape):
    sem, ins, _ = _labels(shape)
    torch.manual_seed(0)
    p = sample_point_prompts(sem, ins, num_pos=7, num_neg=5, mode="instance")
    s = len(shape) - 1
    assert p.point_coords.shape == (shape[0], 12, s) and p.point_labels.shape == (shape[0], 12)
    for b in range(shape[0]):
        chosen = int(p.target_instance[b])
        assert chosen in (11, 2**62 + 5, 3)
        idx = p.point_coords[b].long()
        vals = ins[b][tuple(idx.T)]
        semv = sem[b][tuple(idx.T)]
        lab = p.point_labels[b]
        assert (vals[lab == 1] == chosen).all()
        assert (vals[lab == 0] != chosen).all()
        assert (semv != 255).all()  # never in ignored voxels
        assert torch.equal(p.target_mask[b], (ins[b] == chosen) & (sem[b] != 255))
        expected_sem = 3 if chosen == 3 else 1
        assert int(p.target_semantic[b]) == expected_sem


def test_every_instance_gets_prompted_uniformly():
    sem, ins, _ = _labels((1, 16, 16))
    torch.manual_seed(1)
    seen = [int(sample_point_prompts(sem, ins, 1, 1).target_instance[0]) for _ in range(300)]
    counts = np.bincount(np.unique(seen, return_inverse=True)[1])
    assert len(counts) == 3 and counts.min() > 60  # uniform over instances, not voxels


def test_class_mode_and_empty_samples():
    sem, ins, _ = _labels((2, 16, 16))
    sem[1] = 0
    ins[1] = 0
    p = sample_point_prompts(sem, ins, 3, 2, mode="class")
    assert int(p.target_semantic[0]) in (1, 3) and int(p.target_instance[0]) == 0
    c = int(p.target_semantic[0])
    idx = p.point_coords[0].long()
    assert (sem[0][tuple(idx.T)][p.point_labels[0] == 1] == c).all()
    # sample without foreground: all padding, empty mask
    assert (p.point_labels[1] == -1).all() and not p.target_mask[1].any()


def test_generator_makes_prompts_reproducible():
    sem, ins, _ = _labels((2, 16, 16))
    a = sample_point_prompts(sem, ins, 4, 4, generator=torch.Generator().manual_seed(5))
    b = sample_point_prompts(sem, ins, 4, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.point_coords, b.point_coords)


def test_prompted_targets_follow_the_prompted_instance():
    sem, ins, _ = _labels((2, 16, 16))
    p = sample_point_prompts(sem, ins, 2, 2, generator=torch.Generator().manual_seed(0))
    t = prompted_targets({"semantic": sem, "instance": ins, "semantic_ids": torch.ones(2, 5)}, p)
    for b in range(2):
        chosen = int(p.target_instance[b])
        mask = (ins[b] == chosen) & (sem[b] != 255)
        assert torch.equal(t["instance"][b], mask.long())
        assert torch.equal(t["semantic"][b][mask], sem[b][mask])
        assert (t["semantic"][b][~mask & (sem[b] != 255)] == 0).all()
        assert (t["semantic"][b][sem[b] == 255] == 255).all()
    assert "semantic_ids" in t


def test_bad_inputs_raise():
    sem, ins, _ = _labels((1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        sample_point_prompts(sem, ins[:, :4])
    with pytest.raises(ValueError, match="mode"):
        sample_point_prompts(sem, ins, mode="voxel")
