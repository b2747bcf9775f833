"""Fuzz the user-facing contract (issue 15) with corrupt, truncated and crafted files and bad
arguments.

The contract, for every reader and every CLI:

* a damaged file gives a typed ``neurons.*`` error (:class:`neurons.io.VolumeError`) whose message
  names the file, never another exception type;
* CLIs answer a user mistake with exit status 2 and one line on stderr, never a traceback;
* a failed write leaves no partial output (no destination, no hidden temporary) and an existing
  destination unchanged;
* nothing outside the files the user named (and their own sidecars) is read.

Everything runs in-process (``main(argv)``) and takes a few seconds in all.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from neurons.io import VolumeError, read_volume, write_blocks, write_volume
from neurons.io.cli import main as io_main

# -- reads outside the named files: every Python-level open() is audited --------------------------

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


class _Opens:
    """Collect the paths opened inside the ``with`` block."""

    def __enter__(self) -> list[str]:
        global _OPENED
        _OPENED = []
        return _OPENED

    def __exit__(self, *exc) -> None:
        global _OPENED
        _OPENED = None


# -- valid files of every format, then damaged copies ---------------------------------------------

DATA = (np.arange(3 * 16 * 20, dtype=np.uint16).reshape(3, 16, 20) * 7) % 5000
FILE_FORMATS = {
    "h5": "vol.h5",
    "tif": "vol.tif",
    "tif-zlib": "vol.tiff",
    "nrrd": "vol.nrrd",
    "nrrd-gz": "vol.nhdr",
    "nii": "vol.nii",
    "nii.gz": "vol.nii.gz",
    "npy": "vol.npy",
    "png": "vol.png",
}


def _write_valid(folder: Path, fmt: str) -> Path:
    path = folder / FILE_FORMATS[fmt]
    data = DATA[0].astype(np.uint8) if fmt == "png" else DATA
    kw = {"compression": "zlib"} if fmt == "tif-zlib" else {}
    if fmt == "nrrd-gz":
        kw = {"compression": "gzip"}
    if fmt == "npy":
        write_volume(path, data)
    else:
        write_volume(path, data, voxel_size=(None if fmt == "png" else (40, 4, 4)), **kw)
    return path


def _mutations(blob: bytes, seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    out = {
        "empty": b"",
        "8-bytes": blob[:8],
        "half": blob[: len(blob) // 2],
        "minus-1": blob[:-1],
        "random": rng.bytes(len(blob)),
    }
    for k in range(4):  # a few bytes of the header / first KiB overwritten
        b = bytearray(blob)
        pos = rng.integers(0, min(len(b), 1024), size=6)
        b_vals = rng.integers(0, 256, size=6, dtype=np.uint8)
        for p, v in zip(pos, b_vals, strict=True):
            b[int(p)] = int(v)
        out[f"flip-{k}"] = bytes(b)
    return out


def _check_read(path: Path, root: Path, others: tuple[Path, ...] = ()) -> None:
    """Either a plausible array or a VolumeError naming the file; no other exception.

    ``others`` are inputs named earlier in the same test: zarr's event loop may still finish
    their chunk reads after an earlier read raised, so their paths are not counted as strays.
    """
    with _Opens() as opened:
        try:
            arr = read_volume(path)
        except VolumeError as exc:
            assert path.name in str(exc), f"{type(exc).__name__} does not name the file: {exc}"
        except Exception as exc:  # noqa: BLE001 - the contract under test
            pytest.fail(f"{path.name}: {type(exc).__name__} escaped the neurons.io errors: {exc}")
        else:
            assert isinstance(arr, np.ndarray) and arr.ndim in (2, 3, 4)
    inside = [p for p in opened if os.path.abspath(p).startswith(str(root.parent))]
    strays = [
        p
        for p in inside
        if not os.path.abspath(p).startswith((str(root), *(str(o) + os.sep for o in others)))
    ]
    assert not strays, f"{path.name}: opened files outside the named one: {strays}"


def _check_cli(argv: list[str], capsys, must_name: str | None = None) -> int:
    code = io_main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("neurons-io: error:"), err
        if must_name:
            assert must_name in err, err
    return code


@pytest.mark.parametrize("fmt", list(FILE_FORMATS))
def test_damaged_files_give_typed_errors(tmp_path, fmt, capsys):
    ok = tmp_path / "ok"
    ok.mkdir()
    blob = _write_valid(ok, fmt).read_bytes()
    for i, (name, data) in enumerate(_mutations(blob, seed=len(fmt)).items()):
        case = tmp_path / f"case-{i}"
        case.mkdir()
        path = case / FILE_FORMATS[fmt]
        path.write_bytes(data)
        _check_read(path, case)
        code = _check_cli(["info", str(path)], capsys, must_name=path.name)
        assert code == 2 or name.startswith("flip") or name == "minus-1", (fmt, name)


def test_damaged_zarr_and_slice_folders(tmp_path, capsys):
    pytest.importorskip("zarr")
    cases = []
    for i, kind in enumerate(["meta-empty", "meta-garbage", "chunk-cut"]):
        store = tmp_path / f"z{i}" / "vol.zarr"
        write_volume(store, DATA, chunks=(1, 8, 8))
        if kind.startswith("meta"):
            (store / "zarr.json").write_bytes(b"" if kind == "meta-empty" else b"{not json")
        else:
            chunk = next(p for p in sorted(store.rglob("*")) if p.is_file() and p.name != "zarr.json")
            chunk.write_bytes(chunk.read_bytes()[:3])
        cases.append(store)
    for i, kind in enumerate(["slice-cut", "slice-random", "slice-other-size"]):
        folder = tmp_path / f"s{i}" / "stack"
        write_volume(folder, DATA.astype(np.uint8), format="png-slices")
        victim = sorted(folder.iterdir())[1]
        if kind == "slice-cut":
            victim.write_bytes(victim.read_bytes()[:40])
        elif kind == "slice-random":
            victim.write_bytes(np.random.default_rng(i).bytes(500))
        else:
            write_volume(victim, np.zeros((5, 5), np.uint8))
        cases.append(folder)
    for path in cases:
        _check_read(path, path.parent, others=tuple(c for c in cases if c != path))
        assert _check_cli(["info", str(path)], capsys) in (0, 2)


def test_crafted_files_never_read_outside(tmp_path):
    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(range(64)))
    case = tmp_path / "case"
    case.mkdir()
    (case / "link.raw").symlink_to(secret)
    crafted = {
        "up.nhdr": "data file: ../secret.raw",
        "abs.nhdr": f"data file: {secret}",
        "sym.nhdr": "data file: link.raw",
        "list.nhdr": "data file: LIST",
    }
    for name, line in crafted.items():
        (case / name).write_text(
            f"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 8 8\nencoding: raw\n{line}\n\n"
        )
    with h5py.File(case / "ext.h5", "w") as f:
        f["x"] = h5py.ExternalLink("../secret.h5", "/x")
    with h5py.File(tmp_path / "secret.h5", "w") as f:
        f["x"] = np.ones((8, 8), np.uint8)
    for name in [*crafted, "ext.h5:x"]:
        with _Opens() as opened:
            with pytest.raises(VolumeError, match=name.split(":")[0].replace(".", r"\.")):
                read_volume(case / name if ":" not in name else f"{case / 'ext.h5'}:x")
        assert not any("secret" in p for p in opened), (name, opened)


# -- no partial output ----------------------------------------------------------------------------

WRITE_FORMATS = ["out.h5", "out.tif", "out.nrrd", "out.nii.gz", "out.npy", "outdir", "out.zarr"]


@pytest.mark.parametrize("name", WRITE_FORMATS)
def test_failed_write_leaves_nothing_and_keeps_the_old(tmp_path, name):
    if name.endswith(".zarr"):
        pytest.importorskip("zarr")
    dst = tmp_path / name

    def failing():
        yield DATA[:1]
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_blocks(dst, DATA.shape, DATA.dtype, failing())
    assert sorted(os.listdir(tmp_path)) == []  # no destination, no hidden temporary
    write_volume(dst, DATA)
    with pytest.raises(VolumeError):  # slabs that do not fit: typed error, old kept
        write_blocks(dst, DATA.shape, DATA.dtype, [DATA[:1], np.zeros((5, 2, 2), DATA.dtype)])
    np.testing.assert_array_equal(read_volume(dst), DATA)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


# -- every CLI with bad arguments -----------------------------------------------------------------


def _no_traceback_exit2(fn, argv, capsys) -> str:
    try:
        code = fn(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err, err
    assert err.strip(), argv
    return err


def test_neurons_io_bad_arguments(tmp_path, capsys):
    src = tmp_path / "a.h5"
    write_volume(f"{src}:raw", DATA)
    write_volume(f"{src}:ids", DATA.astype(np.uint32))
    bad = [
        ["info"],
        ["bogus"],
        ["info", ""],
        ["info", str(tmp_path / "missing.tif")],
        ["info", f"{src}:nope"],
        ["info", str(tmp_path)],  # a folder without volumes
        ["convert", f"{src}:raw", f"{src}:raw"],
        ["convert", f"{src}:raw", str(tmp_path / "x.h5"), "--chunks", "a,b"],
        ["convert", f"{src}:raw", str(tmp_path / "x.png")],
        ["convert", f"{src}:raw", str(tmp_path / "x.tif:key")],
        ["convert", f"{src}:raw", str(tmp_path / "x.weird")],
        ["convert", f"{src}:raw", ""],
        ["show", f"{src}:raw", "--z", "99", "-o", str(tmp_path / "s.png")],
        ["show", f"{src}:raw", "-o", ""],
    ]
    for argv in bad:
        err = _no_traceback_exit2(io_main, argv, capsys)
        if argv and argv[0] != "bogus" and len(argv) > 1:
            assert err.count("\n") == 1, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]  # nothing written


def test_neurons_eval_bad_arguments(tmp_path, capsys):
    from neurons.metrics.cli import main as eval_main

    gt = tmp_path / "gt.h5"
    write_volume(gt, DATA.astype(np.uint32))
    write_volume(tmp_path / "small.h5", DATA[:2].astype(np.uint32))
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    for argv in (
        [str(gt)],
        [str(gt), str(tmp_path / "missing.h5")],
        [str(gt), str(tmp_path / "small.h5")],
        [str(gt), str(tmp_path / "junk.tif")],
        [str(gt), str(gt), "--metrics", "nonsense"],
        [str(gt), str(gt), "--block-size", "x"],
        ["", str(gt)],
    ):
        _no_traceback_exit2(eval_main, argv, capsys)


def test_neurons_infer_bad_arguments(tmp_path, capsys):
    from neurons.train.inference.cli import main as infer_main

    raw = tmp_path / "raw.h5"
    write_volume(f"{raw}:raw", DATA.astype(np.uint8))
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"\x00" * 100)
    for argv in (
        [str(ckpt)],
        [str(ckpt), f"{raw}:raw", str(tmp_path / "o.h5")],
        [str(tmp_path / "nope.ckpt"), f"{raw}:raw", str(tmp_path / "o.h5")],
        [str(ckpt), f"{raw}:raw", f"{raw}:raw"],
        [str(ckpt), str(tmp_path / "missing.h5"), str(tmp_path / "o.h5")],
        [str(ckpt), f"{raw}:raw", str(tmp_path / "o.tif")],
        [str(ckpt), f"{raw}:raw", str(tmp_path / "o.h5"), "--block-size", "x"],
        [str(ckpt), f"{raw}:raw", ""],
    ):
        _no_traceback_exit2(infer_main, [*argv, "--quiet"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "raw.h5"]


def test_neurons_train_bad_arguments(tmp_path, capsys):
    from neurons.train.cli import train_main

    out = tmp_path / "run"
    for argv in (
        ["--config-name", "no_such_config", f"training.output_dir={out}"],
        ["--config-name", "synthetic", f"training.output_dir={out}", "optimizer.lr=abc"],
    ):
        err = _no_traceback_exit2(train_main, argv, capsys)
        assert err.count("\n") == 1, err
    assert not out.exists()


def test_failed_download_leaves_no_empty_folder(tmp_path, capsys):
    from neurons.data.download import main as download_main

    out = tmp_path / "a" / "b" / "isbi"
    argv = ["--output", str(out), "--base-url", (tmp_path / "no-mirror").as_uri(), "--retries", "1",
            "--timeout", "1"]
    _no_traceback_exit2(lambda a: download_main("isbi2012", a), argv, capsys)
    assert not (tmp_path / "a").exists()
