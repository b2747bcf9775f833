"""The real ISBI 2012 stack (skipped when ../shared/data is absent)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from neurons.io import open_volume, read_volume, write_volume


def test_isbi2012_slices_read_as_stack(isbi2012_dir):
    stack = read_volume(isbi2012_dir / "image")
    assert stack.shape == (30, 512, 512) and stack.dtype == np.uint8
    # independent reference: Pillow, file by file
    for z in (0, 9, 10, 29):
        ref = np.asarray(Image.open(isbi2012_dir / "image" / f"{z:02d}.png"))
        np.testing.assert_array_equal(stack[z], ref)
    with open_volume(isbi2012_dir / "label") as labels:
        assert labels.shape == (30, 512, 512)
        assert set(np.unique(labels[5]).tolist()) <= {0, 255}


def test_isbi2012_through_every_container(tmp_path, isbi2012_dir):
    with open_volume(isbi2012_dir / "image") as vol:
        sub = vol[:4, 100:228, 200:328]
    for name in ("s.h5", "s.tif", "s.nrrd", "s.nii.gz", "s.zarr"):
        if name.endswith(".zarr"):
            pytest.importorskip("zarr")
        write_volume(tmp_path / name, sub, voxel_size=(50, 4, 4))
        with open_volume(tmp_path / name) as back:
            assert back.voxel_size == (50.0, 4.0, 4.0)
            np.testing.assert_array_equal(back[1:3, ::7, 5], sub[1:3, ::7, 5])
