"""Every shipped config builds its model, loss and datamodule (real layouts, generated files)."""

from __future__ import annotations

import pytest
import torch

from neurons.train import (
    CONFIG_NAMES,
    ConfigError,
    DatasetFilesMissingError,
    build_datamodule_from_cfg,
    build_loss_from_cfg,
    build_model_from_cfg,
    compose_config,
)

SMALL_PATCH = {2: "data.patch_size=[32,32]", 3: "data.patch_size=[8,32,32]"}


def _data_overrides(name: str, cfg, roots) -> list[str]:
    dims = len(cfg.data.patch_size)
    ov = [
        SMALL_PATCH[dims],
        "data.num_workers=0",
        "data.val_patches=2",
        "data.samples_per_epoch=4",
        "data.pin_memory=false",
    ]
    if cfg.data.name == "synthetic":
        ov += ["++data.options.shape=[16,48,48]"]
    elif cfg.data.name == "combine":
        ov += [f"data.root={roots['snemi3d'].parent}"]
    else:
        ov += [f"data.root={roots[cfg.data.name]}"]
    return ov


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_builds_model_loss_and_datamodule(name, dataset_roots):
    cfg = compose_config(name)
    model = build_model_from_cfg(cfg)  # the config's own preset (research size for real data)
    assert model.spatial_dims == len(cfg.data.patch_size)
    loss = build_loss_from_cfg(cfg)
    small = compose_config(name, _data_overrides(name, cfg, dataset_roots) + ["model.preset=tiny"])
    dm = build_datamodule_from_cfg(small, setup_stage="fit")
    batch = next(iter(dm.train_dataloader()))
    val = next(iter(dm.val_dataloader()))
    spatial = tuple(small.data.patch_size)
    for b in (batch, val):
        assert b["image"].shape[2:] == spatial and b["image"].dtype == torch.float32
        assert b["instance"].shape[1:] == spatial and b["semantic"].shape[1:] == spatial
        assert b["semantic_ids"].shape[1] == 5
    tiny = build_model_from_cfg(small)
    with torch.no_grad():
        out = tiny(batch["image"])
        terms = loss(out, {k: batch[k] for k in ("semantic", "instance", "semantic_ids", "image")})
    assert torch.isfinite(terms["loss"])


@pytest.mark.parametrize("name", ["snemi3d", "cremi3d", "microns", "mitoem2", "isbi2012"])
def test_missing_dataset_names_the_download_script(name, tmp_path):
    cfg = compose_config(name, [f"data.root={tmp_path / 'absent'}"])
    with pytest.raises(DatasetFilesMissingError, match=f"download_{name}.py"):
        build_datamodule_from_cfg(cfg, setup_stage="fit")
    (tmp_path / "empty").mkdir()
    cfg = compose_config(name, [f"data.root={tmp_path / 'empty'}"])
    with pytest.raises(DatasetFilesMissingError, match=f"download_{name}.py"):
        build_datamodule_from_cfg(cfg, setup_stage="fit")


def test_unknown_loss_or_dataset_option_names_the_key():
    with pytest.raises(ConfigError, match="loss.weight_pul"):
        build_loss_from_cfg(compose_config("synthetic", ["+loss.weight_pul=1.0"]))
    with pytest.raises(ConfigError, match="data"):
        build_datamodule_from_cfg(compose_config("synthetic", ["+data.options.shapee=[8,8,8]"]))
    with pytest.raises(ConfigError, match="model"):
        build_model_from_cfg(compose_config("synthetic", ["+model.options.init_filterz=4"]))


@pytest.mark.parametrize(
    "override, key",
    [
        ("++data.augment={elastic:{sigmaa:1.0}}", "data.augment.elastic"),
        ("++data.augment={flipx:true}", "data.augment.flipx"),
        ("++data.augment={flip:{p:2.0}}", "data.augment.flip"),
        ("data.augment=3", "data.augment"),
    ],
)
def test_bad_augmentation_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        build_datamodule_from_cfg(compose_config("synthetic", [override]))
    assert f"config key '{key}" in str(err.value)


def test_cli_bad_augmentation_exits_2_naming_the_key(tmp_path):
    import os
    import subprocess
    import sys

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "neurons.train.cli",
            "--config-name",
            "synthetic",
            "++data.augment={elastic:{sigmaa:1.0}}",
            f"training.output_dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "data.augment.elastic" in res.stderr and "sigmaa" in res.stderr
    assert "Traceback" not in res.stderr
