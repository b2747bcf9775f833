"""DataModules, CombineDataModule, the registry and DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurons.data.datamodule import (
    CombineDataModule,
    CREMI3DDataModule,
    ISBI2012DataModule,
    SNEMI3DDataModule,
    build_datamodule,
)
from neurons.data.errors import MissingDataError, PatchSizeError
from neurons.data.labels import IGNORE_INDEX

KEYS = {"image", "instance", "semantic", "semantic_ids", "dataset"}


def check_batch(batch, batch_size, spatial):
    assert set(batch) == KEYS
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (batch_size, 1, *spatial)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    for k in ("instance", "semantic"):
        assert batch[k].dtype == torch.int64 and batch[k].shape == (batch_size, *spatial)
    assert batch["semantic_ids"].dtype == torch.int64 and batch["semantic_ids"].shape == (batch_size, 5)
    assert isinstance(batch["dataset"], list) and len(batch["dataset"]) == batch_size
    sem = batch["semantic"]
    assert bool(((sem >= 0) & (sem < 5) | (sem == IGNORE_INDEX)).all())
    for b in range(batch_size):  # contiguous per-patch ids
        ids = torch.unique(batch["instance"][b])
        ids = ids[ids > 0]
        assert ids.numel() == 0 or int(ids.max()) == ids.numel()
        # labelled classes are flagged in semantic_ids
        present = torch.unique(sem[b][sem[b] != IGNORE_INDEX])
        assert bool((batch["semantic_ids"][b][present] == 1).all())


def test_snemi_datamodule_train_val_test_disjoint(snemi_tiff_dir):
    dm = SNEMI3DDataModule(snemi_tiff_dir, patch_size=(4, 32, 32), batch_size=2,
                           samples_per_epoch=6, val_patches=None)
    dm.setup("fit")
    (tr,), (va,) = dm.train_regions, dm.val_regions
    assert tr.z1 + dm.gap <= va.z0  # gap between training and validation slabs
    check_batch(next(iter(dm.train_dataloader())), 2, (4, 32, 32))
    vb = list(dm.val_dataloader())
    assert sum(b["image"].shape[0] for b in vb) == len(dm.val_set)
    again = list(dm.val_dataloader())
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(vb, again, strict=True))
    loader = dm.train_dataloader()
    e1 = torch.cat([b["image"] for b in loader])
    e2 = torch.cat([b["image"] for b in loader])
    assert not torch.equal(e1, e2)  # a new epoch draws new patches
    dm.setup("test")
    t = next(iter(dm.test_dataloader()))
    assert t["image"].shape == (1, 1, 24, 64, 64) and t["volume"] == ["snemi3d/AC3"]
    assert t["semantic_ids"].sum() == 0  # unlabelled test stack


def test_cremi_datamodule_2d_and_workers(cremi_dir):
    root, _ = cremi_dir
    dm = build_datamodule("cremi3d", root=root, patch_size=(32, 32), batch_size=2, num_workers=2,
                          samples_per_epoch=8, val_patches=4)
    assert isinstance(dm, CREMI3DDataModule)
    dm.setup("fit")
    assert [r.volume.name for r in dm.val_regions] == ["cremi3d/C"]
    batches = list(dm.train_dataloader())
    assert len(batches) == 4
    for b in batches:
        check_batch(b, 2, (32, 32))
    sems = torch.cat([b["semantic"].flatten() for b in batches])
    assert IGNORE_INDEX in sems.tolist() or 1 in sems.tolist()
    check_batch(next(iter(dm.val_dataloader())), 2, (32, 32))


def test_combine_unified_classes_with_workers(snemi_tiff_dir, cremi_dir, mitoem2_dir):
    common = dict(patch_size=(4, 32, 32), val_fraction=0.25)
    dm = build_datamodule(
        "combine",
        datasets={
            "snemi3d": {"root": snemi_tiff_dir},
            "cremi3d": {"root": cremi_dir[0]},
            "mitoem2": {"root": mitoem2_dir[0], "min_foreground": 0.05},
        },
        weights={"snemi3d": 1.0, "cremi3d": 1.0, "mitoem2": 2.0},
        batch_size=2, num_workers=2, samples_per_epoch=24, **common,
    )
    assert isinstance(dm, CombineDataModule)
    dm.setup("fit")
    seen_ids, seen_sem = {}, set()
    for batch in dm.train_dataloader():
        check_batch(batch, 2, (4, 32, 32))
        for name, ids, sem in zip(batch["dataset"], batch["semantic_ids"], batch["semantic"], strict=True):
            seen_ids[name] = ids.tolist()
            seen_sem |= set(torch.unique(sem).tolist())
            if name == "mitoem2":
                assert set(torch.unique(sem).tolist()) <= {0, 3, 4}
            if name == "snemi3d":
                assert set(torch.unique(sem).tolist()) <= {0, 1}
    assert seen_ids["snemi3d"] == [1, 1, 0, 0, 0]
    assert seen_ids["mitoem2"] == [1, 0, 0, 1, 1]
    assert seen_ids["cremi3d"] in ([1, 1, 1, 1, 0], [1, 1, 1, 0, 0])
    assert {1, 3, 4} <= seen_sem
    picks = [dm.train_set.choose(i)[0] for i in range(2000)]
    assert 0.44 < np.mean(np.array(picks) == 2) < 0.56  # mitoem2 weight 2 of 4
    names = {n for b in dm.val_dataloader() for n in b["dataset"]}
    assert names == {"snemi3d", "cremi3d", "mitoem2"}


def test_combine_rejects_mismatched_patch_sizes(snemi_tiff_dir, isbi_tiff_dir):
    with pytest.raises(PatchSizeError, match="same patch_size"):
        CombineDataModule({
            "snemi3d": SNEMI3DDataModule(snemi_tiff_dir, patch_size=(4, 32, 32)),
            "isbi2012": ISBI2012DataModule(isbi_tiff_dir[0], patch_size=(32, 32)),
        })


def test_bad_inputs(tmp_path, snemi_tiff_dir):
    with pytest.raises(ValueError, match="unknown datamodule 'nope'"):
        build_datamodule("nope")
    dm = build_datamodule("snemi3d", root=tmp_path / "empty", patch_size=(4, 32, 32))
    with pytest.raises(MissingDataError, match="download_snemi3d.py"):
        dm.setup("fit")
    big = SNEMI3DDataModule(snemi_tiff_dir, patch_size=(4, 128, 32))
    with pytest.raises(PatchSizeError, match=r"\(4, 128, 32\).*larger than"):
        big.setup("fit")
    with pytest.raises(PatchSizeError):
        SNEMI3DDataModule(snemi_tiff_dir, patch_size=(4, 32, 32, 2))


def test_isbi_tiff_datamodule(isbi_tiff_dir):
    dm = build_datamodule("isbi2012", root=isbi_tiff_dir[0], patch_size=(32, 32), batch_size=2,
                          samples_per_epoch=4, val_patches=3)
    dm.setup("fit")
    check_batch(next(iter(dm.train_dataloader())), 2, (32, 32))
    assert len(dm.val_set) == 3


def test_isbi2012_real_stack(isbi2012_dir):
    from PIL import Image

    from neurons.data.datasets import ISBI2012Dataset

    (vol,) = ISBI2012Dataset(isbi2012_dir).volumes("train")
    assert vol.shape == (30, 512, 512) and vol.voxel_size == (50.0, 4.0, 4.0)
    out = vol.read((slice(7, 8), slice(None), slice(None)))
    lab = np.asarray(Image.open(isbi2012_dir / "label" / "07.png"))
    img = np.asarray(Image.open(isbi2012_dir / "image" / "07.png"))
    np.testing.assert_allclose(out["image"][0], img / 255.0, atol=1e-6)
    from scipy import ndimage

    _, n = ndimage.label(lab == 255)
    got = out["instance"][0]
    assert len(np.unique(got[got > 0])) == n and ((got > 0) == (lab == 255)).all()
    dm = build_datamodule("isbi2012", root=isbi2012_dir, patch_size=(128, 128), batch_size=2,
                          samples_per_epoch=4, val_patches=4, min_instances=3)
    dm.setup("fit")
    assert dm.val_regions[0].z0 >= dm.train_regions[0].z1 + 1
    b = next(iter(dm.train_dataloader()))
    check_batch(b, 2, (128, 128))
    assert all(int(b["instance"][i].max()) >= 3 for i in range(2))
