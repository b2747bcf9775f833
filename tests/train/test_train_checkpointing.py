"""Atomic checkpoint writes, ckpt_path resolution, RNG state round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from neurons.train import AtomicCheckpointIO, CheckpointError, load_checkpoint
from neurons.train.checkpointing import capture_rng_state, resolve_ckpt_path, restore_rng_state


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "ck" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.arange(3)}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1

    real_save = torch.save

    def exploding_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True)["global_step"] == 1  # old file intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp left


def test_resolve_ckpt_path(tmp_path):
    assert resolve_ckpt_path(None, tmp_path) is None
    assert resolve_ckpt_path("last", tmp_path) is None
    torch.save({"state_dict": {}, "global_step": 0}, tmp_path / "last.ckpt")
    assert resolve_ckpt_path("last", tmp_path) == str(tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match="nope.ckpt"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), tmp_path)


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    random.seed(3)
    np.random.seed(4)  # noqa: NPY002
    torch.manual_seed(5)
    state = capture_rng_state()
    torch.save({"rng": state}, tmp_path / "s.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    random.seed(99)
    np.random.seed(99)  # noqa: NPY002
    torch.manual_seed(99)
    restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected  # noqa: NPY002


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a neurons-train checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")


def test_module_checkpoint_hooks_restore_rng(tiny):
    from neurons.train import VistaModule, compose_config

    module = VistaModule(compose_config("synthetic", tiny()))
    torch.manual_seed(11)
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    assert len(ckpt["neurons_rng_states"]) == 1
    expected = torch.rand(3)
    torch.manual_seed(12345)
    module.on_load_checkpoint(ckpt)
    module.on_train_start()  # a resumed run restores its RNG right before training
    assert torch.equal(torch.rand(3), expected)
    assert module.hparams["cfg"]["model"]["preset"] == "tiny"
    assert isinstance(module.hparams["cfg"], dict)
