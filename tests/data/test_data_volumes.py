"""``data.name: volumes``: user volumes in HDF5, Zarr, TIFF and PNG sections, splits, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from skimage.measure import label as sk_label

import neurons.data as nd
from neurons.data import (
    EmptyDatasetError,
    MissingDataError,
    PatchSizeError,
    ShapeMismatchError,
    VolumeSpecError,
)
from neurons.io import write_volume

SHAPE = (12, 48, 48)


def _same_partition(a, b):
    """True when two label arrays induce the same partition (a bijection between their ids)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    pairs = np.unique(np.stack([a, b]), axis=1).shape[1]
    return pairs == np.unique(a).size == np.unique(b).size


@pytest.fixture
def files(tmp_path, cells):
    """One volume per format; raw is a function of the labels, so alignment is checkable."""
    rng = np.random.default_rng(0)
    ids = cells(SHAPE, 25, rng, dtype=np.uint64) + np.uint64(2**63)  # ids >= 2**63
    ids[ids == np.uint64(2**63)] = 0
    order = np.unique(ids)  # raw encodes the rank of the id: 0 background, 1..25
    raw_inst = np.searchsorted(order, ids).astype(np.uint8) * 9 + 10
    raw_inst[ids == 0] = 0
    write_volume(tmp_path / "inst.h5:raw", raw_inst, voxel_size=(30, 6, 6))
    write_volume(tmp_path / "inst.h5:seg", ids, voxel_size=(30, 6, 6))

    mito = np.zeros(SHAPE, np.uint8)
    mito[2:9, 5:15, 5:15] = 1
    mito[3:11, 20:30, 25:44] = 1
    mito[:, 40:46, 2:8] = 1
    write_volume(tmp_path / "raw.zarr", np.where(mito > 0, 200, 50).astype(np.uint8))
    write_volume(tmp_path / "mito.zarr", mito)

    sem = (cells(SHAPE, 12, rng, membrane=False, dtype=np.int64) % 4).astype(np.uint16)  # 0..3
    write_volume(tmp_path / "sem_raw.tif", (sem * 60 + 10).astype(np.uint8))
    write_volume(tmp_path / "sem.tif", sem)

    sec = tmp_path / "sections"
    sec.mkdir()
    from PIL import Image

    two = cells(SHAPE, 30, rng, dtype=np.uint8)
    for z in range(SHAPE[0]):
        Image.fromarray(np.where(two[z] > 0, 255, 0).astype(np.uint8)).save(sec / f"raw_{z}.png")
        Image.fromarray((two[z] > 0).astype(np.uint8) * 255).save(sec / f"lab_{z}.png")
    return {"dir": tmp_path, "ids": ids, "raw_inst": raw_inst, "mito": mito, "sem": sem, "two": two}


def _specs(d):
    return [
        {"name": "inst", "raw": f"{d}/inst.h5:raw", "labels": f"{d}/inst.h5:seg"},
        {"name": "mito", "raw": f"{d}/raw.zarr", "labels": f"{d}/mito.zarr", "label_kind": "mask",
         "label_class": "mitochondrion"},
        {"name": "sem", "raw": f"{d}/sem_raw.tif", "labels": f"{d}/sem.tif", "label_kind": "semantic",
         "class_map": {1: "neuron", 2: "mitochondrion", 3: "synaptic_cleft"}},
        {"name": "png", "raw": f"{d}/sections/raw_*.png", "labels": f"{d}/sections/lab_*.png",
         "label_kind": "mask", "label_class": "neuron", "connectivity": "2d", "dataset": "png"},
    ]


def test_every_format_reads_aligned_labels(files):
    d = files["dir"]
    reader = nd.VolumesDataset(volumes=_specs(d))
    vols = {v.name: v for v in reader.volumes("train")}
    assert sorted(vols) == ["png/png", "volumes/inst", "volumes/mito", "volumes/sem"]
    # instances (HDF5, uint64 ids >= 2**63 kept exactly), voxel size from the file
    inst = vols["volumes/inst"]
    assert inst.voxel_size == (30.0, 6.0, 6.0)
    box = (slice(3, 9), slice(10, 40), slice(5, 45))
    got = inst.read(box)
    np.testing.assert_array_equal(got["instance"], files["ids"][box])
    np.testing.assert_array_equal(got["semantic"], (files["ids"][box] != 0).astype(np.uint8))
    np.testing.assert_allclose(got["image"] * 255, files["raw_inst"][box], atol=1e-3)
    assert inst.semantic_ids.tolist() == [1, 1, 0, 0, 0]
    # binary mask (Zarr): components of the whole volume, class mitochondrion
    mito = vols["volumes/mito"].read()
    assert vols["volumes/mito"].semantic_ids.tolist() == [1, 0, 0, 1, 0]
    np.testing.assert_array_equal(mito["semantic"], files["mito"] * 3)
    assert _same_partition(mito["instance"], sk_label(files["mito"], connectivity=1))
    assert mito["instance"].max() == 3
    # semantic map (TIFF) through the class map; instances = components per class
    sem = vols["volumes/sem"].read()
    want = np.array([0, 1, 3, 2], np.uint8)[files["sem"]]
    np.testing.assert_array_equal(sem["semantic"], want)
    ref = np.zeros(SHAPE, np.int64)
    for c in (1, 2, 3):
        lab = sk_label(want == c, connectivity=1)
        ref[lab > 0] = lab[lab > 0] + 1000 * c
    assert _same_partition(sem["instance"], ref)
    assert vols["volumes/sem"].semantic_ids.tolist() == [1, 1, 1, 1, 0]
    # PNG sections via a glob, 2-D components (per section)
    png = vols["png/png"].read()
    fg = files["two"] > 0
    np.testing.assert_array_equal(png["semantic"], fg.astype(np.uint8))
    ref = np.stack([sk_label(fg[z], connectivity=1) + 1000 * z * (fg[z]) for z in range(SHAPE[0])])
    assert _same_partition(png["instance"], ref)


@pytest.mark.parametrize("patch", [(32, 32), (4, 32, 32)])
def test_batches_keep_patch_and_labels_aligned(files, patch):
    d = files["dir"]
    dm = nd.build_datamodule("volumes", volumes=_specs(d), patch_size=patch, batch_size=2,
                             samples_per_epoch=16, val_patches=4, gap=1, seed=3)
    dm.setup("fit")
    seen = set()
    for batch in dm.train_dataloader():
        assert batch["image"].shape[2:] == patch and batch["instance"].shape[1:] == patch
        for i in range(len(batch["dataset"])):
            img = (batch["image"][i, 0].numpy() * 255).round().astype(np.int64)
            inst, sem = batch["instance"][i].numpy(), batch["semantic"][i].numpy()
            ids = tuple(batch["semantic_ids"][i].tolist())
            seen.add(ids)
            if batch["dataset"][i] == "png":  # raw 255 inside the cells
                assert np.array_equal(sem == 1, img == 255) and np.array_equal(inst > 0, img == 255)
            elif ids == (1, 1, 0, 0, 0):  # inst: raw = 9 * rank + 10 inside
                assert _same_partition(img, inst)
                assert np.array_equal(sem == 1, img > 0)
            elif ids == (1, 0, 0, 1, 0):  # mito: raw 200 inside
                assert np.array_equal(sem == 3, img == 200) and np.array_equal(inst > 0, img == 200)
            else:  # semantic: raw = 60 * value + 10
                assert np.array_equal(sem, np.array([0, 1, 3, 2])[(img - 10) // 60])
    assert len(seen) >= 2
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[2:] == patch
    # 'auto' split: group "volumes" (3 volumes) holds out its last volume by name, the single
    # "png" volume a slab after a gap
    assert {r.volume.name for r in dm.val_regions} == {"volumes/sem", "png/png"}
    assert "volumes/sem" not in {r.volume.name for r in dm.train_regions}
    slabs = {r.volume.name: (r.z0, r.z1) for r in dm.train_regions + dm.val_regions if r.volume.name == "png/png"}
    (t0, t1), (v0, v1) = sorted(r for r in [(r.z0, r.z1) for r in dm.train_regions + dm.val_regions
                                             if r.volume.name == "png/png"])
    assert t0 == 0 and t1 < v0 and v1 == SHAPE[0] and slabs


@pytest.fixture
def zyx_volume(tmp_path, cells):
    """uint16 raw = 1000 * z + y, so each patch tells where it was read from."""
    z, y, x = np.meshgrid(*(np.arange(s) for s in (30, 64, 40)), indexing="ij")
    raw = (1000 * z + y).astype(np.uint16)
    write_volume(tmp_path / "zyx.h5:raw", raw)
    write_volume(tmp_path / "zyx.h5:seg", cells((30, 64, 40), 20, np.random.default_rng(1)))
    return {"name": "zyx", "raw": f"{tmp_path}/zyx.h5:raw", "labels": f"{tmp_path}/zyx.h5:seg",
            "intensity_range": [0, 65535]}


def _where(image):
    v = (image.numpy() * 65535).round().astype(np.int64)
    return v // 1000, v % 1000


def test_explicit_z_ranges_and_boxes_never_overlap(zyx_volume):
    dm = nd.VolumesDataModule(
        volumes=[zyx_volume], patch_size=(4, 16, 16), batch_size=4, samples_per_epoch=32,
        val_patches=None,
        train=[{"volume": "zyx", "z": [0, 20]}, {"volume": "zyx", "box": [[20, 30], [0, 32], [0, 40]]}],
        val=[{"volume": "zyx", "box": [[22, 30], [40, 64], [0, 40]]}],
    )
    dm.setup("fit")
    assert isinstance(dm.train_regions[1], nd.BoxRegion) and dm.train_regions[1].shape == (10, 32, 40)
    clone = pickle.loads(pickle.dumps(dm.train_set))  # what DataLoader workers get
    for i in (0, 5):
        assert torch.equal(clone[i]["image"], dm.train_set[i]["image"])
        assert torch.equal(clone[i]["instance"], dm.train_set[i]["instance"])
    for batch in dm.train_dataloader():
        for img in batch["image"][:, 0]:
            z, y = _where(img)
            assert ((z < 20) | (y < 32)).all()  # inside the two training regions
    zs, ys = [], []
    for batch in dm.val_dataloader():
        for img in batch["image"][:, 0]:
            z, y = _where(img)
            zs.append(z), ys.append(y)
    z, y = np.concatenate(zs), np.concatenate(ys)
    assert z.min() >= 22 and y.min() >= 40  # only the validation box
    assert set(np.unique(y)) == set(range(40, 64))  # the grid covers it


def test_split_errors(zyx_volume):
    def build(**kw):
        dm = nd.VolumesDataModule(volumes=[zyx_volume], patch_size=(4, 16, 16), **kw)
        dm.setup("fit")

    with pytest.raises(VolumeSpecError, match="overlaps training"):
        build(train=[{"volume": "zyx", "z": [0, 20]}], val=[{"volume": "zyx", "z": [18, 30]}])
    with pytest.raises(EmptyDatasetError, match=r"data.options.val: the split is empty"):
        build(train=["zyx"], val=[])
    with pytest.raises(EmptyDatasetError, match=r"z range \[25, 25\)"):
        build(train=[{"volume": "zyx", "z": [0, 20]}], val=[{"volume": "zyx", "z": [25, 25]}])
    with pytest.raises(PatchSizeError, match=r"larger than Region\(volumes/zyx, z=28:30\)"):
        build(train=[{"volume": "zyx", "z": [0, 20]}], val=[{"volume": "zyx", "z": [28, 30]}])
    with pytest.raises(VolumeSpecError, match=r"data.options.train\[0\].volume = 'nope'.*\['zyx'\]"):
        build(train=[{"volume": "nope"}], val=["zyx"])
    with pytest.raises(VolumeSpecError, match="data.options.train is set but data.options.val"):
        build(train=["zyx"])


def test_ignore_label_and_valid_mask(tmp_path):
    seg = np.zeros((4, 16, 16), np.int32)
    seg[:, 2:8, 2:8] = 5
    seg[:, 10:14, 10:14] = -1  # "not annotated"
    valid = np.ones_like(seg, np.uint8)
    valid[:, :, 15] = 0
    write_volume(tmp_path / "v.h5:raw", np.zeros(seg.shape, np.uint8))
    write_volume(tmp_path / "v.h5:seg", seg)
    write_volume(tmp_path / "v.h5:valid", valid)
    vol = nd.VolumesDataset(tmp_path, volumes=[
        {"raw": "v.h5:raw", "labels": "v.h5:seg", "ignore_label": -1, "mask": "v.h5:valid"}
    ]).volumes("train")[0]
    out = vol.read()
    assert vol.name == "volumes/v:raw"
    want = np.where(seg == 5, 1, 0).astype(np.uint8)
    want[seg == -1] = 255
    want[valid == 0] = 255
    np.testing.assert_array_equal(out["semantic"], want)
    np.testing.assert_array_equal(out["instance"], np.where(want == 1, 5, 0))


def test_patch_scope_components_are_computed_per_region(files):
    d = files["dir"]
    spec = {**_specs(d)[1], "components": "patch"}
    vol = nd.VolumesDataset(volumes=[spec]).volumes("train")[0]
    box = (slice(0, 12), slice(0, 48), slice(10, 48))
    out = vol.read(box)
    assert _same_partition(out["instance"], sk_label(files["mito"][box], connectivity=1))


def test_build_time_validation(tmp_path, files):
    d = files["dir"]
    write_volume(tmp_path / "small.h5:seg", np.zeros((12, 48, 40), np.uint32))
    write_volume(tmp_path / "float.h5:seg", np.zeros(SHAPE, np.float32))
    write_volume(tmp_path / "vs.h5:seg", np.zeros(SHAPE, np.uint32), voxel_size=(40, 4, 4))

    def build(**spec):
        return nd.VolumesDataset(volumes=[{"raw": f"{d}/inst.h5:raw", **spec}]).volumes("train")

    with pytest.raises(ShapeMismatchError, match=r"small.h5:seg has shape \(12, 48, 40\).*inst.h5:raw has shape \(12, 48, 48\)"):
        build(labels=f"{tmp_path}/small.h5:seg")
    with pytest.raises(VolumeSpecError, match="float32; labels must be integers"):
        build(labels=f"{tmp_path}/float.h5:seg")
    with pytest.raises(ShapeMismatchError, match=r"voxel size \[30.0, 6.0, 6.0\].*\[40.0, 4.0, 4.0\]"):
        build(labels=f"{tmp_path}/vs.h5:seg")
    assert build(labels=f"{tmp_path}/vs.h5:seg", voxel_size=[40, 4, 4])[0].voxel_size == (40, 4, 4)
    with pytest.raises(VolumeSpecError, match=r"labels.*'lables'.*raw.*seg"):
        build(labels=f"{d}/inst.h5:lables")
    with pytest.raises(MissingDataError, match="nothere.h5 does not exist"):
        build(labels=f"{tmp_path}/nothere.h5:seg")
    with pytest.raises(MissingDataError, match="no files match"):
        build(labels=f"{tmp_path}/none_*.png")
    with pytest.raises(VolumeSpecError, match=r"volumes\[0\]: unknown key 'label'"):
        build(label="x")
    with pytest.raises(VolumeSpecError, match="class_map"):
        build(labels=f"{d}/inst.h5:seg", label_kind="semantic")
    with pytest.raises(VolumeSpecError, match=r"label_class = 'axon'"):
        build(labels=f"{d}/inst.h5:seg", label_class="axon")
    with pytest.raises(VolumeSpecError, match="no volume has 'labels'"):
        build()


def test_volumes_inside_combine(files):
    d = files["dir"]
    dm = nd.build_datamodule(
        "combine", root="unused",
        datasets={"volumes": {"volumes": [_specs(d)[1]], "split": "slab", "gap": 1},
                  "synthetic": {"shape": [16, 48, 48], "n_volumes": 2}},
        weights={"volumes": 1.0, "synthetic": 1.0}, patch_size=(4, 32, 32), samples_per_epoch=24,
        batch_size=4,
    )
    dm.setup("fit")
    kinds = {}
    for batch in dm.train_dataloader():
        for name, ids, img, sem in zip(batch["dataset"], batch["semantic_ids"], batch["image"],
                                       batch["semantic"], strict=True):
            kinds[name] = tuple(ids.tolist())
            if name == "volumes":
                assert np.array_equal(sem.numpy() == 3, (img[0].numpy() * 255).round() == 200)
    assert kinds["volumes"] == (1, 0, 0, 1, 0)
    assert "synthetic" in kinds and kinds["synthetic"] != kinds["volumes"]
    names = {dm.val_set[i]["dataset"] for i in range(len(dm.val_set))}
    assert names == {"volumes", "synthetic"}


def test_test_split_lists_volumes_by_name(files):
    d = files["dir"]
    specs = _specs(d)
    dm = nd.VolumesDataModule(volumes=specs[:2], test=["mito", {"raw": f"{d}/sem_raw.tif"}],
                              patch_size=(4, 32, 32), split="volume")
    dm.setup("test")
    names = [dm.test_set[i]["volume"] for i in range(len(dm.test_set))]
    assert names == ["volumes/mito", "volumes/sem_raw"]
    with pytest.raises(VolumeSpecError, match=r"test\[0\] = 'x'"):
        nd.VolumesDataModule(volumes=specs[:1], test=["x"])


def test_semantic_rims_join_the_nearest_mitochondrion():
    from neurons.data.datasets.volume_labels import LabelRule

    lab = np.zeros((3, 12, 20), np.uint8)
    lab[:, 2:9, 2:9] = 2      # rim of mito A
    lab[:, 3:8, 3:8] = 1      # interior of A
    lab[:, 2:9, 9:16] = 2     # rim of mito B, touching A's rim
    lab[:, 3:8, 10:15] = 1
    lab[1, 10, 0:5] = 7       # a value outside the class map: background
    rule = LabelRule("semantic", class_map=((1, 3), (2, 4)))
    inst, sem = rule(lab)
    assert rule.annotated == (0, 3, 4)
    np.testing.assert_array_equal(sem, np.array([0, 3, 4] + [0] * 5, np.uint8)[lab])
    a, b = inst[1, 5, 5], inst[1, 5, 12]
    assert a != b and a > 0 and b > 0
    # brute force: every rim voxel takes the id of the closest interior voxel
    interior = np.argwhere(lab == 1)
    for p in np.argwhere(lab == 2):
        d = ((interior - p) ** 2).sum(1)
        closest = {int(inst[tuple(q)]) for q in interior[d == d.min()]}
        assert int(inst[tuple(p)]) in closest
    assert set(np.unique(inst)) == {0, a, b}
