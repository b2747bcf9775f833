"""Affinity head in training: config keys, loss wiring, a real Trainer run, inference output."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from neurons.losses import AffinityLoss
from neurons.models import default_affinity_offsets
from neurons.train import CONFIG_NAMES, ConfigError, VistaModule, compose_config
from neurons.train.builders import build_datamodule_from_cfg
from neurons.train.config import to_plain_dict


class _Repeat(torch.utils.data.Dataset):
    """The same (already collated) batch ``n`` times."""

    def __init__(self, batch, n):
        self.batch, self.n = batch, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.batch


def _aff_loss(module, batch, offsets):
    module.eval()
    with torch.no_grad():
        logits = module.model(batch["image"].float())["affinity"]
    module.train()
    return float(AffinityLoss(offsets)(logits, batch["instance"].long())["loss"])


def test_shipped_configs_train_the_affinity_head():
    for name in CONFIG_NAMES:
        cfg = compose_config(name, ["data.root=/nonexistent"] if name != "synthetic" else [])
        assert cfg.loss.weight_affinity > 0, name
        assert cfg.model.affinity_offsets is None, name  # the model's default list


def test_offsets_reach_model_and_loss(tiny):
    offs = [[-1, 0, 0], [0, -2, 0], [0, 0, -5]]
    cfg = compose_config("synthetic", tiny(f"model.affinity_offsets={offs}".replace(" ", "")))
    module = VistaModule(cfg)
    assert module.model.affinity_offsets == ((-1, 0, 0), (0, -2, 0), (0, 0, -5))
    assert module.loss.affinity.offsets == module.model.affinity_offsets
    assert module.model(torch.rand(1, 1, 8, 32, 32))["affinity"].shape == (1, 3, 8, 32, 32)
    default = VistaModule(compose_config("synthetic", tiny()))
    assert default.loss.affinity.offsets == tuple(default_affinity_offsets(3))
    with pytest.raises(ConfigError, match="model.affinity_offsets"):
        VistaModule(compose_config("synthetic", tiny("+loss.affinity_offsets=[[0,0,-1]]")))
    with pytest.raises(ConfigError, match=r"affinity_offsets\[0\]"):
        VistaModule(compose_config("synthetic", tiny("model.affinity_offsets=[[0,-1]]")))


@pytest.mark.slow  # 60 real optimizer steps (~10 s on 2 cores)
def test_trainer_lowers_the_affinity_loss_on_a_fixed_batch(tiny, tmp_path):
    cfg = compose_config(
        "synthetic",
        tiny(
            "training.modes=[automatic]",
            "loss.weight_affinity=1.0",
            "loss.weight_instance=0.0",  # the affinity head alone (plus semantic): fast steps
            "optimizer.lr=1e-2",
            "scheduler.name=constant",
            "scheduler.warmup_steps=0",
        ),
    )
    dm = build_datamodule_from_cfg(cfg, setup_stage="fit")
    batch = next(iter(dm.train_dataloader()))
    assert int(batch["instance"].max()) > 0
    torch.manual_seed(0)
    module = VistaModule(cfg)
    offsets = module.model.affinity_offsets
    before = _aff_loss(module, batch, offsets)
    torch.set_num_threads(1)  # restored by the autouse fixture of conftest.py
    steps = 60
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    loader = torch.utils.data.DataLoader(_Repeat(batch, steps), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == steps
    logged = trainer.logged_metrics
    assert "train/automatic/loss_aff" in logged and "train/automatic/loss_aff/bce" in logged
    after = _aff_loss(module, batch, offsets)
    assert after < 0.8 * before, (before, after)
    # validation (loss terms + metrics) still runs with the affinity term
    val = torch.utils.data.DataLoader(_Repeat(batch, 1), batch_size=None)
    res = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).validate(
        module, dataloaders=val, verbose=False
    )[0]
    assert "val/loss_aff" in res and np.isfinite(res["val/loss_aff"])


def test_sliding_window_returns_affinity_probabilities(tiny):
    from dataclasses import replace

    from neurons.train.inference import predict_volume, settings_from_config

    cfg = compose_config("synthetic", tiny())
    module = VistaModule(cfg).eval()
    sw = settings_from_config(to_plain_dict(cfg), spatial_dims=3).window
    vol = (np.random.default_rng(0).random((10, 40, 36)) * 255).astype(np.uint8)
    with torch.no_grad():
        out = predict_volume(module.model, vol, sw)
    aff = out["affinity"]
    assert {"semantic", "instance", "affinity"} <= set(out)
    assert aff.shape == (len(module.model.affinity_offsets), 10, 40, 36)
    assert aff.min() >= 0.0 and aff.max() <= 1.0  # probabilities, not logits
    # one window covering the volume, plain average: exactly the sigmoid of the model's logits
    whole = replace(sw, window=vol.shape, blend="constant", intensity_range=(0.0, 255.0))
    with torch.no_grad():
        one = predict_volume(module.model, vol, whole)["affinity"]
        x = torch.from_numpy(vol[None, None].astype(np.float32) / 255.0)
        direct = torch.sigmoid(module.model(x)["affinity"])[0].numpy()
    np.testing.assert_allclose(one, direct, atol=1e-5)


def test_checkpoint_from_before_the_affinity_head_still_loads(tiny, tmp_path):
    from neurons.train import load_checkpoint

    cfg = compose_config("synthetic", tiny())
    module = VistaModule(cfg)
    state = {
        f"model.{k}": v for k, v in module.model.state_dict().items() if ".affinity." not in k
    }
    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"cfg": module.cfg}, "state_dict": state}, path)
    model, _ = load_checkpoint(path)
    x = torch.rand(1, 1, 8, 32, 32)
    with torch.no_grad():
        out = model(x)
        ref = module.eval()(x)
    assert set(out) == {"semantic", "instance", "geometry"}  # no untrained affinity output
    torch.testing.assert_close(out["semantic"], ref["semantic"])
    # a checkpoint with the head loads it strictly
    full = {f"model.{k}": v for k, v in module.model.state_dict().items()}
    torch.save({"hyper_parameters": {"cfg": module.cfg}, "state_dict": full}, path)
    model, _ = load_checkpoint(path)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["affinity"], ref["affinity"])
