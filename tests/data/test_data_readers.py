"""Each reader on a small file set laid out exactly like the real release."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from neurons.data.datasets import (
    CREMI3DDataset,
    ISBI2012Dataset,
    MICRONSDataset,
    MitoEM2Dataset,
    SNEMI3DDataset,
)
from neurons.data.errors import MissingDataError, ShapeMismatchError
from neurons.data.labels import IGNORE_INDEX

NO_DATA = np.iinfo(np.uint64).max


def _full(vol):
    return vol.read()


def test_snemi_official_tiff(snemi_tiff_dir):
    import tifffile

    (vol,) = SNEMI3DDataset(snemi_tiff_dir).volumes("train")
    assert vol.name == "snemi3d/AC4" and vol.voxel_size == (30.0, 6.0, 6.0)
    assert vol.shape == (24, 64, 64)
    out = _full(vol)
    raw = tifffile.imread(snemi_tiff_dir / "train-input.tif")
    lab = tifffile.imread(snemi_tiff_dir / "train-labels.tif")
    np.testing.assert_allclose(out["image"], raw / 255.0, atol=1e-6)
    np.testing.assert_array_equal(out["instance"], lab)
    np.testing.assert_array_equal(out["semantic"], (lab > 0).astype(np.uint8))
    assert vol.semantic_ids.tolist() == [1, 1, 0, 0, 0]
    (test,) = SNEMI3DDataset(snemi_tiff_dir).volumes("test")
    assert test.name == "snemi3d/AC3" and not test.has_labels
    t = test.read()
    assert (t["semantic"] == IGNORE_INDEX).all() and test.semantic_ids.sum() == 0


def test_snemi_hdf5_main_key(snemi_h5_dir):
    import h5py

    (vol,) = SNEMI3DDataset(snemi_h5_dir).volumes("train")
    box = (slice(3, 9), slice(10, 42), slice(0, 17))
    out = vol.read(box)
    with h5py.File(snemi_h5_dir / "AC4_labels.h5") as f:
        np.testing.assert_array_equal(out["instance"], f["main"][box])
    (test,) = SNEMI3DDataset(snemi_h5_dir).volumes("test")
    assert test.has_labels and test.shape == (20, 64, 64)


def test_snemi_missing_lists_search_and_script(tmp_path):
    with pytest.raises(MissingDataError) as err:
        SNEMI3DDataset(tmp_path).volumes("train")
    msg = str(err.value)
    assert "train-input.tif" in msg and "AC4_inputs.h5" in msg
    assert "download_snemi3d.py" in msg and str(tmp_path) in msg
    assert isinstance(err.value, FileNotFoundError)


def test_snemi_shape_mismatch(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "train-input.tif", np.zeros((4, 32, 32), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "train-labels.tif", np.zeros((4, 32, 30), np.uint16), photometric="minisblack")
    with pytest.raises(ShapeMismatchError, match=r"\(4, 32, 30\).*\(4, 32, 32\)"):
        SNEMI3DDataset(tmp_path).volumes("train")


def test_cremi_release_layout(cremi_dir):
    root, truth = cremi_dir
    vols = CREMI3DDataset(root).volumes("train")
    assert [v.name for v in vols] == ["cremi3d/A", "cremi3d/B", "cremi3d/C"]
    a = vols[0]
    assert a.voxel_size == (40.0, 4.0, 4.0)
    assert a.semantic_ids.tolist() == [1, 1, 1, 1, 0]  # A has mitochondria
    assert vols[1].semantic_ids.tolist() == [1, 1, 1, 0, 0]
    ids, clefts = truth["A"]
    out = a.read()
    nodata = ids == NO_DATA
    assert out["instance"].dtype == np.uint64
    assert (out["instance"][nodata] == 0).all()
    # issue 11: neurons keep their ids except on the voxels separating touching neurons (then
    # background, instance 0); cleft / mitochondrion voxels get ids of their own
    sem, inst = out["semantic"], out["instance"]
    neuron = sem == 1
    np.testing.assert_array_equal(inst[neuron], ids[neuron])
    cut = (sem == 0) & ~nodata
    assert (inst[cut] == 0).all() and cut.any()
    for z, y, x in np.argwhere(cut)[::97]:  # brute force: a higher neighbour has another id
        nbs = [ids[z + dz, y + dy, x + dx] for dz, dy, dx in ((1, 0, 0), (0, 1, 0), (0, 0, 1))
               if z + dz < ids.shape[0] and y + dy < ids.shape[1] and x + dx < ids.shape[2]]
        assert any(n not in (0, NO_DATA, ids[z, y, x]) for n in nbs)
    assert not np.isin(inst[sem >= 2], ids[neuron]).any()
    # independent reference for the semantic map
    ref = np.where(cut, 0, 1).astype(np.uint8)
    ref[(clefts != 0) & (clefts != NO_DATA)] = 2
    ref[:, 35:42, 35:42] = 3
    ref[nodata] = 255
    np.testing.assert_array_equal(out["semantic"], ref)
    (test,) = CREMI3DDataset(root).volumes("test")
    assert test.name == "cremi3d/A+" and not test.has_labels


def test_cremi_requested_missing_and_padded(tmp_path, cremi_writer):
    rng = np.random.default_rng(0)
    ids, _ = cremi_writer(tmp_path / "sample_B_padded_20160501.hdf", rng, padded=3)
    (vol,) = CREMI3DDataset(tmp_path, volumes=["B"]).volumes("train")
    assert vol.shape == ids.shape  # raw cropped to the labelled region through 'offset'
    import h5py

    with h5py.File(tmp_path / "sample_B_padded_20160501.hdf") as f:
        raw = f["volumes/raw"][3:-3, 3:-3, 3:-3]
    np.testing.assert_allclose(vol.read()["image"], raw / 255.0, atol=1e-6)
    with pytest.raises(MissingDataError, match=r"(?s)sample_C_20160501\.hdf.*download_cremi3d"):
        CREMI3DDataset(tmp_path, volumes=["B", "C"]).volumes("train")


def test_microns_cutouts_latest_version(microns_dir):
    root, seg = microns_dir
    (vol,) = MICRONSDataset(root).volumes("train")
    assert vol.name == "microns/minnie65_mip0_crop_48"
    out = vol.read()
    np.testing.assert_array_equal(out["instance"], seg)  # v1300 chosen over v943
    assert out["instance"].dtype == np.uint64
    (old,) = MICRONSDataset(root, seg_version=943).volumes("train")
    assert old.read()["instance"].max() == 0


def test_microns_zarr(tmp_path, cells):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(0)
    ids = cells((8, 32, 32), 10, rng, dtype=np.uint64)
    zarr.save_array(str(tmp_path / "cut_volume.zarr"), (ids % 200).astype(np.uint8))
    zarr.save_array(str(tmp_path / "cut_segmentation.zarr"), ids)
    (vol,) = MICRONSDataset(tmp_path).volumes("train")  # zarr present: any failure is real
    np.testing.assert_array_equal(vol.read()["instance"], ids)


def test_microns_cloud_adapter(monkeypatch):
    """cloud-volume is optional: the adapter is checked against a fake CloudVolume (XYZC)."""
    import sys
    import types

    data_xyz = np.arange(10 * 12 * 14, dtype=np.uint64).reshape(10, 12, 14)

    class FakeCV:
        def __init__(self, path, mip=0, **kw):
            self.dtype, self.resolution = data_xyz.dtype, np.array([8, 8, 40])

        def __getitem__(self, idx):
            return data_xyz[idx][..., None]

    monkeypatch.setitem(sys.modules, "cloudvolume", types.SimpleNamespace(CloudVolume=FakeCV))
    ds = MICRONSDataset(cloud={"em": "fake://em", "seg": "fake://seg", "start": (2, 1, 3), "size": (4, 5, 6)})
    (vol,) = ds.volumes("train")
    assert vol.shape == (4, 5, 6) and vol.voxel_size == (40.0, 8.0, 8.0)
    got = vol.labels["segmentation"][(slice(None),) * 3]
    np.testing.assert_array_equal(got, data_xyz[3:9, 1:6, 2:6].transpose(2, 1, 0))


def test_mitoem2_nnunet_layout(mitoem2_dir):
    root, truth = mitoem2_dir
    vols = MitoEM2Dataset(root).volumes("train")
    assert [v.name for v in vols] == [
        "mitoem2/Dataset001_ME2-Beta/beta_000",
        "mitoem2/Dataset001_ME2-Beta/beta_001",
        "mitoem2/Dataset004_ME2-Mossy/mossy_000",
    ]
    img, lab = truth[("Beta", "beta_000")]
    v = vols[0]
    assert v.shape == lab.shape  # (z, y, x) after the NIfTI transpose
    assert v.semantic_ids.tolist() == [1, 0, 0, 1, 1]
    assert vols[2].voxel_size == (30.0, 8.0, 8.0)
    out = v.read()
    np.testing.assert_allclose(out["image"], img / 255.0, atol=1e-6)
    np.testing.assert_array_equal(out["semantic"], np.select([lab == 1, lab == 2], [3, 4], 0))
    # two mitochondria -> two instances, boundaries included
    assert sorted(np.unique(out["instance"]).tolist()) == [0, 1, 2]
    assert ((out["instance"] > 0) == (lab > 0)).all()
    only = MitoEM2Dataset(root, datasets=["Mossy"]).volumes("train")
    assert len(only) == 1
    assert len(MitoEM2Dataset(root).volumes("test")) == 2
    with pytest.raises(MissingDataError, match="Nope"):
        MitoEM2Dataset(root, datasets=["Nope"]).volumes("train")


def test_isbi_official_tiffs(isbi_tiff_dir):
    root, lab = isbi_tiff_dir
    (vol,) = ISBI2012Dataset(root).volumes("train")
    out = vol.read()
    assert vol.voxel_size == (50.0, 4.0, 4.0) and out["instance"].shape == (30, 64, 64)
    for z in (0, 17):  # per-section connected components of the interior
        ref, n = ndimage.label(lab[z] == 255)
        got = out["instance"][z]
        assert len(np.unique(got[got > 0])) == n
        # same partition: each reference component maps to exactly one id
        pairs = np.unique(np.stack([ref[ref > 0], got[ref > 0]]), axis=1)
        assert pairs.shape[1] == n
    # ids are unique across sections
    a, b = out["instance"][0], out["instance"][1]
    assert not set(np.unique(a[a > 0])) & set(np.unique(b[b > 0]))
    (test,) = ISBI2012Dataset(root).volumes("test")
    assert not test.has_labels


def test_isbi_missing(tmp_path):
    with pytest.raises(MissingDataError, match="download_isbi2012.py"):
        ISBI2012Dataset(tmp_path).volumes("train")
