"""Regression tests of issue 15 for neurons-train / neurons-infer: inputs are never overwritten,
outputs are checked before any work, bad checkpoints and configs give one line and exit 2."""

from __future__ import annotations

import hashlib
import pickle
import re

import numpy as np
import pytest
import torch

from neurons.io import write_volume
from neurons.train import CheckpointError, load_checkpoint
from neurons.train.checkpointing import read_checkpoint, resolve_ckpt_path
from neurons.train.cli import train_main
from neurons.train.inference.cli import main as infer_main
from neurons.train.inference.guards import OutputConflictError, check_inference_paths


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def raw_file(tmp_path):
    path = tmp_path / "same.h5"
    write_volume(f"{path}:raw", np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8))
    write_volume(f"{path}:gt", np.ones((4, 8, 8), np.uint32))
    return path


def _infer(capsys, *argv) -> tuple[int, str]:
    code = infer_main([*map(str, argv), "--quiet"])
    return code, capsys.readouterr().err


# -- item 1 / 5: refused before any work ----------------------------------------------------------


@pytest.mark.parametrize(
    "out,extra,match",
    [
        ("{p}:raw", [], "would overwrite the input"),
        ("{p}", ["--out-key", "raw"], "would overwrite the input"),
        ("{p}", ["--semantic-key", "raw"], "would overwrite the input"),
        ("{p}", ["--gt", "{p}:gt", "--out-key", "gt"], "would overwrite the ground truth"),
        ("{d}/seg.tif", [], "holds one unnamed array.*write to .h5 or .zarr"),
        ("{d}/seg.npy", [], "holds one unnamed array"),
        ("{d}/model.ckpt", [], "is the checkpoint"),
    ],
)
def test_infer_refuses_before_any_work(tmp_path, raw_file, capsys, out, extra, match):
    ckpt = tmp_path / "model.ckpt"  # does not exist: a refusal proves the model was never loaded
    before = _digest(raw_file)
    fmt = {"p": raw_file, "d": tmp_path}
    args = [ckpt, f"{raw_file}:raw", out.format(**fmt), *(e.format(**fmt) for e in extra)]
    code, err = _infer(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(match, err), err
    assert _digest(raw_file) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.h5"]  # nothing written


def test_output_folder_containing_the_input_is_refused(tmp_path):
    folder = tmp_path / "data.zarr"
    pytest.importorskip("zarr")
    write_volume(f"{folder}:raw", np.zeros((2, 4, 4), np.uint8))
    write_volume(tmp_path / "data.zarr" / "inner.h5", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(OutputConflictError, match="contains the input"):
        check_inference_paths(None, folder / "inner.h5", folder)


def test_same_container_other_keys_is_allowed(raw_file):
    out, key = check_inference_paths(None, f"{raw_file}:raw", raw_file, gt=f"{raw_file}:gt")
    assert out == raw_file and key == "segmentation"
    with pytest.raises(OutputConflictError, match="overlap"):
        check_inference_paths(None, f"{raw_file}:raw", raw_file, out_key="seg", semantic_key="seg")
    with pytest.raises(OutputConflictError, match="would overwrite"):  # a group holding the input
        check_inference_paths(None, f"{raw_file}:raw", raw_file, out_key="raw/x")


# -- item 7 / 8: checkpoints ----------------------------------------------------------------------


class _Foreign:
    pass


def _bad_checkpoints(d):
    good = d / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64)}, "global_step": 1}, good)
    data = good.read_bytes()
    files = {
        "empty": (b"", "empty file"),
        "random": (np.random.default_rng(0).bytes(4096), "not a PyTorch checkpoint"),
        "truncated": (data[: len(data) // 2], "truncated or damaged"),
        "pickle": (pickle.dumps({"a": 1}), "not a PyTorch checkpoint"),
    }
    out = {}
    for name, (blob, why) in files.items():
        (d / f"{name}.ckpt").write_bytes(blob)
        out[name] = (d / f"{name}.ckpt", why)
    torch.save({"state_dict": {}, "x": _Foreign()}, d / "objects.ckpt")
    out["objects"] = (d / "objects.ckpt", "Python objects other than tensors")
    return out


def test_bad_checkpoints_give_a_reason_and_never_advise_unsafe_loading(tmp_path):
    for name, (path, why) in _bad_checkpoints(tmp_path).items():
        for call in (read_checkpoint, load_checkpoint, lambda p: resolve_ckpt_path(str(p), ".")):
            with pytest.raises(CheckpointError) as err:
                call(path)
            msg = str(err.value)
            assert why in msg and path.name in msg, (name, msg)
            assert "weights_only" not in msg, (name, msg)


def test_crafted_last_checkpoint_is_refused(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="training.ckpt_path=last|last.ckpt"):
        resolve_ckpt_path("last", tmp_path)


def test_infer_with_random_checkpoint_is_one_line(tmp_path, raw_file, capsys):
    bad = tmp_path / "random.ckpt"
    bad.write_bytes(np.random.default_rng(1).bytes(2048))
    code, err = _infer(capsys, bad, f"{raw_file}:raw", tmp_path / "o.h5")
    assert code == 2 and err.count("\n") == 1
    assert "random.ckpt" in err and "weights_only" not in err
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize(
    "override,match",
    [
        ("data.no_such_key=3", "data.no_such_key"),
        ("training.ckpt_path={d}/truncated.ckpt", "truncated or damaged"),
        ("training.ckpt_path={d}/objects.ckpt", "Python objects"),
    ],
)
def test_train_rejects_before_creating_the_run_folder(tmp_path, capsys, override, match):
    _bad_checkpoints(tmp_path)
    out = tmp_path / "run"
    code = train_main(
        ["--config-name", "synthetic", f"training.output_dir={out}", override.format(d=tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert match in err and err.count("\n") == 1 and "weights_only" not in err
    assert not out.exists()  # no .hydra/ folder, no log file for a rejected run


def test_infer_debug_flag_shows_the_exception(tmp_path, raw_file):
    with pytest.raises(OutputConflictError):
        infer_main([str(tmp_path / "m.ckpt"), f"{raw_file}:raw", f"{raw_file}:raw", "--debug"])


def test_checkpoint_save_cleans_temporaries_of_killed_runs(tmp_path):
    import subprocess
    import sys

    from neurons.io.atomic import _HOST
    from neurons.train import AtomicCheckpointIO

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    path = tmp_path / "last.ckpt"
    stale = tmp_path / f".last.ckpt.{_HOST}-{proc.pid}-0123456789ab.tmp"
    stale.write_bytes(b"\0" * 1000)  # a 1 GiB write killed half-way, in miniature
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert read_checkpoint(path)["global_step"] == 3
