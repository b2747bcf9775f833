"""Regression tests of issue 15 for neurons.io: no silent wrong reads, no reads outside the named
files, atomic folder swaps that survive a crash, typed errors instead of tracebacks."""

from __future__ import annotations

import builtins
import json
import os
import re
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import tifffile

from neurons.io import (
    CorruptFileError,
    InvalidVolumeError,
    KeyNotFoundError,
    PathError,
    UnsupportedDtypeError,
    VolumeError,
    VolumeReadError,
    list_keys,
    open_volume,
    read_volume,
    write_volume,
)
from neurons.io.atomic import _HOST
from neurons.io.cli import main

# -- item 2: silent wrong reads -------------------------------------------------------------------


def test_tiff_page_of_another_size_is_refused(tmp_path):
    a, b = np.zeros((8, 8), np.uint8), np.ones((4, 4), np.uint8)
    path = tmp_path / "mid.tif"
    with tifffile.TiffWriter(path) as tw:
        for page in (a, a, b, a, a):
            tw.write(page, contiguous=False, metadata=None)
    with pytest.raises(InvalidVolumeError, match=r"mid\.tif.*2 image series.*\(4, 4\)"):
        read_volume(path)


def test_tiff_several_series_is_refused(tmp_path):
    path = tmp_path / "series.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
        tw.write(np.zeros((5, 6), np.uint16))
    with pytest.raises(InvalidVolumeError, match=r"series\.tif.*2 image series"):
        open_volume(path)


def test_tiff_single_stack_still_reads(tmp_path):
    data = np.arange(5 * 8 * 8, dtype=np.uint16).reshape(5, 8, 8)
    path = tmp_path / "ok.tif"
    with tifffile.TiffWriter(path) as tw:
        for page in data:
            tw.write(page, contiguous=False, metadata=None)
    np.testing.assert_array_equal(read_volume(path), data)


def _nrrd(path, sizes, dimension, extra=b"", payload=b""):
    head = f"NRRD0004\ntype: uint8\ndimension: {dimension}\nsizes: {sizes}\nencoding: raw\n"
    path.write_bytes(head.encode() + extra + b"\n" + payload)
    return path


def test_nrrd_dimension_sizes_mismatch(tmp_path):
    path = _nrrd(tmp_path / "d.nrrd", "3 4", 3, payload=bytes(12))
    with pytest.raises(CorruptFileError, match=r"d\.nrrd.*dimension: 3 but gives 2 sizes"):
        read_volume(path)


# -- item 3: path traversal -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_nrrd_data_file_outside_folder_is_never_read(tmp_path, how):
    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(range(12)))
    folder = tmp_path / "hdr"
    folder.mkdir()
    name = {"dotdot": "../secret.raw", "absolute": str(secret), "symlink": "link.raw"}[how]
    if how == "symlink":
        (folder / "link.raw").symlink_to(secret)
    path = _nrrd(folder / "x.nhdr", "3 4", 2, extra=f"data file: {name}\n".encode())
    with pytest.raises(PathError, match=r"x\.nhdr.*outside the file's folder"):
        read_volume(path)


def test_nrrd_detached_data_inside_folder_reads(tmp_path):
    (tmp_path / "x.raw").write_bytes(bytes(range(12)))
    path = _nrrd(tmp_path / "x.nhdr", "3 4", 2, extra=b"data file: x.raw\n")
    np.testing.assert_array_equal(read_volume(path), np.arange(12, dtype=np.uint8).reshape(4, 3))


def test_hdf5_external_link_outside_folder_refused_and_dangling_named(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    with h5py.File(tmp_path / "outside.h5", "w") as f:
        f["x"] = np.ones((2, 3), np.uint8)
    with h5py.File(sub / "local.h5", "w") as f:
        f["x"] = np.full((2, 3), 4, np.uint8)
    path = sub / "c.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = np.zeros((2, 3), np.uint8)
        f["esc"] = h5py.ExternalLink("../outside.h5", "/x")
        f["dang"] = h5py.ExternalLink("missing.h5", "/x")
        f["ok"] = h5py.ExternalLink("local.h5", "/x")
    with pytest.raises(PathError, match="outside the file's folder"):
        read_volume(f"{path}:esc")
    with pytest.raises(KeyNotFoundError, match="dangling external link") as err:
        read_volume(f"{path}:dang")
    assert "not found" not in str(err.value)
    np.testing.assert_array_equal(read_volume(f"{path}:ok"), np.full((2, 3), 4, np.uint8))


def test_hdf5_virtual_dataset_outside_folder_refused(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    for f_path in (tmp_path / "outside.h5", sub / "inside.h5"):
        with h5py.File(f_path, "w") as f:
            f["x"] = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = sub / "v.h5"
    with h5py.File(path, "w") as f:
        for name, src in (("out", tmp_path / "outside.h5"), ("in", sub / "inside.h5")):
            layout = h5py.VirtualLayout(shape=(3, 4), dtype=np.uint8)
            layout[:] = h5py.VirtualSource(str(src), "x", shape=(3, 4))
            f.create_virtual_dataset(name, layout)
    with pytest.raises(PathError, match="virtual dataset reading .*outside"):
        read_volume(f"{path}:out")
    np.testing.assert_array_equal(read_volume(f"{path}:in"), np.arange(12).reshape(3, 4))


def test_ome_tiff_referring_to_a_file_outside_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "secret.ome.tif", np.full((1, 8, 8), 9, np.uint8), ome=True)
    with tifffile.TiffFile(tmp_path / "secret.ome.tif") as tf:
        uuid = re.search(r'UUID="(urn:uuid:[^"]+)"', tf.ome_metadata).group(1)
    sub = tmp_path / "sub"
    sub.mkdir()
    mine = "urn:uuid:11111111-1111-1111-1111-111111111111"
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/'
        f'OME/2016-06" UUID="{mine}"><Image ID="Image:0"><Pixels ID="Pixels:0" '
        'DimensionOrder="XYCZT" Type="uint8" SizeX="8" SizeY="8" SizeC="1" SizeZ="2" SizeT="1">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
        f'<TiffData IFD="0" FirstZ="0" PlaneCount="1"><UUID FileName="x.ome.tif">{mine}</UUID>'
        '</TiffData><TiffData IFD="0" FirstZ="1" PlaneCount="1"><UUID '
        f'FileName="../secret.ome.tif">{uuid}</UUID></TiffData></Pixels></Image></OME>'
    )
    tifffile.imwrite(sub / "x.ome.tif", np.zeros((8, 8), np.uint8), description=xml, metadata=None)
    with tifffile.TiffFile(sub / "x.ome.tif") as tf:  # tifffile alone follows the reference
        assert tf.series[0].asarray().max() == 9
    with pytest.raises(PathError, match=r"x\.ome\.tif.*secret\.ome\.tif.*outside"):
        read_volume(sub / "x.ome.tif")


# -- item 4: atomic folder writes survive a crash between the renames ------------------------------

_CRASH = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from neurons.io import write_volume
    real, calls = os.rename, [0]
    def rename(a, b):
        real(a, b)
        calls[0] += 1
        if calls[0] == int(sys.argv[2]):
            os._exit(9)  # killed: no cleanup runs
    os.rename = rename
    write_volume(sys.argv[1], np.full((3, 4, 5), 2, np.uint8), format=sys.argv[3])
    """
)


def _hidden(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


@pytest.mark.parametrize("fmt,name", [("slices", "stack"), ("png-slices", "pngs"), ("zarr", "s.zarr")])
@pytest.mark.parametrize("crash_after", [1, 2])
def test_folder_swap_crash_leaves_old_or_new(tmp_path, fmt, name, crash_after):
    if fmt == "zarr":
        pytest.importorskip("zarr")
    dst = tmp_path / name
    old = np.full((3, 4, 5), 1, np.uint8)
    write_volume(dst, old, format=fmt)
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(dst), str(crash_after), fmt])
    assert proc.returncode == 9
    if crash_after == 1:  # old renamed aside, new not yet in place
        assert not dst.exists() and _hidden(tmp_path)
        np.testing.assert_array_equal(read_volume(dst), old)  # recovered on access
    else:  # new in place, old copy not yet deleted
        np.testing.assert_array_equal(read_volume(dst), np.full((3, 4, 5), 2, np.uint8))
    assert dst.exists()
    write_volume(dst, old + 5, format=fmt)  # the next write cleans every leftover
    assert _hidden(tmp_path) == []
    np.testing.assert_array_equal(read_volume(dst), old + 5)


# -- item 8: stale temporary files cleaned on the next write, live ones kept -----------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_tmp_of_same_target_cleaned(tmp_path):
    dst = tmp_path / "out.h5"
    stale = tmp_path / f".out.h5.{_HOST}-{_dead_pid()}-0123456789ab.tmp"
    live = tmp_path / f".out.h5.{_HOST}-{os.getpid()}-0123456789ab.tmp"
    other = tmp_path / f".other.h5.{_HOST}-{_dead_pid()}-0123456789ab.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"x" * 100)
    write_volume(dst, np.zeros((2, 3), np.uint8))
    assert not stale.exists()
    assert live.exists() and other.exists()  # a running writer's / another target's: kept


# -- item 7/8: typed errors and messages -----------------------------------------------------------


def test_zero_byte_and_negative_size_nrrd(tmp_path):
    (tmp_path / "z.nrrd").write_bytes(b"")
    with pytest.raises(CorruptFileError, match=r"z\.nrrd.*empty file"):
        read_volume(tmp_path / "z.nrrd")
    path = _nrrd(tmp_path / "n.nrrd", "-3 4", 2, payload=bytes(12))
    with pytest.raises(CorruptFileError, match=r"n\.nrrd.*positive"):
        read_volume(path)


def test_random_npy_is_not_called_python_objects(tmp_path):
    path = tmp_path / "r.npy"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(CorruptFileError, match="not a NumPy .npy file") as err:
        read_volume(path)
    assert "Python objects" not in str(err.value)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidVolumeError, match="Python objects"):
        read_volume(tmp_path / "o.npy")


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_path_is_an_error_not_the_current_folder(bad):
    with pytest.raises(PathError, match="empty path"):
        read_volume(bad)
    with pytest.raises(PathError):
        list_keys(bad)
    with pytest.raises(PathError):
        write_volume(bad, np.zeros((2, 2), np.uint8))


def test_unreadable_file_is_typed(tmp_path, monkeypatch, capsys):
    path = tmp_path / "locked.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8))
    real_open = builtins.open

    def guarded(file, *args, **kwargs):  # root ignores chmod: simulate EACCES for this file
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    with pytest.raises(VolumeReadError, match=r"locked\.tif.*permission denied"):
        open_volume(path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "locked.tif" in err and "Traceback" not in err


@pytest.fixture
def cremi_like(tmp_path):
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (4, 6, 7), dtype=np.uint8)
    ids = rng.choice(np.array([0, 7, 2**63 + 1, 2**64 - 1], np.uint64), size=(4, 6, 7))
    path = tmp_path / "sample_A.h5"
    with h5py.File(path, "w") as f:
        f["volumes/raw"] = raw
        f["volumes/raw"].attrs["resolution"] = [40.0, 4.0, 4.0]
        f["volumes/labels/neuron_ids"] = ids
        f["annotations/comments/comments"] = np.array([b"merge?", b"split"])
        f["annotations/types"] = np.zeros(3, dtype=[("a", "i4"), ("b", "f4")])
    return path, raw, ids


def test_info_lists_every_array_of_a_container(cremi_like, capsys):
    path, raw, ids = cremi_like
    assert main(["info", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    arrays = {a["key"]: a for a in d["arrays"]}
    assert set(arrays) == {"volumes/raw", "volumes/labels/neuron_ids",
                           "annotations/comments/comments", "annotations/types"}
    r = arrays["volumes/raw"]
    assert r["shape"] == [4, 6, 7] and r["dtype"] == "uint8"
    assert r["voxel_size_nm"] == [40.0, 4.0, 4.0]
    assert (r["min"], r["max"]) == (int(raw.min()), int(raw.max()))
    n = arrays["volumes/labels/neuron_ids"]
    uniq, counts = np.unique(ids, return_counts=True)
    assert n["distinct_values"] == uniq.size and n["max"] == 2**64 - 1
    assert n["distinct_nonzero_ids"] == np.count_nonzero(uniq)
    assert n["background_fraction"] == pytest.approx(np.mean(ids == 0))
    assert n["object_voxels_max"] == counts[uniq != 0].max()
    assert "not a volume dtype" in arrays["annotations/comments/comments"]["error"]
    assert "not a volume dtype" in arrays["annotations/types"]["error"]


@pytest.mark.parametrize("key", ["annotations/comments/comments", "annotations/types"])
def test_info_on_string_or_compound_dataset_is_one_line(cremi_like, capsys, key):
    path, _, _ = cremi_like
    with pytest.raises(UnsupportedDtypeError, match=key):
        open_volume(f"{path}:{key}")
    assert main(["info", f"{path}:{key}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err and "Traceback" not in err


def test_debug_flag_shows_the_exception(tmp_path):
    with pytest.raises(VolumeError):
        main(["--debug", "info", str(tmp_path / "missing.h5")])


def test_info_lists_the_arrays_of_a_zarr_store(tmp_path, capsys):
    pytest.importorskip("zarr")
    store = tmp_path / "s.zarr"
    ids = np.zeros((3, 4, 5), np.uint64)
    ids[1:, :2] = 2**63 + 3
    write_volume(f"{store}:raw", np.ones((3, 4, 5), np.uint8), voxel_size=(30, 6, 6))
    write_volume(f"{store}:labels/ids", ids)
    assert main(["info", str(store), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    arrays = {a["key"]: a for a in d["arrays"]}
    assert d["format"] == "zarr" and set(arrays) == {"raw", "labels/ids"}
    assert arrays["raw"]["voxel_size_nm"] == [30.0, 6.0, 6.0] and "distinct_values" not in arrays["raw"]
    lab = arrays["labels/ids"]
    assert lab["distinct_nonzero_ids"] == 1 and lab["object_voxels_max"] == int((ids > 0).sum())
    assert lab["max"] == 2**63 + 3


def test_convert_never_replaces_a_folder_holding_the_source(tmp_path, capsys):
    stack = tmp_path / "stack"
    data = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    write_volume(stack, data)  # a TIFF slice folder
    first = sorted(stack.iterdir())[0]
    assert main(["convert", str(first), str(stack)]) == 2
    assert "contains the source" in capsys.readouterr().err
    np.testing.assert_array_equal(read_volume(stack), data)  # every slice still there
