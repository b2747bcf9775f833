"""Issue 11, data side: held-out slabs fit the patch depth, per-item targets, annotated classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurons.data import ArraySource, LabeledVolume, PatchSizeError, build_datamodule, split_regions
from neurons.data.datasets import SyntheticDataset
from neurons.data.labels import semantic_ids_vector


def _volume(name: str, depth: int, xy: int = 24) -> LabeledVolume:
    rng = np.random.default_rng(depth)
    ids = rng.integers(0, 4, (depth, xy, xy))
    return LabeledVolume(
        name=name,
        dataset="x",
        image=ArraySource(rng.random((depth, xy, xy)).astype(np.float32)),
        labels={"instance": ArraySource(ids), "semantic": ArraySource((ids > 0).astype(np.uint8))},
        annotated=(0, 1),
    )


@pytest.mark.parametrize(
    ("depth", "patch", "val", "train"),
    [
        (100, 32, (68, 100), (0, 64)),  # SNEMI3D AC4, the recipe's patch depth: 32 held out, not 20
        (64, 24, (40, 64), (0, 36)),  # a 64-section MICrONS cutout, the recipe's depth 24
        (30, 1, (24, 30), (0, 20)),  # ISBI 2012 in 2D: round(0.2 * 30) = 6 sections
    ],
)
def test_val_slab_is_at_least_one_patch_deep(depth, patch, val, train):
    (t,), (v,) = split_regions([_volume("a/v", depth)], 0.2, "slab", gap=4, min_depth=patch)
    assert (v.z0, v.z1) == val and (t.z0, t.z1) == train
    assert v.z1 - v.z0 >= patch and t.z1 - t.z0 >= patch and t.z1 + 4 <= v.z0


def test_too_thin_volume_names_the_knobs():
    with pytest.raises(PatchSizeError, match="val_fraction") as err:
        split_regions([_volume("a/v", 64)], 0.2, "slab", gap=4, min_depth=32)
    assert "patch_size" in str(err.value) and "gap" in str(err.value)


def test_item_transform_runs_on_train_and_val_items():
    seen = []

    def add(item):
        seen.append(tuple(item["instance"].shape))
        item["twice"] = item["instance"] * 2
        return item

    dm = build_datamodule("synthetic", patch_size=(8, 24, 24), shape=(16, 32, 32), n_volumes=2,
                          samples_per_epoch=2, val_patches=1, item_transform=add)
    dm.setup("fit")
    for item in (dm.train_set[0], dm.val_set[0]):
        assert torch.equal(item["twice"], item["instance"] * 2)
    assert seen == [(8, 24, 24), (8, 24, 24)]


def test_synthetic_volumes_do_not_claim_clefts():
    (v, *_) = SyntheticDataset(shape=(8, 32, 32), n_volumes=1).volumes("train")
    sem = v.read()["semantic"]
    assert not (sem == 2).any()  # the generator never makes clefts ...
    assert v.semantic_ids.tolist()[2] == 0  # ... so class 2 is not marked annotated
    assert v.semantic_ids.tolist()[:2] == [1, 1] and v.semantic_ids.tolist()[3] == 1
    assert (semantic_ids_vector(v.annotated) == v.semantic_ids).all()
