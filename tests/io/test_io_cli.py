"""The ``neurons-io`` CLI: info, convert (bounded memory), show."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from neurons.io import convert_volume, open_volume, read_volume, write_volume
from neurons.io.cli import main


@pytest.fixture
def labelled(tmp_path):
    raw = np.arange(4 * 6 * 8, dtype=np.uint16).reshape(4, 6, 8)
    ids = np.zeros((4, 6, 8), np.uint64)
    ids[:, :3] = 2**63 + 7
    ids[:, 3:, :4] = 5
    ids[0, 0, 0] = 2**64 - 1
    path = tmp_path / "sample.h5"
    write_volume(f"{path}:volumes/raw", raw, voxel_size=(40, 4, 4))
    write_volume(f"{path}:volumes/labels/neuron_ids", ids, voxel_size=(40, 4, 4))
    return path, raw, ids


def test_info_json(labelled, capsys):
    path, raw, ids = labelled
    assert main(["info", f"{path}:volumes/labels/neuron_ids", "--labels", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "hdf5" and d["shape"] == [4, 6, 8] and d["dtype"] == "uint64"
    assert d["keys"] == ["volumes/labels/neuron_ids", "volumes/raw"]
    assert d["voxel_size_nm"] == [40.0, 4.0, 4.0]
    assert d["min"] == 0 and d["max"] == 2**64 - 1  # exact, no float rounding
    assert d["distinct_values"] == len(np.unique(ids)) == 4
    assert d["distinct_nonzero_ids"] == 3


def test_info_text_via_subprocess(labelled):
    path, _, _ = labelled
    out = subprocess.run(
        [sys.executable, "-m", "neurons.io.cli", "info", str(path), "--key", "volumes/raw"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "hdf5" in out and "[4, 6, 8]" in out and "uint16" in out and "191" in out


def test_errors_exit_nonzero_with_message(labelled, capsys):
    path, _, _ = labelled
    assert main(["info", f"{path}:volumes/nope"]) == 2
    err = capsys.readouterr().err
    assert "volumes/nope" in err and "volumes/raw" in err


@pytest.mark.parametrize("dst", ["out.tif", "out.nrrd", "out.nii.gz", "out.npy", "outdir", "o.h5:x"])
@pytest.mark.filterwarnings("ignore:.*cannot store a voxel size")
def test_convert(labelled, tmp_path, dst):
    path, _, ids = labelled
    target = f"{tmp_path / dst}"
    assert main(["convert", f"{path}:volumes/labels/neuron_ids", target, "--block-mb", "0.0001"]) == 0
    with open_volume(target) as vol:
        np.testing.assert_array_equal(vol[...], ids, strict=True)
        assert vol.voxel_size == (40.0, 4.0, 4.0) or dst.endswith(".npy")


def test_convert_with_chunks_and_compression(labelled, tmp_path):
    path, raw, _ = labelled
    dst = tmp_path / "c.h5"
    args = ["convert", str(path), str(dst), "--key", "volumes/raw", "--dst-key", "raw",
            "--chunks", "2,3,4", "--compression", "gzip"]
    assert main(args) == 0
    with open_volume(f"{dst}:raw") as vol:
        assert vol.chunks == (2, 3, 4) and vol.compression == "gzip"
        np.testing.assert_array_equal(vol[...], raw)
    assert main(["convert", str(dst), str(dst)]) == 2  # onto itself: refused


@pytest.mark.parametrize("dst", ["big.h5", "big.h5:gz", "big.tif", "big.nrrd", "big.nii", "big.npy", "big.zarr"])
def test_convert_memory_is_bounded(tmp_path, dst):
    if dst.endswith(".zarr"):
        pytest.importorskip("zarr")
    shape = (64, 256, 128)  # 16 MiB of uint64
    src = tmp_path / "src.npy"
    mm = np.lib.format.open_memmap(src, mode="w+", dtype=np.uint64, shape=shape)
    mm[:] = np.arange(shape[0], dtype=np.uint64)[:, None, None] + np.uint64(2**63)
    mm.flush()
    del mm
    total = 16 * 2**20
    # chunked stores hold one chunk row in memory: keep their chunks small here
    opts = {"chunks": (4, 64, 64)} if dst.endswith((":gz", ".zarr")) else {}
    if dst.endswith(":gz"):
        opts["compression"] = "gzip"
    # warm up: imports and one-off caches are not part of the streaming cost
    convert_volume(src, f"{tmp_path / ('warm_' + dst)}", max_block_bytes=total // 32, **opts)
    tracemalloc.start()
    try:
        convert_volume(src, f"{tmp_path / dst}", max_block_bytes=total // 32, **opts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < total / 4, f"peak {peak / 2**20:.1f} MiB for a {total / 2**20:.0f} MiB volume"
    with open_volume(f"{tmp_path / dst}") as vol:
        assert vol[63, 5, 7] == 2**63 + 63 and vol[0, 255, 127] == 2**63


def test_show_with_label_overlay(labelled, tmp_path):
    path, raw, ids = labelled
    out = tmp_path / "preview.png"
    rc = main(["show", f"{path}:volumes/raw", "--z", "2", "--labels",
               f"{path}:volumes/labels/neuron_ids", "-o", str(out)])
    assert rc == 0
    img = np.asarray(Image.open(out))
    assert img.shape == (6, 8, 3) and img.dtype == np.uint8
    bg = img[ids[2] == 0]
    assert np.all(bg[:, 0] == bg[:, 1]) and np.all(bg[:, 1] == bg[:, 2])  # grey where no label
    a, b = img[1, 1], img[4, 1]  # two different ids -> coloured, different colours
    assert not (a[0] == a[1] == a[2]) and not np.array_equal(a, b)


def test_label_colors_are_stable_per_id():
    from neurons.io import label_colors

    ids = np.array([5, 5, 2**63 + 7, 2**64 - 1, 6], dtype=np.uint64)
    c = label_colors(ids)
    assert c.shape == (5, 3) and c.dtype == np.uint8
    np.testing.assert_array_equal(c[0], c[1])
    assert len({tuple(x) for x in c[1:]}) == 4  # distinct ids, distinct colours
    np.testing.assert_array_equal(label_colors(ids.astype(np.int64)[:2]), c[:2])


def test_show_plain_and_bad_section(labelled, tmp_path):
    path, raw, _ = labelled
    out = tmp_path / "plain.png"
    assert main(["show", f"{path}:volumes/raw", "-o", str(out)]) == 0
    grey = np.asarray(Image.open(out))[..., 0]
    assert grey.min() < 10 and grey.max() > 245  # contrast stretched
    assert main(["show", f"{path}:volumes/raw", "--z", "9", "-o", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_read_volume_of_converted_slices(labelled, tmp_path):
    path, raw, _ = labelled
    assert main(["convert", f"{path}:volumes/raw", str(tmp_path / "pngs"), "--format",
                 "png-slices"]) == 0
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir())[0] == "0000.png"
    np.testing.assert_array_equal(read_volume(tmp_path / "pngs"), raw)
