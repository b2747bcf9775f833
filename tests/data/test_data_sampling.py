"""Held-out splits, random / grid / whole-volume sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurons.data.errors import EmptyDatasetError, PatchSizeError
from neurons.data.labels import semantic_ids_vector
from neurons.data.sampling import (
    EpochSampler,
    GridPatchDataset,
    MixtureDataset,
    RandomPatchDataset,
    WholeVolumeDataset,
)
from neurons.data.splits import split_regions
from neurons.data.volume import ArraySource, LabeledVolume, identity_labels


def make_volume(name, shape, seed=0, fg=0.5):
    rng = np.random.default_rng(seed)
    # the section index is encoded in the image so a patch's z range can be read off it
    z, y, x = np.indices(shape)
    image = ((z * 8 + (y + x) % 2) % 256).astype(np.uint8)
    inst = (rng.random(shape) < fg) * (1 + (y // 4) * 100 + x // 4).astype(np.uint64)
    inst[inst > 0] += np.uint64(2**63)  # ids that do not fit int64
    sem = (inst > 0).astype(np.uint8)
    return LabeledVolume(
        name=name,
        dataset=name.split("/")[0],
        image=ArraySource(image),
        labels={"instance": ArraySource(inst), "semantic": ArraySource(sem)},
        converter=identity_labels,
        annotated=(0, 1),
    )


def _zset(region):
    return {(region.volume.name, z) for z in range(region.z0, region.z1)}


def test_slab_split_disjoint_with_gap():
    v = make_volume("a/v", (40, 16, 16))
    train, val = split_regions([v], 0.2, "slab", gap=3)
    assert (train[0].z0, train[0].z1) == (0, 29) and (val[0].z0, val[0].z1) == (32, 40)
    assert not _zset(train[0]) & _zset(val[0])
    with pytest.raises(EmptyDatasetError, match="too few"):
        split_regions([make_volume("a/s", (4, 8, 8))], 0.5, "slab", gap=3)


def test_volume_split_per_group_and_auto():
    vols = [make_volume(f"g1/v{i}", (6, 8, 8), i) for i in range(5)] + [make_volume("g2/only", (20, 8, 8))]
    train, val = split_regions(vols, 0.2, "auto", gap=2)
    names_t = {r.volume.name for r in train}
    names_v = {r.volume.name for r in val}
    assert names_v == {"g1/v4", "g2/only"} and "g1/v4" not in names_t
    t_vox = set().union(*map(_zset, train))
    v_vox = set().union(*map(_zset, val))
    assert not t_vox & v_vox  # no (volume, section) in both
    with pytest.raises(EmptyDatasetError):
        split_regions([make_volume("g/one", (6, 8, 8))], 0.2, "volume")
    with pytest.raises(ValueError):
        split_regions(vols, 1.5)


def test_random_patches_stay_in_training_region_and_are_reproducible():
    v = make_volume("a/v", (30, 32, 32))
    train, val = split_regions([v], 0.3, "slab", gap=2)
    ds = RandomPatchDataset(train, (4, 8, 8), samples_per_epoch=10, seed=3)
    zmax = train[0].z1
    for i in range(25):
        item = ds[i]
        img = item["image"][0].numpy()
        assert img.shape == (4, 8, 8)
        zs = np.floor(img[:, 0, 0] * 255 / 8 + 1e-3).astype(int)
        assert np.all(np.diff(zs) == 1) and zs[-1] < zmax  # only training sections
        inst = item["instance"].numpy()
        assert item["instance"].dtype == torch.int64
        k = len(np.unique(inst[inst > 0]))
        assert inst.max() == k  # contiguous 1..K
        assert item["semantic_ids"].tolist() == [1, 1, 0, 0, 0] and item["dataset"] == "a"
    a, b = ds[7], RandomPatchDataset(train, (4, 8, 8), 10, seed=3)[7]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["instance"], b["instance"])
    assert not torch.equal(ds[7]["image"], RandomPatchDataset(train, (4, 8, 8), 10, seed=4)[7]["image"])


def test_2d_patches_and_rejection():
    v = make_volume("a/v", (10, 32, 32), fg=0.0)
    inst = v.labels["instance"].read_all()
    inst[:, :14, :14] = 5  # foreground only in one corner
    v.labels["semantic"] = ArraySource((inst > 0).astype(np.uint8))
    v.labels["instance"] = ArraySource(inst)
    ds = RandomPatchDataset([split_regions([v], 0.2, "slab", 1)[0][0]], (8, 8), 8,
                            min_foreground=0.5, max_tries=200, seed=0)
    for i in range(8):
        item = ds[i]
        assert item["image"].shape == (1, 8, 8) and item["semantic"].shape == (8, 8)
        assert item["semantic"].float().mean() >= 0.5
    plain = RandomPatchDataset(ds.regions, (8, 8), 8, seed=0)
    fg = [plain[i]["semantic"].float().mean().item() for i in range(20)]
    assert min(fg) < 0.5  # without rejection the corner is rarely hit


def test_size_weighted_volume_choice():
    small, big = make_volume("s/v", (4, 16, 16)), make_volume("b/v", (4, 64, 64), 1)
    from neurons.data.splits import Region

    ds = RandomPatchDataset([Region(small, 0, 4), Region(big, 0, 4)], (4, 8, 8), 10)
    expected = np.array([9 * 9, 57 * 57]) / (81 + 57 * 57)
    np.testing.assert_allclose(ds.weights, expected)
    picks = [ds[i]["dataset"] for i in range(300)]
    assert 0.005 < picks.count("s") / 300 < 0.09


def test_grid_covers_region_deterministically():
    v = make_volume("a/v", (10, 20, 18))
    _, val = split_regions([v], 0.5, "slab", gap=0)
    grid = GridPatchDataset(val, (4, 8, 8))
    cover = np.zeros(val[0].shape, int)
    for i in range(len(grid)):
        region, (z, y, x) = grid.location(i)
        cover[z:z + 4, y:y + 8, x:x + 8] += 1
        assert torch.equal(grid[i]["image"], GridPatchDataset(val, (4, 8, 8))[i]["image"])
    assert cover.min() >= 1
    sub = GridPatchDataset(val, (4, 8, 8), max_patches=3)
    assert len(sub) == 3
    with pytest.raises(PatchSizeError, match=r"larger than"):
        GridPatchDataset(val, (6, 8, 8))


def test_whole_volume_and_mixture_and_sampler():
    vols = [make_volume("a/v", (3, 8, 8)), make_volume("b/v", (2, 6, 6))]
    ds3 = WholeVolumeDataset(vols, 3)
    assert len(ds3) == 2 and ds3[1]["image"].shape == (1, 2, 6, 6) and ds3[0]["volume"] == "a/v"
    ds2 = WholeVolumeDataset(vols, 2)
    assert len(ds2) == 5 and ds2[4]["image"].shape == (1, 6, 6) and ds2[4]["section"] == 1
    s = EpochSampler(4)
    assert list(s) == [0, 1, 2, 3] and list(s) == [4, 5, 6, 7]
    r1 = RandomPatchDataset(split_regions([vols[0]], 0.3, "slab", 0)[0], (1, 4, 4), 5)
    r2 = RandomPatchDataset([split_regions([vols[1]], 0.3, "slab", 0)[0][0]], (1, 4, 4), 5)
    mix = MixtureDataset([r1, r2], [3, 1], length=400)
    frac = np.mean([mix.choose(i)[0] == 0 for i in range(400)])
    assert 0.65 < frac < 0.85
    assert mix[5]["semantic_ids"].tolist() == semantic_ids_vector([0, 1]).tolist()


def test_epoch_sampler_resumes_under_the_distributed_wrapper():
    """Under DDP Lightning wraps the sampler; a resumed epoch must still draw that epoch's ids."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    n = 8
    shards = [DistributedSamplerWrapper(EpochSampler(n), num_replicas=2, rank=r) for r in (0, 1)]
    for w in shards:
        w.set_epoch(5)  # what the fit loop does at the start of a resumed epoch 5
    got = [list(w) for w in shards]
    assert sorted(got[0] + got[1]) == list(range(5 * n, 6 * n))  # the ranks split epoch 5 exactly
    assert not set(got[0]) & set(got[1])
