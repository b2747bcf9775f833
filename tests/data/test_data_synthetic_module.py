"""Synthetic DataModule (the embedded default) with augmentation and workers; public API."""

from __future__ import annotations

import torch

import neurons.data as nd


def test_synthetic_datamodule_augmented_workers_reproducible():
    kw = dict(patch_size=(8, 48, 48), batch_size=2, num_workers=2, samples_per_epoch=4,
              augment=True, shape=(24, 64, 64), n_volumes=2, seed=5, val_patches=2)
    a, b = nd.build_datamodule("synthetic", **kw), nd.build_datamodule("synthetic", **kw)
    a.setup("fit")
    b.setup("fit")
    ba, bb = next(iter(a.train_dataloader())), next(iter(b.train_dataloader()))
    assert torch.equal(ba["image"], bb["image"]) and torch.equal(ba["instance"], bb["instance"])
    assert ba["image"].shape == (2, 1, 8, 48, 48) and ba["instance"].dtype == torch.int64
    assert set(torch.unique(ba["semantic"]).tolist()) <= {0, 1, 2, 3, 4, 255}
    assert [r.volume.name for r in a.val_regions] == ["synthetic/1"]  # held-out volume
    v = next(iter(a.val_dataloader()))
    assert v["image"].shape == (2, 1, 8, 48, 48)
    a.setup("test")
    t = next(iter(a.test_dataloader()))
    assert t["volume"] == ["synthetic/test"] and t["image"].shape == (1, 1, 24, 64, 64)


def test_custom_callable_augmentation_keeps_alignment():
    def flip(sample):
        return {k: v[..., ::-1].copy() for k, v in sample.items()}

    dm = nd.build_datamodule("synthetic", patch_size=(32, 32), samples_per_epoch=2, augment=flip,
                             shape=(8, 48, 48), n_volumes=2, seed=1)
    ref = nd.build_datamodule("synthetic", patch_size=(32, 32), samples_per_epoch=2,
                              shape=(8, 48, 48), n_volumes=2, seed=1)
    dm.setup("fit")
    ref.setup("fit")
    x, y = dm.train_set[3], ref.train_set[3]
    assert torch.equal(x["image"], y["image"].flip(-1))
    assert torch.equal(x["semantic"], y["semantic"].flip(-1))


def test_public_api_exports():
    for name in ("build_datamodule", "CombineDataModule", "make_synthetic_volume",
                 "build_augmentation", "UNIFIED_CLASSES", "IGNORE_INDEX", "MissingDataError"):
        assert hasattr(nd, name)
    from neurons.data.labels import IGNORE_INDEX, UNIFIED_CLASSES

    assert nd.IGNORE_INDEX == IGNORE_INDEX == 255 and len(UNIFIED_CLASSES) == 5
