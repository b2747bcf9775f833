"""Config composition, schema validation and config-dir resolution."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from neurons.train import CONFIG_NAMES, ConfigError, compose_config, config_dir, validate_config


def test_config_dir_has_every_shipped_config():
    folder = config_dir()
    for name in CONFIG_NAMES:
        assert (folder / f"{name}.yaml").is_file(), name


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_composes_and_validates(name):
    cfg = compose_config(name)
    assert set(cfg) >= {
        "data",
        "model",
        "loss",
        "optimizer",
        "scheduler",
        "training",
        "logging",
        "checkpoint",
        "inference",
    }
    assert "hydra" not in cfg
    patch = list(cfg.data.patch_size)
    assert len(patch) == (2 if cfg.model.name == "vista2d" else 3)
    if name != "default":
        assert cfg.experiment_name == name
        assert cfg.training.output_dir == f"outputs/{name}"


def test_cli_style_overrides_apply():
    cfg = compose_config(
        "snemi3d", ["data.batch_size=8", "training.max_epochs=200", "optimizer.lr=5e-4"]
    )
    assert cfg.data.batch_size == 8 and cfg.training.max_epochs == 200
    assert cfg.optimizer.lr == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.batchsize=3", "data.batchsize"),
        ("+data.batchsize=3", "data.batchsize"),
        ("+training.typo_key=1", "training.typo_key"),
        ("data.batch_size=abc", "data.batch_size"),
        ("training.max_epochs=[1,2]", "training.max_epochs"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("model.name=unet", "model.name"),
        ("training.modes=[automatic,guessing]", "training.modes"),
        ("logging.loggers=[tensorboard,mlflow]", "logging.loggers[1]"),
        ("data.patch_size=[8,32]", "data.patch_size"),
    ],
)
def test_bad_override_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        compose_config("synthetic", [override])
    assert key in str(err.value)


def test_unknown_key_in_a_yaml_file_is_rejected(tmp_path):
    src = config_dir()
    for name in ("default",):
        (tmp_path / f"{name}.yaml").write_text((src / f"{name}.yaml").read_text())
    (tmp_path / "mine.yaml").write_text(
        "defaults:\n  - default\n  - _self_\ndata:\n  batch_szie: 4\n"
    )
    with pytest.raises(ConfigError, match="data.batch_szie"):
        compose_config("mine", config_path=tmp_path)


def test_unknown_config_name_lists_available():
    with pytest.raises(ConfigError, match="snemi3d"):
        compose_config("no_such_config")


def test_validate_plain_dict_fills_defaults_and_checks_types():
    cfg = validate_config({"data": {"batch_size": 4}})
    assert cfg.data.batch_size == 4 and cfg.model.name == "vista3d"
    with pytest.raises(ConfigError, match="checkpoint.save_top_k"):
        validate_config({"checkpoint": {"save_top_k": "three"}})
    with pytest.raises(ConfigError, match="'seed'"):
        validate_config({"seed": -1})


def test_interpolations_resolve():
    cfg = compose_config("synthetic", ["experiment_name=abc"])
    assert cfg.training.output_dir == "outputs/abc"
    assert OmegaConf.is_struct(cfg)


def test_config_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURONS_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="NEURONS_CONFIG_DIR"):
        config_dir()
    (tmp_path / "default.yaml").write_text("seed: 1\n")
    assert config_dir() == tmp_path


@pytest.mark.parametrize(
    "override, key",
    [
        ("+inference.block_sise=[8,8,8]", "inference.block_sise"),
        ("inference.sw_batch_size=many", "inference.sw_batch_size"),
        ("inference.overlap=8", "inference.overlap"),
        ("inference.blend=median", "inference.blend"),
        ("inference.decoder=kmeans", "inference.decoder"),
        ("inference.tta=[flip]", "inference.tta[0]"),
        ("inference.halo=[1.5,2,2]", "inference.halo"),
        ("inference.intensity_range=[5,1]", "inference.intensity_range"),
        ("inference.block_size=[0,64,64]", "inference.block_size"),
    ],
)
def test_inference_section_is_typed(override, key):
    with pytest.raises(ConfigError) as err:
        compose_config("synthetic", [override])
    assert key in str(err.value)


def test_inference_overlap_is_a_fraction_and_halo_voxels():
    cfg = compose_config(
        "synthetic",
        ["inference.overlap=0.5", "inference.halo=[2,8,8]", "inference.intensity_range=[0,4095]"],
    )
    assert cfg.inference.overlap == 0.5 and list(cfg.inference.halo) == [2, 8, 8]
    with pytest.raises(ConfigError, match="inference.halo"):  # the fraction belongs elsewhere
        compose_config("synthetic", ["inference.overlap=16"])
    from neurons.train.config import to_plain_dict
    from neurons.train.inference import settings_from_config

    s = settings_from_config(to_plain_dict(cfg), 3)
    assert s.window.overlap == 0.5 and s.overlap == (2, 8, 8)
    assert s.window.intensity_range == (0.0, 4095.0)
