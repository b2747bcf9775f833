"""Fixtures writing small file sets laid out exactly like the real dataset releases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

NO_DATA = np.iinfo(np.uint64).max


def make_cells(shape, n_cells, rng, membrane=True, dtype=np.uint32):
    """Voronoi-like neurite ids elongated along z, with 0-valued membranes between cells."""
    seeds = np.zeros(shape, dtype=np.int64)
    pts = np.stack([rng.integers(0, s, n_cells) for s in shape], axis=1)
    seeds[tuple(pts.T)] = np.arange(1, n_cells + 1)
    sampling = (4.0, 1.0, 1.0) if len(shape) == 3 else (1.0, 1.0)
    idx = ndimage.distance_transform_edt(seeds == 0, sampling=sampling, return_distances=False,
                                         return_indices=True)
    ids = seeds[tuple(idx)]
    if membrane:
        edge = np.zeros(shape, bool)
        for ax in range(len(shape) - 2, len(shape)):
            d = np.diff(ids, axis=ax) != 0
            sl = [slice(None)] * len(shape)
            sl[ax] = slice(1, None)
            edge[tuple(sl)] |= d
        ids[edge] = 0
    return ids.astype(dtype)


def em_like(ids, rng):
    raw = np.where(ids > 0, 180, 40).astype(np.float32) + rng.normal(0, 10, ids.shape)
    return np.clip(raw, 0, 255).astype(np.uint8)


@pytest.fixture
def snemi_tiff_dir(tmp_path):
    """Official challenge release: train-input.tif, train-labels.tif, test-input.tif."""
    import tifffile

    rng = np.random.default_rng(1)
    ids = make_cells((24, 64, 64), 30, rng, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "train-input.tif", em_like(ids, rng), photometric="minisblack")
    tifffile.imwrite(tmp_path / "train-labels.tif", ids, photometric="minisblack")
    tifffile.imwrite(tmp_path / "test-input.tif", em_like(make_cells((24, 64, 64), 20, rng), rng), photometric="minisblack")
    return tmp_path


@pytest.fixture
def snemi_h5_dir(tmp_path):
    """Community HDF5 repackaging: AC4_inputs.h5 / AC4_labels.h5 / AC3_* with dataset 'main'."""
    import h5py

    rng = np.random.default_rng(2)
    for vol, z in (("AC4", 24), ("AC3", 20)):
        ids = make_cells((z, 64, 64), 25, rng, dtype=np.uint16)
        with h5py.File(tmp_path / f"{vol}_inputs.h5", "w") as f:
            f.create_dataset("main", data=em_like(ids, rng), compression="gzip")
        with h5py.File(tmp_path / f"{vol}_labels.h5", "w") as f:
            f.create_dataset("main", data=ids, compression="gzip")
    return tmp_path


def write_cremi(path, rng, shape=(10, 48, 48), mito=False, labels=True, padded=0):
    import h5py

    ids = make_cells(shape, 20, rng, membrane=False, dtype=np.uint64) + np.uint64(1000)
    ids[:, :4, :4] = NO_DATA  # "no data" corner
    clefts = np.full(shape, NO_DATA, dtype=np.uint64)  # official cleft background
    clefts[:, 20:23, 10:30] = 7
    clefts[:, 30:32, 5:9] = 0  # some files also use 0
    raw_ids = np.pad(ids, padded, mode="edge") if padded else ids
    with h5py.File(path, "w") as f:
        raw = f.create_dataset("volumes/raw", data=em_like(raw_ids % 7 + 1, rng))
        raw.attrs["resolution"] = np.array([40.0, 4.0, 4.0])
        if labels:
            n = f.create_dataset("volumes/labels/neuron_ids", data=ids)
            n.attrs["resolution"] = np.array([40.0, 4.0, 4.0])
            c = f.create_dataset("volumes/labels/clefts", data=clefts)
            c.attrs["resolution"] = np.array([40.0, 4.0, 4.0])
            if padded:
                n.attrs["offset"] = np.array([40.0 * padded, 4.0 * padded, 4.0 * padded])
                c.attrs["offset"] = n.attrs["offset"]
            if mito:
                m = np.zeros(shape, dtype=np.uint64)
                m[:, 35:42, 35:42] = 3
                f.create_dataset("volumes/labels/mitochondria", data=m)
    return ids, clefts


@pytest.fixture
def cremi_dir(tmp_path):
    """cremi.org release: sample_{A,B,C}_20160501.hdf and sample_A+_20160601.hdf (raw only)."""
    rng = np.random.default_rng(3)
    truth = {}
    for v in "ABC":
        truth[v] = write_cremi(tmp_path / f"sample_{v}_20160501.hdf", rng, mito=v == "A")
    write_cremi(tmp_path / "sample_A+_20160601.hdf", rng, labels=False)
    return tmp_path, truth


@pytest.fixture
def microns_dir(tmp_path):
    """Cutouts as written by download_microns.py (HDF5 key 'main', uint64 segment ids)."""
    import h5py

    rng = np.random.default_rng(4)
    ids = make_cells((20, 48, 48), 25, rng, dtype=np.uint64)
    big = np.uint64(864691135000000000)  # MICrONS-like magnitudes ...
    seg = np.where(ids > 0, ids + big, 0).astype(np.uint64)
    seg[seg == big + np.uint64(3)] = np.uint64(2**63 + 5)  # ... and one id >= 2**63
    with h5py.File(tmp_path / "minnie65_mip0_crop_48_volume.h5", "w") as f:
        f.create_dataset("main", data=em_like(ids, rng), compression="gzip")
    for ver, data in (("943", np.zeros_like(seg)), ("1300", seg)):
        with h5py.File(tmp_path / f"minnie65_mip0_crop_48_v{ver}_segmentation.h5", "w") as f:
            f.create_dataset("main", data=data, compression="gzip")
    return tmp_path, seg


def write_nifti(path, zyx, spacing_xyz):
    import nibabel as nib

    affine = np.diag([*spacing_xyz, 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(zyx.transpose(2, 1, 0)), affine), str(path))


@pytest.fixture
def mitoem2_dir(tmp_path):
    """nnU-Net layout of the Zenodo zips: DatasetNNN_ME2-<Name>/imagesTr|labelsTr/*.nii.gz."""
    rng = np.random.default_rng(5)
    truth = {}
    for num, name, n_cases, spacing in (("001", "Beta", 2, (16, 16, 16)), ("004", "Mossy", 1, (8, 8, 30))):
        d = tmp_path / f"Dataset{num}_ME2-{name}"
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (d / sub).mkdir(parents=True)
        (d / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "EM"}, "labels": {"background": 0, "mito": 1, "boundary": 2},
            "numTraining": n_cases, "file_ending": ".nii.gz"}))
        for c in range(n_cases):
            case = f"{name.lower()}_{c:03d}"
            lab = np.zeros((16, 40, 48), np.uint8)
            lab[2:10, 5:15, 5:15] = 2
            lab[3:9, 6:14, 6:14] = 1
            lab[2:12, 20:34, 25:40] = 2
            lab[3:11, 21:33, 26:39] = 1
            img = em_like(lab.astype(np.int64) % 2, rng)
            write_nifti(d / "imagesTr" / f"{case}_0000.nii.gz", img, spacing)
            write_nifti(d / "labelsTr" / f"{case}.nii.gz", lab, spacing)
            truth[(name, case)] = (img, lab)
        write_nifti(d / "imagesTs" / f"{name.lower()}_900_0000.nii.gz", img, spacing)
    return tmp_path, truth


@pytest.fixture
def isbi_tiff_dir(tmp_path):
    """Official ISBI 2012 release: train-volume.tif, train-labels.tif (255 interior), test-volume.tif."""
    import tifffile

    rng = np.random.default_rng(6)
    ids = make_cells((30, 64, 64), 40, rng)
    lab = np.where(ids > 0, 255, 0).astype(np.uint8)
    tifffile.imwrite(tmp_path / "train-volume.tif", em_like(ids, rng), photometric="minisblack")
    tifffile.imwrite(tmp_path / "train-labels.tif", lab, photometric="minisblack")
    tifffile.imwrite(tmp_path / "test-volume.tif", em_like(ids, rng), photometric="minisblack")
    return tmp_path, lab


@pytest.fixture
def cells():
    """The ``make_cells(shape, n_cells, rng, membrane=True, dtype=np.uint32)`` helper."""
    return make_cells


@pytest.fixture
def cremi_writer():
    """The ``write_cremi(path, rng, shape, mito, labels, padded)`` helper."""
    return write_cremi
