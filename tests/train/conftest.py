"""Fixtures for neurons.train tests: tiny run overrides and dataset files in their real layouts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "disabled")


def tiny_overrides(out: Path, *extra: str) -> list[str]:
    """Overrides that make a synthetic run take seconds on a CPU."""
    return [
        f"training.output_dir={out}",
        "data.patch_size=[8,32,32]",
        "data.batch_size=2",
        "data.samples_per_epoch=8",
        "data.val_patches=2",
        "data.augment=false",
        "++data.options.shape=[16,48,48]",
        "++data.options.n_volumes=2",
        "model.preset=tiny",
        "training.num_sanity_val_steps=0",
        "training.log_every_n_steps=1",
        "training.cpu_threads=1",
        "logging.progress_bar=none",
        "logging.model_summary=false",
        "calibration.enabled=false",  # tests that need it turn it on (test_train_calibration.py)
        *extra,
    ]


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Runs with ``training.cpu_threads`` change torch's global thread count: put it back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny(tmp_path):
    """Callable building tiny synthetic overrides writing under ``tmp_path``."""

    def make(*extra: str, out: Path | None = None) -> list[str]:
        return tiny_overrides(out or tmp_path / "run", *extra)

    return make


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


# ------------------------------------------------------------------------------------------------
# Dataset files laid out as the real releases (small, generated)
# ------------------------------------------------------------------------------------------------
def _blocky(shape, rng, block=(4, 12, 12)):
    """Instance ids of box-shaped cells separated by 1-voxel membranes, plus raw EM-like image."""
    z, y, x = np.indices(shape)
    bz, by, bx = block
    ids = (z // bz) * 10000 + (y // by) * 100 + (x // bx) + 1
    membrane = (y % by == 0) | (x % bx == 0)
    ids = np.where(membrane, 0, ids)
    raw = np.where(membrane, 40, 190) + rng.normal(0, 12, shape)
    return np.clip(raw, 0, 255).astype(np.uint8), ids


def write_snemi3d(root: Path, shape=(40, 48, 48)) -> Path:
    import tifffile

    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    raw, ids = _blocky(shape, rng)
    tifffile.imwrite(root / "train-input.tif", raw)
    tifffile.imwrite(root / "train-labels.tif", ids.astype(np.uint32))
    tifffile.imwrite(root / "test-input.tif", raw[:8])
    return root


def write_cremi3d(root: Path, shape=(20, 48, 48)) -> Path:
    import h5py

    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    nodata = np.iinfo(np.uint64).max
    for i, v in enumerate("ABC"):
        raw, ids = _blocky(shape, rng)
        ids = ids.astype(np.uint64) + np.uint64(1_000_000 * i)
        ids[ids == 1_000_000 * i] = 0
        ids = np.where(ids == 0, np.uint64(1_000_000 * i + 999), ids)  # CREMI labels are dense
        ids[:, :, :2] = nodata
        clefts = np.full(shape, nodata, dtype=np.uint64)
        clefts[:, 10:12, 5:30] = 7
        with h5py.File(root / f"sample_{v}_20160501.hdf", "w") as f:
            d = f.create_dataset("volumes/raw", data=raw)
            d.attrs["resolution"] = (40.0, 4.0, 4.0)
            n = f.create_dataset("volumes/labels/neuron_ids", data=ids)
            n.attrs["resolution"] = (40.0, 4.0, 4.0)
            f.create_dataset("volumes/labels/clefts", data=clefts)
    return root


def write_microns(root: Path, shape=(48, 40, 40)) -> Path:
    import h5py

    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    raw, ids = _blocky(shape, rng)
    big = np.where(ids > 0, ids.astype(np.uint64) + np.uint64(864691135000000000), 0)
    with h5py.File(root / "minnie65_mip0_crop_0_volume.h5", "w") as f:
        f.create_dataset("main", data=raw)
    with h5py.File(root / "minnie65_mip0_crop_0_v1300_segmentation.h5", "w") as f:
        f.create_dataset("main", data=big.astype(np.uint64))
    return root


def write_mitoem2(root: Path, shape=(24, 48, 48)) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(4)
    for sub in ("Dataset001_ME2-Beta",):
        (root / sub / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / sub / "labelsTr").mkdir(parents=True, exist_ok=True)
        for case in ("beta_0", "beta_1"):
            raw, ids = _blocky(shape, rng, block=(6, 16, 16))
            from scipy import ndimage

            mito = (ids > 0) & (ids % 3 == 0)
            lab = mito.astype(np.uint8)
            lab[mito & ~ndimage.binary_erosion(mito)] = 2
            # NIfTI stores (x, y, z)
            nib.save(
                nib.Nifti1Image(raw.T.copy(), np.diag([8.0, 8.0, 8.0, 1.0])),
                root / sub / "imagesTr" / f"{case}_0000.nii.gz",
            )
            nib.save(
                nib.Nifti1Image(lab.T.copy(), np.diag([8.0, 8.0, 8.0, 1.0])),
                root / sub / "labelsTr" / f"{case}.nii.gz",
            )
    return root


def write_isbi2012(root: Path, n=12, size=64) -> Path:
    from PIL import Image

    rng = np.random.default_rng(5)
    for part in ("image", "label"):
        (root / "train" / part).mkdir(parents=True, exist_ok=True)
    raw, ids = _blocky((n, size, size), rng, block=(1, 16, 16))
    for i in range(n):
        Image.fromarray(raw[i]).save(root / "train" / "image" / f"{i:02d}.png")
        Image.fromarray(np.where(ids[i] > 0, 255, 0).astype(np.uint8)).save(
            root / "train" / "label" / f"{i:02d}.png"
        )
    return root


def write_volumes(root: Path, shape=(40, 48, 48)) -> Path:
    """The layout configs/volumes.yaml names: one HDF5 file with raw and instance labels."""
    import h5py

    rng = np.random.default_rng(6)
    root.mkdir(parents=True, exist_ok=True)
    raw, ids = _blocky(shape, rng)
    with h5py.File(root / "stack.h5", "w") as f:
        f.create_dataset("raw", data=raw)
        f.create_dataset("labels", data=ids.astype(np.uint64))
    return root


WRITERS = {
    "snemi3d": write_snemi3d,
    "cremi3d": write_cremi3d,
    "microns": write_microns,
    "mitoem2": write_mitoem2,
    "isbi2012": write_isbi2012,
    "volumes": write_volumes,
}


@pytest.fixture(scope="session")
def dataset_roots(tmp_path_factory) -> dict[str, Path]:
    """One small generated file set per real dataset, in the release layout."""
    base = tmp_path_factory.mktemp("datasets")
    return {name: writer(base / name) for name, writer in WRITERS.items()}
