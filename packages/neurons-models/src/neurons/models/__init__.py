"""neurons.models — Vista3D, Vista2D and SegResNet on MONAI backbones.

Every model maps ``image (B, C_in, [D,] H, W)`` (+ optional point prompts) to a dict with
``"semantic"``, ``"instance"``, ``"geometry"`` and ``"affinity"`` tensors of the input's spatial
size.
"""

from .affinity import check_affinity_offsets, default_affinity_offsets
from .base import DenseSegmentationModel
from .errors import (
    ModelBuildError,
    ModelConfigError,
    ModelError,
    ModelInputError,
    PromptError,
    UnknownModelError,
)
from .heads import OUTPUT_KEYS, DenseHead, DenseHeads, geometry_channels
from .padding import crop_to_shape, pad_to_multiple, padded_shape
from .prompts import PointPromptEncoder, point_heatmaps
from .registry import DEFAULT_PRESET, PRESETS, build_model, list_models, list_presets
from .segresnet import SegResNet
from .vista import Vista2D, Vista3D, VistaModel

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "build_model",
    "list_models",
    "list_presets",
    "PRESETS",
    "DEFAULT_PRESET",
    "OUTPUT_KEYS",
    "DenseSegmentationModel",
    "VistaModel",
    "Vista3D",
    "Vista2D",
    "SegResNet",
    "DenseHead",
    "DenseHeads",
    "PointPromptEncoder",
    "point_heatmaps",
    "geometry_channels",
    "default_affinity_offsets",
    "check_affinity_offsets",
    "pad_to_multiple",
    "crop_to_shape",
    "padded_shape",
    "ModelError",
    "ModelConfigError",
    "UnknownModelError",
    "ModelBuildError",
    "ModelInputError",
    "PromptError",
]
