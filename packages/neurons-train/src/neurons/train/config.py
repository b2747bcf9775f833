"""Configuration: the schema every training config is checked against, and where configs live.

The YAML files in ``configs/`` are composed by Hydra (``--config-name NAME`` plus ``a.b=value``
overrides) and then validated against :class:`TrainConfig`, a tree of dataclasses: an unknown key
or a value of the wrong type raises :class:`~neurons.train.errors.ConfigError` naming the full
dotted key (``data.batchsize``) and the expected type. Sections whose keys depend on the
selected dataset / loss (``data.options``, ``loss``, ``model.options``) are checked when the
objects are built (see :mod:`neurons.train.builders`).
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from neurons.train.errors import ConfigError

__all__ = [
    "CONFIG_NAMES",
    "CalibrationConfig",
    "InferenceConfig",
    "TrainConfig",
    "compose_config",
    "config_dir",
    "to_plain_dict",
    "validate_config",
]

#: The configs shipped with the package (``configs/<name>.yaml``).
CONFIG_NAMES = (
    "default",
    "synthetic",
    "snemi3d",
    "cremi3d",
    "microns",
    "mitoem2",
    "combine",
    "isbi2012",
    "volumes",
)

DATASETS = ("synthetic", "snemi3d", "cremi3d", "microns", "mitoem2", "isbi2012", "volumes", "combine")
MODES = ("automatic", "proofread")


# ----------------------------------------------------------------------------------------------
# schema
# ----------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    name: str = "synthetic"
    root: str | None = None
    patch_size: list[int] = field(default_factory=lambda: [16, 64, 64])
    batch_size: int = 2
    num_workers: int = 0
    samples_per_epoch: int = 64
    val_patches: int | None = 8
    augment: Any = True
    pin_memory: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    #: (z, y, x) nm (2 values for 2D); null: the dataset's (snemi3d, cremi3d, microns, isbi2012)
    voxel_size: list[float] | None = None


@dataclass
class ModelConfig:
    name: str = "vista3d"
    preset: str | None = None
    in_channels: int = 1
    num_classes: int = 16
    emb_dim: int = 16
    #: offsets of the affinity head, one list of 2 (2D) / 3 (3D) ints each; null: the default
    #: list of the model's dimensionality (neurons.models.default_affinity_offsets)
    affinity_offsets: list[list[int]] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class SchedulerConfig:
    name: str = "cosine"
    warmup_steps: int = 0
    warmup_start_factor: float = 0.01
    min_lr: float = 1e-6


@dataclass
class ValidationConfig:
    decoder: str = "embedding"
    min_size: int = 10
    bandwidth: float | None = None
    metrics: bool = True
    max_instances: int = 512


@dataclass
class TrainingConfig:
    modes: list[str] = field(default_factory=lambda: ["automatic"])
    num_pos_points: int = 5
    num_neg_points: int = 5
    point_sample_mode: str = "instance"
    max_epochs: int = 10
    max_steps: int = -1
    max_time: str | None = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    find_unused_parameters: bool | None = None
    sync_batchnorm: bool = False
    precision: str = "32-true"
    matmul_precision: str | None = "high"
    cpu_threads: int | None = None
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = 1
    val_check_interval: int | float | None = 1.0
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int = 1
    log_every_n_steps: int = 10
    deterministic: bool = False
    benchmark: bool = False
    fast_dev_run: bool | int = False
    output_dir: str = "outputs/default"
    ckpt_path: str | None = None
    validation: ValidationConfig = field(default_factory=ValidationConfig)


@dataclass
class WandbConfig:
    mode: str | None = None
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class ImageLoggingConfig:
    enabled: bool = True
    every_n_epochs: int = 1
    max_images: int = 4


@dataclass
class LoggingConfig:
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])
    wandb: WandbConfig = field(default_factory=WandbConfig)
    images: ImageLoggingConfig = field(default_factory=ImageLoggingConfig)
    lr_monitor: bool = True
    progress_bar: str = "rich"
    model_summary: bool = True


@dataclass
class CheckpointConfig:
    enabled: bool = True
    dirpath: str | None = None
    filename: str = "epoch{epoch:03d}-step{step:07d}-loss{val/loss:.4f}"
    monitor: str | None = "val/loss"
    mode: str = "min"
    save_top_k: int = 3
    save_last: bool = True
    every_n_train_steps: int | None = 100
    train_time_interval_s: float | None = None


@dataclass
class InferenceConfig:
    """Defaults of ``neurons-infer`` / :func:`neurons.train.inference.run_inference`.

    Stored in every checkpoint with the rest of the config and read back by
    :func:`neurons.train.inference.settings_from_config`.

    Two different overlaps exist; do not confuse them:

    * ``overlap`` -- **fraction** (in ``[0, 1)``) of the sliding *window* shared by neighbouring
      windows (stride = ``window * (1 - overlap)``). CLI: ``--window-overlap``.
    * ``halo`` -- **voxels** of overlap between neighbouring *blocks*, used to match instance
      ids across blocks (null: window / 4). CLI: ``--overlap`` (voxels, 1 or per axis).

    Attributes
    ----------
    patch_size, window : list of int or None
        Sliding-window size (null: ``data.patch_size``); ``window`` is an alias.
    overlap : float
        Window overlap fraction, ``0 <= overlap < 1``.
    sw_batch_size : int
        Windows per forward pass (>= 1).
    blend : str
        ``gaussian`` or ``constant``.
    tta : list of str
        ``[]`` (none) or ``[flips]``.
    block_size : list of int or None
        Block core size in voxels (2 values for 2D models; null: 64x256x256 / 1024x1024).
    halo : int, list of int or None
        Block overlap in voxels (see above).
    decoder : str
        ``auto``, ``embedding`` or ``watershed``.
    bandwidth : float or None
        Mean-shift bandwidth (null: the loss' ``delta_v``).
    min_size : int
        Objects smaller than this (voxels) are removed.
    threshold, seed_threshold, sigma : float
        Watershed decoder foreground / seed thresholds and smoothing. ``seed_threshold`` null
        (default): seeds are the cores of ``p > threshold`` at least 2 voxels from its border,
        which exist wherever an object is predicted (a fixed 0.9 gave no seed, hence an empty
        volume, for models that are never that confident).
    intensity_range : list of float or None
        ``[lo, hi]`` raw intensities mapped to [0, 1] at inference. Null (default): the range
        the training pipeline uses for each volume (``neurons.data.LabeledVolume``: uint8 ->
        0..255, otherwise the sampled min/max), so inference input matches training input.
    """

    patch_size: list[int] | None = None
    window: list[int] | None = None
    overlap: float = 0.25
    sw_batch_size: int = 2
    blend: str = "gaussian"
    tta: list[str] = field(default_factory=list)
    block_size: list[int] | None = None
    halo: Any = None
    decoder: str = "auto"
    bandwidth: float | None = None
    min_size: int = 50
    threshold: float = 0.5
    seed_threshold: float | None = None
    sigma: float = 0.0
    intensity_range: list[float] | None = None


@dataclass
class CalibrationConfig:
    """Decoder calibration at the end of training (:func:`neurons.train.calibration.calibrate`).

    Attributes
    ----------
    enabled : bool
        Calibrate when the data has a validation split; the result is stored in ``last.ckpt``
        and used by ``neurons-infer`` when given no decoder flags.
    metric : str
        Objective: ``cremi`` (default), ``voi``, ``arand``, ``ap50``, ``ap75``, ``ari``...
    decoders : list of str or None
        Decoders to consider (null: every registered decoder).
    budget : int
        Most parameter sets tried per decoder.
    time_limit_s : float or None
        Seconds per decoder after which no new parameter set is tried.
    max_voxels : int
        Validation voxels predicted for the search.
    """

    enabled: bool = True
    metric: str = "cremi"
    decoders: list[str] | None = None
    budget: int = 24
    time_limit_s: float | None = 120.0
    max_voxels: int = 2_000_000


@dataclass
class TrainConfig:
    """The full training configuration (top-level groups of every YAML in ``configs/``)."""

    experiment_name: str = "default"
    project_name: str = "neurons"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: dict[str, Any] = field(default_factory=dict)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


_CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": DATASETS,
    "model.name": ("vista3d", "vista2d", "segresnet"),
    "optimizer.name": ("adamw", "adam", "sgd"),
    "scheduler.name": ("cosine", "constant"),
    "training.point_sample_mode": ("instance", "class"),
    "training.validation.decoder": ("components", "embedding"),
    "logging.progress_bar": ("rich", "tqdm", "none"),
    "checkpoint.mode": ("min", "max"),
    "inference.blend": ("gaussian", "constant"),
    "inference.decoder": ("auto", "embedding", "watershed"),
}
_LOGGERS = ("tensorboard", "wandb", "csv")
_WANDB_MODES = ("online", "offline", "disabled")


# ----------------------------------------------------------------------------------------------
# where the YAML files are
# ----------------------------------------------------------------------------------------------
def config_dir() -> Path:
    """Folder holding the shipped Hydra configs.

    Resolution order: ``$NEURONS_CONFIG_DIR``; the ``configs`` folder installed inside the
    ``neurons-train`` wheel (``neurons/train/configs``); the repository's ``configs/`` for
    editable installs.

    Returns
    -------
    pathlib.Path
        A folder containing ``default.yaml``.

    Examples
    --------
    >>> (config_dir() / "default.yaml").is_file()
    True
    """
    env = os.environ.get("NEURONS_CONFIG_DIR")
    if env:
        path = Path(env)
        if not (path / "default.yaml").is_file():
            raise ConfigError(f"NEURONS_CONFIG_DIR={env!r} has no default.yaml")
        return path
    try:
        packaged = Path(str(importlib.resources.files("neurons.train") / "configs"))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - namespace edge cases
        packaged = None
    if packaged is not None and (packaged / "default.yaml").is_file():
        return packaged
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "configs"
        if (candidate / "default.yaml").is_file() and (parent / "packages").is_dir():
            return candidate
    raise ConfigError(
        "cannot find the Neurons configs: neither neurons/train/configs inside the installed "
        "package nor a repository configs/ folder exists; set NEURONS_CONFIG_DIR"
    )


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = str(exc).split("\n")[0]
    if key:
        return f"config key {key!r}: {msg}"
    return msg


def _check_choice(cfg: Mapping[str, Any], key: str, choices: Iterable[str]) -> None:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    if node not in choices:
        raise ConfigError(f"config key {key!r} = {node!r}: expected one of {sorted(choices)}")


def _inference_checks(inf: dict[str, Any]) -> None:
    ov = inf["overlap"]
    if not 0.0 <= ov < 1.0:
        raise ConfigError(
            f"config key 'inference.overlap' = {ov}: expected a fraction of the window in [0, 1) "
            "(the block overlap in voxels is 'inference.halo')"
        )
    if inf["sw_batch_size"] < 1:
        raise ConfigError(
            f"config key 'inference.sw_batch_size' = {inf['sw_batch_size']}: expected >= 1"
        )
    for i, t in enumerate(inf["tta"]):
        if t != "flips":
            raise ConfigError(f"config key 'inference.tta[{i}]' = {t!r}: expected 'flips'")
    for key in ("patch_size", "window", "block_size"):
        v = inf[key]
        if v is not None and (len(v) not in (2, 3) or any(int(x) < 1 for x in v)):
            raise ConfigError(
                f"config key 'inference.{key}' = {v}: expected null or 2 (2D) / 3 (3D) "
                "positive sizes"
            )
    halo = inf["halo"]
    ok = halo is None or (isinstance(halo, int) and not isinstance(halo, bool) and halo >= 0)
    if isinstance(halo, list):
        ok = len(halo) in (2, 3) and all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in halo
        )
    if not ok:
        raise ConfigError(
            f"config key 'inference.halo' = {halo!r}: expected null, a voxel count >= 0 "
            "or one per axis"
        )
    rng = inf["intensity_range"]
    if rng is not None and (len(rng) != 2 or not rng[1] > rng[0]):
        raise ConfigError(
            f"config key 'inference.intensity_range' = {rng}: expected null or [lo, hi] with lo < hi"
        )


def _calibration_checks(cal: dict[str, Any]) -> None:
    from neurons.train.calibration.objective import OBJECTIVES

    if cal["metric"] not in OBJECTIVES:
        raise ConfigError(
            f"config key 'calibration.metric' = {cal['metric']!r}: expected one of "
            f"{sorted(OBJECTIVES)}"
        )
    for key in ("budget", "max_voxels"):
        if cal[key] < 1:
            raise ConfigError(f"config key 'calibration.{key}' = {cal[key]}: expected >= 1")


def _semantic_checks(c: dict[str, Any]) -> None:
    for key, choices in _CHOICES.items():
        _check_choice(c, key, choices)
    patch = c["data"]["patch_size"]
    if len(patch) not in (2, 3) or any(p <= 0 for p in patch):
        raise ConfigError(
            f"config key 'data.patch_size' = {patch}: expected 2 (2D) or 3 (3D) positive sizes"
        )
    model = c["model"]["name"]
    if model == "vista2d" and len(patch) != 2:
        raise ConfigError(
            f"config keys 'model.name' = 'vista2d' and 'data.patch_size' = {patch} disagree: "
            "a 2D model needs a 2-value patch size"
        )
    if model == "vista3d" and len(patch) != 3:
        raise ConfigError(
            f"config keys 'model.name' = 'vista3d' and 'data.patch_size' = {patch} disagree: "
            "a 3D model needs a 3-value patch size (use model.name=vista2d for 2D sections)"
        )
    for name, low in (("data.batch_size", 1), ("data.num_workers", 0), ("seed", 0)):
        node: Any = c
        for part in name.split("."):
            node = node[part]
        if node < low:
            raise ConfigError(f"config key {name!r} = {node}: expected >= {low}")
    modes = c["training"]["modes"]
    if not modes or any(m not in MODES for m in modes):
        raise ConfigError(
            f"config key 'training.modes' = {modes}: expected a non-empty list of {list(MODES)}"
        )
    for i, logger in enumerate(c["logging"]["loggers"]):
        if logger not in _LOGGERS:
            raise ConfigError(
                f"config key 'logging.loggers[{i}]' = {logger!r}: expected one of {list(_LOGGERS)}"
            )
    wmode = c["logging"]["wandb"]["mode"]
    if wmode is not None and wmode not in _WANDB_MODES:
        raise ConfigError(
            f"config key 'logging.wandb.mode' = {wmode!r}: expected null or one of {_WANDB_MODES}"
        )
    _inference_checks(c["inference"])
    _calibration_checks(c["calibration"])
    if c["optimizer"]["lr"] <= 0:
        raise ConfigError(f"config key 'optimizer.lr' = {c['optimizer']['lr']}: expected > 0")
    if len(c["optimizer"]["betas"]) != 2:
        raise ConfigError(
            f"config key 'optimizer.betas' = {c['optimizer']['betas']}: expected two values"
        )


def validate_config(cfg: Mapping[str, Any] | DictConfig) -> DictConfig:
    """Check a composed config against :class:`TrainConfig`.

    Parameters
    ----------
    cfg : Mapping or DictConfig
        A full training config (e.g. from Hydra). A ``hydra`` node, if present, is ignored.

    Returns
    -------
    omegaconf.DictConfig
        The config merged onto the schema (missing keys get their schema defaults), struct mode.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or invalid value; the message names the full dotted key.

    Examples
    --------
    >>> validate_config({"data": {"batch_size": 4}}).data.batch_size
    4
    """
    if isinstance(cfg, DictConfig):
        raw = OmegaConf.to_container(cfg, resolve=False)
    else:
        raw = OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=False)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    schema = OmegaConf.structured(TrainConfig)
    try:
        merged = OmegaConf.merge(schema, raw)
        resolved = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(_omegaconf_message(exc)) from exc
    assert isinstance(resolved, dict)
    _semantic_checks(resolved)
    out = OmegaConf.merge(OmegaConf.structured(TrainConfig), resolved)
    OmegaConf.set_struct(out, True)
    return out


def to_plain_dict(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A resolved config as plain Python containers (what checkpoints store under ``"cfg"``)."""
    if isinstance(cfg, DictConfig | ListConfig):
        out = OmegaConf.to_container(cfg, resolve=True)
    else:
        out = OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)
    assert isinstance(out, dict)
    out.pop("hydra", None)
    return out


def compose_config(
    config_name: str = "default",
    overrides: Iterable[str] = (),
    *,
    config_path: str | os.PathLike[str] | None = None,
) -> DictConfig:
    """Compose a shipped config with Hydra and validate it (no Hydra app, no output dir).

    Parameters
    ----------
    config_name : str
        Name of a YAML file in the config folder, without ``.yaml`` (see :data:`CONFIG_NAMES`).
    overrides : iterable of str
        Hydra overrides, e.g. ``["data.batch_size=8", "optimizer.lr=5e-4"]``.
    config_path : path-like, optional
        Folder of YAML files (default :func:`config_dir`).

    Returns
    -------
    omegaconf.DictConfig
        The validated config.

    Raises
    ------
    ConfigError
        Unknown config name, unknown override key, wrong type.

    Examples
    --------
    >>> cfg = compose_config("synthetic", ["data.batch_size=4"])
    >>> cfg.data.batch_size
    4
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, HydraException

    folder = Path(config_path) if config_path is not None else config_dir()
    if not (folder / f"{config_name}.yaml").is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"no config named {config_name!r} in {folder}; available: {names}")
    gh = GlobalHydra.instance()
    was_initialized = gh.is_initialized()
    if was_initialized:
        gh.clear()
    try:
        with initialize_config_dir(config_dir=str(folder.resolve()), version_base=None):
            cfg = compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, ConfigCompositionException, OmegaConfBaseException) as exc:
        raise ConfigError(f"config {config_name!r}: {exc}") from exc
    return validate_config(cfg)
