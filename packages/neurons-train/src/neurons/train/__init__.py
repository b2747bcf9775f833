"""neurons.train — Lightning modules, Hydra configs, checkpoints and the training CLI.

Public API (see the package README for one example each):

* :class:`VistaModule` (and the aliases :class:`Vista3DModule`, :class:`Vista2DModule`)
* :func:`load_checkpoint` -> ``(model in eval mode, cfg dict)``
* :func:`compose_config`, :func:`validate_config`, :func:`config_dir`, :class:`TrainConfig`
* :func:`run_training`, :func:`build_trainer`, :class:`TrainResult`
* :func:`build_model_from_cfg`, :func:`build_loss_from_cfg`, :func:`build_datamodule_from_cfg`
* :func:`sample_point_prompts`, :func:`prompted_targets`, :class:`PointPrompts`
* callbacks :class:`ImageLogger`, :class:`ThroughputMeter`; :class:`AtomicCheckpointIO`
* errors :class:`TrainError`, :class:`ConfigError`, :class:`DatasetFilesMissingError`,
  :class:`CheckpointError`
"""

from neurons.train.builders import (
    GeometryTargets,
    build_datamodule_from_cfg,
    build_loss_from_cfg,
    build_model_from_cfg,
    dataset_voxel_size,
)
from neurons.train.callbacks import ImageLogger, ThroughputMeter
from neurons.train.checkpointing import AtomicCheckpointIO, load_checkpoint
from neurons.train.config import (
    CONFIG_NAMES,
    TrainConfig,
    compose_config,
    config_dir,
    validate_config,
)
from neurons.train.errors import (
    CheckpointError,
    ConfigError,
    DatasetFilesMissingError,
    TrainError,
)
from neurons.train.module import Vista2DModule, Vista3DModule, VistaModule
from neurons.train.prompts import PointPrompts, prompted_targets, sample_point_prompts
from neurons.train.runner import TrainResult, build_trainer, run_training

__version__ = "0.1.0"

__all__ = [
    "CONFIG_NAMES",
    "AtomicCheckpointIO",
    "CheckpointError",
    "ConfigError",
    "DatasetFilesMissingError",
    "ImageLogger",
    "PointPrompts",
    "ThroughputMeter",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "Vista2DModule",
    "Vista3DModule",
    "VistaModule",
    "__version__",
    "build_datamodule_from_cfg",
    "build_loss_from_cfg",
    "GeometryTargets",
    "dataset_voxel_size",
    "build_model_from_cfg",
    "build_trainer",
    "compose_config",
    "config_dir",
    "load_checkpoint",
    "prompted_targets",
    "run_training",
    "sample_point_prompts",
    "validate_config",
]
