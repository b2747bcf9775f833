"""Every format x dtype x 2-D/3-D round-trips exactly (or fails with a typed error up front)."""

from __future__ import annotations

import numpy as np
import pytest

from neurons.io import (
    InvalidVolumeError,
    UnsupportedDtypeError,
    open_volume,
    read_volume,
    write_volume,
)


def _expected_shape(fmt: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    # a slice folder is a stack by definition: a 2-D image reads back as (1, Y, X)
    return (1, *shape) if fmt in ("slices", "png-slices") and len(shape) == 2 else shape


def test_round_trip(tmp_path, fmt, spec, dtype, shape, array_factory, chunks_fitter):
    suffix, kwargs, unsupported = spec
    arr = array_factory(dtype, shape)
    dst = tmp_path / f"vol{suffix}"
    kwargs = chunks_fitter(kwargs, len(shape))
    if fmt == "png" and len(shape) == 3:
        with pytest.raises(InvalidVolumeError, match="2-D"):
            write_volume(dst, arr, **kwargs)
        assert not dst.exists()
        return
    if dtype in unsupported:
        with pytest.raises(UnsupportedDtypeError, match=dtype):
            write_volume(dst, arr, **kwargs)
        assert not dst.exists() and list(tmp_path.iterdir()) == []
        return
    write_volume(dst, arr, **kwargs)
    assert [p.name for p in tmp_path.iterdir()] == [dst.name]  # no temporary left behind
    back = read_volume(dst)
    assert back.dtype == arr.dtype
    assert back.shape == _expected_shape(fmt, shape)
    np.testing.assert_array_equal(back.reshape(shape), arr, strict=True)
    if dtype == "uint64":
        assert int(back.reshape(-1)[0]) == 2**64 - 1 and int(back.reshape(-1)[2]) == 2**63


def test_voxel_size_round_trip(tmp_path, fmt, spec, shape, shapes, array_factory, chunks_fitter):
    suffix, kwargs, _ = spec
    make_array, fit_chunks = array_factory, chunks_fitter
    if fmt == "png" and len(shape) == 3:
        pytest.skip("PNG holds 2-D images only")
    vs = (40.0, 3.7, 4.0)[-len(shape):] if not fmt.endswith("slices") else (40.0, 3.7, 4.0)
    shape = shape if not fmt.endswith("slices") else shapes["3d"]
    dst = tmp_path / f"vol{suffix}"
    if fmt == "npy":  # .npy has no metadata: the voxel size is dropped with a warning
        with pytest.warns(UserWarning, match="cannot store a voxel size"):
            write_volume(dst, make_array("uint16", shape), voxel_size=vs)
        assert open_volume(dst).voxel_size is None
        return
    write_volume(dst, make_array("uint16", shape), voxel_size=vs, **fit_chunks(kwargs, len(shape)))
    with open_volume(dst) as vol:
        assert vol.voxel_size == pytest.approx(vs, rel=1e-6)
    # no voxel size written -> None (unknown), never a made-up default
    plain = tmp_path / f"plain{suffix}"
    write_volume(plain, make_array("uint16", shape), **fit_chunks(kwargs, len(shape)))
    with open_volume(plain) as vol:
        assert vol.voxel_size is None


INDEXES = [
    (slice(None),),
    (1,),
    (-1, slice(2, 5)),
    (slice(1, 3), slice(None, None, 2), slice(8, 1, -3)),
    (Ellipsis, 4),
    (slice(None, None, -1),),
    (np.array([0, 3, 2]),),
    (slice(1, 2), None, slice(0, 0)),
    (slice(0, 3), np.array([True, False, True, True, False, False, True])),
]


@pytest.mark.parametrize("index", INDEXES, ids=range(len(INDEXES)))
def test_lazy_region_reads_equal_full_reads(
    tmp_path, fmt, spec, index, shapes, array_factory, chunks_fitter
):
    suffix, kwargs, _ = spec
    if fmt == "png":
        pytest.skip("PNG holds 2-D images only (covered by the 2-D index test)")
    arr = array_factory("uint16", shapes["3d"], seed=1)
    dst = tmp_path / f"vol{suffix}"
    write_volume(dst, arr, **chunks_fitter(kwargs, 3))
    with open_volume(dst) as vol:
        full = np.asarray(vol)
        np.testing.assert_array_equal(vol[index], full[index], strict=True)
        np.testing.assert_array_equal(vol[index], arr[index], strict=True)


def test_lazy_region_reads_2d_png(tmp_path, shapes, array_factory):
    arr = array_factory("uint8", shapes["2d"])
    write_volume(tmp_path / "a.png", arr)
    with open_volume(tmp_path / "a.png") as vol:
        np.testing.assert_array_equal(vol[2:5, ::-2], arr[2:5, ::-2])


def test_region_reads_do_not_load_everything(tmp_path, array_factory):
    """npy/TIFF/NRRD uncompressed are memory-mapped, NIfTI reads through nibabel's array proxy
    (plain and gzip), HDF5/Zarr read native regions."""
    import nibabel as nib

    arr = array_factory("uint8", (6, 32, 32))
    for name in ("a.npy", "a.tif", "a.nrrd", "a.h5", "a.nii", "a.nii.gz"):
        write_volume(tmp_path / name, arr)
        with open_volume(tmp_path / name) as vol:
            reader = vol._reader
            if name.startswith("a.nii"):
                assert isinstance(reader._proxy, nib.arrayproxy.ArrayProxy)
                assert not nib.is_proxy(np.asarray(arr)) and nib.is_proxy(reader._proxy)
            elif name != "a.h5":
                assert getattr(reader, "_mm", getattr(reader, "_arr", None)) is not None
            np.testing.assert_array_equal(vol[2, 3:9, 4], arr[2, 3:9, 4])
            assert getattr(reader, "_data", None) is None  # nothing cached whole
