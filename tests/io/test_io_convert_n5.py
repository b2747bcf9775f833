"""N5 has no backend (clear errors); convert_volume within one container compares (path, key)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from neurons.io import (
    UnknownFormatError,
    VolumeError,
    convert_volume,
    list_keys,
    open_volume,
    read_volume,
    write_volume,
)
from neurons.io.paths import CONTAINER_SUFFIXES


def test_n5_is_reported_as_unsupported(tmp_path):
    assert ".n5" not in CONTAINER_SUFFIXES
    with pytest.raises(UnknownFormatError, match=r"out\.n5: N5 is not supported.*Zarr or HDF5"):
        write_volume(tmp_path / "out.n5", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(UnknownFormatError, match="N5 is not supported"):
        write_volume(f"{tmp_path / 'out.n5'}:raw", np.zeros((2, 3, 4), np.uint8))
    assert not (tmp_path / "out.n5").exists()
    # an N5 container on disk (root attributes.json, as z5py/zarr N5Store write it)
    for name in ("c.n5", "renamed"):
        root = tmp_path / name
        (root / "raw").mkdir(parents=True)
        (root / "attributes.json").write_text(json.dumps({"n5": "2.0.0"}))
        (root / "raw" / "attributes.json").write_text(
            json.dumps({"dimensions": [4, 3, 2], "blockSize": [4, 3, 2], "dataType": "uint8"})
        )
        with pytest.raises(UnknownFormatError, match=f"{name}: .*N5 .*not supported"):
            open_volume(f"{root}:raw")


def test_convert_into_other_key_of_same_hdf5(tmp_path, array_factory):
    arr = array_factory("uint16", (3, 5, 6))
    f = tmp_path / "c.h5"
    write_volume(f"{f}:raw", arr, voxel_size=(40, 4, 4))
    convert_volume(f"{f}:raw", f"{f}:copy", compression="gzip")
    assert sorted(list_keys(f)) == ["copy", "raw"]
    with h5py.File(f, "r") as h:  # independent reader
        np.testing.assert_array_equal(h["copy"][...], arr)
        np.testing.assert_array_equal(h["raw"][...], arr)
    with open_volume(f, "copy") as vol:
        assert vol.voxel_size == (40.0, 4.0, 4.0)
    convert_volume(f, f"{f}:again", key="raw", dst_key=None)  # key given separately
    np.testing.assert_array_equal(read_volume(f"{f}:again"), arr)


@pytest.mark.parametrize("dst", ["{f}:raw", "{f}", "{f}:/raw/"])
def test_convert_onto_the_source_array_is_refused(tmp_path, array_factory, dst):
    arr = array_factory("uint8", (2, 4, 4))
    f = tmp_path / "s.h5"
    write_volume(f"{f}:raw", arr)
    before = f.read_bytes()
    with pytest.raises(VolumeError, match=r"destination is the source .*s\.h5:raw"):
        convert_volume(f"{f}:raw", dst.format(f=f))
    assert f.read_bytes() == before


def test_convert_onto_same_non_container_file_is_refused(tmp_path, array_factory):
    arr = array_factory("uint8", (2, 4, 4))
    f = tmp_path / "s.tif"
    write_volume(f, arr)
    with pytest.raises(VolumeError, match="destination is the source"):
        convert_volume(f, f)
    np.testing.assert_array_equal(read_volume(f), arr)
