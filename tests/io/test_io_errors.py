"""Bad input gives typed errors and never a partial output."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from neurons.io import (
    CorruptFileError,
    InvalidVolumeError,
    UnknownFormatError,
    VolumeError,
    VolumeWriteError,
    open_volume,
    read_volume,
    write_volume,
)

TRUNCATABLE = ["a.h5", "a.tif", "b.tif", "a.nrrd", "b.nrrd", "a.nii", "a.nii.gz", "a.npy", "a.png"]
OPTS = {"b.tif": {"compression": "zlib"}, "b.nrrd": {"compression": "gzip"}}


@pytest.mark.parametrize("name", TRUNCATABLE)
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_files_raise_volume_error(tmp_path, name, keep, rng):
    shape = (48, 48) if name.endswith(".png") else (6, 48, 48)
    arr = rng.integers(0, 60000, shape, dtype=np.uint16)
    src = tmp_path / name
    write_volume(src, arr, **OPTS.get(name, {}))
    data = src.read_bytes()
    src.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VolumeError):
        read_volume(src)


def test_truncated_real_isbi_slice(tmp_path, isbi2012_dir):
    folder = tmp_path / "stack"
    shutil.copytree(isbi2012_dir / "image", folder)
    victim = folder / "07.png"
    victim.write_bytes(victim.read_bytes()[:5000])
    with pytest.raises(CorruptFileError, match="07.png"):
        read_volume(folder)


def test_truncated_zarr_chunk(tmp_path, rng):
    pytest.importorskip("zarr")
    arr = rng.integers(0, 255, (4, 16, 16), dtype=np.uint8)
    write_volume(tmp_path / "z.zarr", arr, chunks=(2, 16, 16), compression="gzip")
    chunk = next(p for p in (tmp_path / "z.zarr").rglob("*") if p.is_file() and p.name == "0")
    chunk.write_bytes(chunk.read_bytes()[:10])
    with pytest.raises(CorruptFileError):
        read_volume(tmp_path / "z.zarr")


def test_garbage_with_volume_extension(tmp_path):
    for name in ("x.h5", "x.tif", "x.nrrd", "x.nii", "x.npy"):
        (tmp_path / name).write_bytes(b"\x00garbage" * 10)
        with pytest.raises(VolumeError):
            read_volume(tmp_path / name)


@pytest.mark.parametrize("shape", [(10,), (2, 2, 2, 2, 2)])
@pytest.mark.parametrize("suffix", [".h5", ".tif", ".npy", ".nrrd", ".nii"])
def test_not_a_volume_shape(tmp_path, shape, suffix):
    dst = tmp_path / f"bad{suffix}"
    with pytest.raises(InvalidVolumeError, match=f"{len(shape)}-D"):
        write_volume(dst, np.zeros(shape, np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_reading_1d_dataset_is_rejected(tmp_path):
    import h5py

    with h5py.File(tmp_path / "meta.h5", "w") as f:
        f["offsets"] = np.arange(3)
    with pytest.raises(InvalidVolumeError, match="1-D"):
        open_volume(tmp_path / "meta.h5")
    np.save(tmp_path / "five.npy", np.zeros((1, 1, 1, 1, 2)))
    with pytest.raises(InvalidVolumeError, match="5-D"):
        open_volume(tmp_path / "five.npy")


def test_slice_folder_with_mixed_shapes_or_dtypes(tmp_path):
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "s1.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(folder / "s2.png")
    with pytest.raises(InvalidVolumeError, match="s2.png"):
        open_volume(folder)
    (folder / "s2.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(folder / "s10.png")
    with pytest.raises(InvalidVolumeError, match="uint16"):
        open_volume(folder)


def test_slices_are_in_natural_order(tmp_path):
    from PIL import Image

    folder = tmp_path / "nat"
    folder.mkdir()
    for i in (1, 2, 10, 9):
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(folder / f"img{i}.png")
    (folder / ".hidden.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    assert read_volume(folder)[:, 0, 0].tolist() == [1, 2, 9, 10]


def test_unwritable_destination(tmp_path, rng):
    arr = rng.integers(0, 9, (2, 4, 4), dtype=np.uint8)
    blocker = tmp_path / "file.txt"
    blocker.write_text("I am a file")
    with pytest.raises(VolumeWriteError):
        write_volume(blocker / "sub" / "out.h5", arr)
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(VolumeWriteError, match="not writable"):
                write_volume(ro / "out.tif", arr)
        finally:
            ro.chmod(0o755)
    with pytest.raises(UnknownFormatError, match="suffix"):
        write_volume(tmp_path / "out.xyz", arr)


def test_failed_write_leaves_old_file_untouched(tmp_path, rng):
    arr = rng.integers(0, 9, (2, 4, 4), dtype=np.uint8)
    dst = tmp_path / "keep.h5"
    write_volume(dst, arr)
    before = dst.read_bytes()

    def exploding():
        yield arr[:1]
        raise RuntimeError("disk on fire")

    from neurons.io import write_blocks

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_blocks(dst, arr.shape, arr.dtype, exploding())
    assert dst.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.h5"]


def test_refuses_to_replace_foreign_folder(tmp_path, rng):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "report.txt").write_text("precious")
    with pytest.raises(VolumeWriteError, match="other content"):
        write_volume(folder, rng.integers(0, 9, (2, 4, 4), dtype=np.uint8))
    assert (folder / "report.txt").read_text() == "precious"


def test_bad_options_are_typed(tmp_path, rng):
    arr = rng.integers(0, 9, (2, 4, 4), dtype=np.uint8)
    with pytest.raises(VolumeWriteError, match="compression"):
        write_volume(tmp_path / "a.h5", arr, compression="snappy")
    with pytest.raises(VolumeWriteError, match="chunks"):
        write_volume(tmp_path / "a.h5", arr, chunks=(2, 2))
    with pytest.raises(InvalidVolumeError, match="voxel_size"):
        write_volume(tmp_path / "a.h5", arr, voxel_size=(4, 4))
    with pytest.raises(VolumeError, match="compression"):
        write_volume(tmp_path / "a.nii", arr, compression="gzip")
    with pytest.raises(VolumeError):
        write_volume(tmp_path / "a.npy", np.array([["a"]], dtype=object))
    assert list(tmp_path.iterdir()) == []


def test_big_endian_files_read_as_native(tmp_path):
    arr = np.arange(60, dtype=">u4").reshape(3, 4, 5)
    np.save(tmp_path / "be.npy", arr)
    back = read_volume(tmp_path / "be.npy")
    assert back.dtype == np.dtype("uint32") and back.dtype.isnative
    np.testing.assert_array_equal(back, arr)
