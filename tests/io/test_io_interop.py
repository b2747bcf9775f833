"""Files written by nibabel / pynrrd / h5py / tifffile read with neurons.io, and the reverse.

Every array is (Z, Y, X) = (3, 5, 7) with distinct extents, and every voxel size is
(z, y, x) = (30, 5, 4) nm, so a swapped axis or a reversed voxel size fails.
"""

from __future__ import annotations

import h5py
import nibabel as nib
import nrrd
import numpy as np
import pytest
import tifffile

from neurons.io import open_volume, write_volume

VS = (30.0, 5.0, 4.0)  # (z, y, x) nm


@pytest.fixture
def zyx():
    return np.arange(3 * 5 * 7, dtype=np.uint16).reshape(3, 5, 7)


def check(path, arr, vs=VS, key=None):
    with open_volume(path, key) as vol:
        assert vol.shape == arr.shape
        np.testing.assert_array_equal(vol[...], arr)
        assert vol.voxel_size == pytest.approx(vs)


# ---------------------------------------------------------------- external writer -> neurons.io
def test_nibabel_written_nifti(tmp_path, zyx):
    # NIfTI data is (x, y, z); zooms (x, y, z) = (4, 5, 30) nm given in mm through the affine
    img = nib.Nifti1Image(zyx.T.copy(), affine=np.diag([4e-6, 5e-6, 30e-6, 1.0]))
    img.header.set_xyzt_units(xyz="mm")
    for name in ("n.nii", "n.nii.gz"):
        nib.save(img, tmp_path / name)
        check(tmp_path / name, zyx)


def test_pynrrd_spacings_and_space_directions(tmp_path, zyx):
    # pynrrd's default index order is Fortran: data (x, y, z), first NRRD axis = our last
    nrrd.write(str(tmp_path / "s.nrrd"), zyx.T.copy(),
               {"spacings": [4.0, 5.0, 30.0], "units": ["nm", "nm", "nm"]})  # fmt: skip
    check(tmp_path / "s.nrrd", zyx)
    hdr = {"space": "left-posterior-superior", "space units": ["um", "um", "um"],
           "space directions": np.diag([0.004, 0.005, 0.030])}  # fmt: skip
    nrrd.write(str(tmp_path / "d.nrrd"), zyx.T.copy(), hdr)
    check(tmp_path / "d.nrrd", zyx)
    # index_order="C" takes the array as (z, y, x) but header fields stay in file (x-first) order
    nrrd.write(str(tmp_path / "c.nrrd"), zyx, {"spacings": [4.0, 5.0, 30.0]}, index_order="C")
    check(tmp_path / "c.nrrd", zyx)  # no units -> nm


def test_h5py_resolution_and_element_size_um(tmp_path, zyx):
    f = tmp_path / "r.h5"
    with h5py.File(f, "w") as h:
        h.create_dataset("cremi", data=zyx).attrs["resolution"] = [30.0, 5.0, 4.0]
        h.create_dataset("fiji", data=zyx).attrs["element_size_um"] = [0.03, 0.005, 0.004]
    check(f, zyx, key="cremi")
    check(f, zyx, key="fiji")


def test_tifffile_imagej_and_centimetre_resolution(tmp_path, zyx):
    f = tmp_path / "ij.tif"  # ImageJ: resolution in pixels per unit (x, y), spacing along z
    tifffile.imwrite(f, zyx, imagej=True, resolution=(1 / 0.004, 1 / 0.005),
                     metadata={"spacing": 0.03, "unit": "micron", "axes": "ZYX"})  # fmt: skip
    check(f, zyx)
    g = tmp_path / "cm.tif"  # plain TIFF, 2-D: pixels per centimetre (4 nm = 4e-7 cm)
    tifffile.imwrite(g, zyx[0], resolution=(1 / 4e-7, 1 / 5e-7), resolutionunit="CENTIMETER")
    check(g, zyx[0], vs=(5.0, 4.0))


# ---------------------------------------------------------------- neurons.io -> external reader
def test_written_nifti_read_by_nibabel(tmp_path, zyx):
    for name in ("w.nii", "w.nii.gz"):
        write_volume(tmp_path / name, zyx, voxel_size=VS)
        img = nib.load(tmp_path / name)
        np.testing.assert_array_equal(img.get_fdata(), zyx.T)  # all axes reversed
        assert img.get_data_dtype() == np.uint16
        assert img.header.get_xyzt_units()[0] == "micron"  # documented: written in um
        assert img.header.get_zooms() == pytest.approx((0.004, 0.005, 0.03))
        np.testing.assert_allclose(img.affine, np.diag([0.004, 0.005, 0.03, 1.0]), rtol=1e-6)


def test_written_nrrd_read_by_pynrrd(tmp_path, zyx):
    write_volume(tmp_path / "w.nrrd", zyx, voxel_size=VS)
    data, hdr = nrrd.read(str(tmp_path / "w.nrrd"))  # Fortran index order: (x, y, z)
    np.testing.assert_array_equal(data, zyx.T)
    assert list(hdr["spacings"]) == [4.0, 5.0, 30.0] and list(hdr["units"]) == ["nm"] * 3
    data_c, _ = nrrd.read(str(tmp_path / "w.nrrd"), index_order="C")
    np.testing.assert_array_equal(data_c, zyx)


def test_written_hdf5_read_by_h5py(tmp_path, zyx):
    write_volume(f"{tmp_path / 'w.h5'}:vol/raw", zyx, voxel_size=VS)
    with h5py.File(tmp_path / "w.h5", "r") as h:
        np.testing.assert_array_equal(h["vol/raw"][...], zyx)
        assert list(h["vol/raw"].attrs["resolution"]) == list(VS)


def test_written_tiff_read_by_tifffile(tmp_path, zyx):
    write_volume(tmp_path / "w.tif", zyx, voxel_size=VS)
    with tifffile.TiffFile(tmp_path / "w.tif") as tf:
        np.testing.assert_array_equal(tf.asarray(), zyx)
        assert tf.is_imagej
        meta = tf.imagej_metadata
        assert meta["spacing"] == 30.0 and meta["unit"] == "nm"
        xres = tf.pages.first.tags["XResolution"].value
        yres = tf.pages.first.tags["YResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1 / 4.0)  # pixels per nm
        assert yres[0] / yres[1] == pytest.approx(1 / 5.0)


# ---------------------------------------------------------------- Zarr: OME-NGFF multiscales
def test_zarr_writes_ome_ngff_multiscales(tmp_path, zyx):
    import json

    zarr = pytest.importorskip("zarr")
    write_volume(f"{tmp_path / 'o.zarr'}:vol/raw", zyx, voxel_size=VS)
    meta = json.loads((tmp_path / "o.zarr" / "vol" / "zarr.json").read_text())  # raw JSON
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5" and len(ome["multiscales"]) == 1
    (ms,) = ome["multiscales"]
    assert ms["axes"] == [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    assert ms["datasets"] == [
        {"path": "raw", "coordinateTransformations": [{"type": "scale", "scale": list(VS)}]}
    ]
    # the NGFF metadata alone gives the voxel size back (resolution attribute removed)
    del zarr.open_array(str(tmp_path / "o.zarr" / "vol" / "raw"), mode="r+").attrs["resolution"]
    check(f"{tmp_path / 'o.zarr'}:vol/raw", zyx)
    # a second array in the same group does not rewrite the group's description of the first
    write_volume(f"{tmp_path / 'o.zarr'}:vol/other", zyx, voxel_size=(1.0, 2.0, 3.0))
    again = json.loads((tmp_path / "o.zarr" / "vol" / "zarr.json").read_text())
    assert again["attributes"]["ome"]["multiscales"] == [ms]
    check(f"{tmp_path / 'o.zarr'}:vol/other", zyx, vs=(1.0, 2.0, 3.0))  # its resolution attr


def test_zarr_ngff_in_v2_group_and_none_without_voxel_size(tmp_path, zyx):
    zarr = pytest.importorskip("zarr")
    zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    write_volume(f"{tmp_path / 'v2.zarr'}:0", zyx, voxel_size=VS)
    (ms,) = zarr.open_group(str(tmp_path / "v2.zarr"), mode="r").attrs["multiscales"]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == list(VS)
    write_volume(f"{tmp_path / 'n.zarr'}:raw", zyx)
    assert "ome" not in dict(zarr.open_group(str(tmp_path / "n.zarr"), mode="r").attrs)
