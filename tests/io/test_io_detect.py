"""Format detection, path syntax and keys."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from neurons.io import (
    KeyNotFoundError,
    UnknownFormatError,
    detect_format,
    list_keys,
    open_volume,
    read_volume,
    split_key,
    write_volume,
)

SOURCES = {"hdf5": "a.h5", "tiff": "a.tif", "nrrd": "a.nrrd", "nifti": "a.nii.gz",
           "nifti-plain": "a.nii", "npy": "a.npy", "png": "a.png"}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SOURCES))
def test_misnamed_file_is_detected_by_content(tmp_path, case, array_factory):
    kind = case.split("-")[0]
    arr = array_factory("uint8", (3, 5, 6) if kind != "png" else (5, 6))
    src = tmp_path / SOURCES[case]
    write_volume(src, arr)
    wrong = tmp_path / "volume.dat"  # no / misleading extension
    shutil.copy(src, wrong)
    assert detect_format(wrong) == kind
    misleading = tmp_path / ("misnamed.h5" if kind != "hdf5" else "misnamed.tif")
    shutil.copy(src, misleading)
    assert detect_format(misleading) == kind
    np.testing.assert_array_equal(read_volume(misleading), arr)


def test_zarr_store_detected_by_structure(tmp_path, array_factory):
    pytest.importorskip("zarr")
    arr = array_factory("uint16", (3, 5, 6))
    write_volume(tmp_path / "x.zarr", arr)
    (tmp_path / "x.zarr").rename(tmp_path / "renamed")
    assert detect_format(tmp_path / "renamed") == "zarr"
    np.testing.assert_array_equal(read_volume(tmp_path / "renamed"), arr)


def test_zarr_v2_store_reads(tmp_path, array_factory):
    zarr = pytest.importorskip("zarr")
    arr = array_factory("uint64", (3, 5, 6))
    z = zarr.create_array(str(tmp_path / "v2.zarr"), shape=arr.shape, dtype=arr.dtype,
                          chunks=(1, 5, 6), zarr_format=2)
    z[:] = arr
    z.attrs["resolution"] = [30, 6, 6]
    with open_volume(tmp_path / "v2.zarr") as vol:
        assert vol.attrs["zarr_format"] == 2 and vol.voxel_size == (30.0, 6.0, 6.0)
        np.testing.assert_array_equal(vol[1:, 2], arr[1:, 2])


def test_ome_ngff_scale_is_read(tmp_path):
    zarr = pytest.importorskip("zarr")
    g = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w", zarr_format=2)
    for level, f in (("0", 1), ("1", 2)):
        g.create_array(level, shape=(4, 8 // f, 8 // f), dtype="uint8")
    um = {"type": "space", "unit": "micrometer"}
    g.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": n, **um} for n in "zyx"],
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.04, 0.004, 0.004]}]},
            {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [0.04, 0.008, 0.008]}]},
        ],
    }]
    assert open_volume(tmp_path / "ome.zarr:0").voxel_size == pytest.approx((40, 4, 4))
    assert open_volume(tmp_path / "ome.zarr", key="1").voxel_size == pytest.approx((40, 8, 8))
    with pytest.raises(KeyNotFoundError, match="available keys"):
        open_volume(tmp_path / "ome.zarr")


def test_unknown_format_says_what_was_tried(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, not a volume")
    with pytest.raises(UnknownFormatError) as err:
        open_volume(junk)
    msg = str(err.value)
    for tried in ("HDF5", "TIFF", "NRRD", "NIfTI", ".npy", ".h5"):
        assert tried in msg
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UnknownFormatError, match="Zarr"):
        open_volume(tmp_path / "empty_dir")
    with pytest.raises(UnknownFormatError, match="no such file"):
        open_volume(tmp_path / "missing.h5")


def test_path_key_syntax_and_keys(tmp_path, array_factory):
    raw, ids = array_factory("uint8", (3, 5, 6)), array_factory("uint64", (3, 5, 6))
    f = tmp_path / "sample_A.h5"
    write_volume(f"{f}:volumes/raw", raw, voxel_size=(40, 4, 4))
    write_volume(f, ids, key="volumes/labels/neuron_ids")  # adds a key, keeps the other
    assert list_keys(f) == ["volumes/labels/neuron_ids", "volumes/raw"]
    assert split_key(f"{f}:volumes/raw") == (f, "volumes/raw")
    np.testing.assert_array_equal(read_volume(f"{f}:volumes/raw"), raw)
    np.testing.assert_array_equal(read_volume(f, key="volumes/labels/neuron_ids"), ids)
    with open_volume(f"{f}:/volumes/raw") as vol:
        assert vol.key == "volumes/raw" and vol.voxel_size == (40.0, 4.0, 4.0)
    with pytest.raises(KeyNotFoundError) as err:
        open_volume(f, key="volumes/lables")
    assert "volumes/labels/neuron_ids" in str(err.value) and "volumes/raw" in str(err.value)
    assert err.value.available == ["volumes/labels/neuron_ids", "volumes/raw"]
    with pytest.raises(KeyNotFoundError, match="a key is needed"):
        open_volume(f)  # two arrays: no guessing


def test_single_array_needs_no_key_and_rejects_one(tmp_path, array_factory):
    arr = array_factory("uint8", (3, 5, 6))
    write_volume(tmp_path / "one.h5:deep/group/data", arr)
    np.testing.assert_array_equal(read_volume(tmp_path / "one.h5"), arr)
    write_volume(tmp_path / "a.tif", arr)
    assert list_keys(tmp_path / "a.tif") == []
    with pytest.raises(KeyNotFoundError, match="one unnamed array"):
        open_volume(tmp_path / "a.tif:raw")


def test_volume_object_api(tmp_path, array_factory):
    import pickle

    arr = array_factory("uint32", (5, 6, 7))
    write_volume(tmp_path / "v.h5", arr, voxel_size=(30, 6, 6), chunks=(2, 3, 7), compression="gzip")
    with open_volume(tmp_path / "v.h5") as vol:
        assert (vol.shape, vol.dtype, vol.ndim, len(vol)) == (arr.shape, arr.dtype, 3, 5)
        assert vol.chunks == (2, 3, 7) and vol.compression == "gzip"
        assert vol.attrs["resolution"] == [30.0, 6.0, 6.0]
        blocks = list(vol.iter_blocks(length=2))
        assert [b[0] for b in blocks] == [slice(0, 2), slice(2, 4), slice(4, 5)]
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), arr)
        clone = pickle.loads(pickle.dumps(vol))
        np.testing.assert_array_equal(clone[3], arr[3])
        clone.close()
        assert "v.h5" in repr(vol)
    # writing a Volume streams it and keeps its voxel size
    with open_volume(tmp_path / "v.h5") as vol:
        write_volume(tmp_path / "copy.nrrd", vol)
    assert open_volume(tmp_path / "copy.nrrd").voxel_size == (30.0, 6.0, 6.0)


def test_to_dask_reads_lazily(tmp_path, array_factory):
    pytest.importorskip("dask")
    arr = array_factory("uint16", (6, 8, 8))
    write_volume(tmp_path / "d.h5", arr)
    with open_volume(tmp_path / "d.h5") as vol:
        d = vol.to_dask(chunks=(2, 8, 8))
        assert int(d.sum().compute()) == int(arr.sum(dtype=np.uint64))
