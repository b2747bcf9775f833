"""neurons.losses — embedding, affinity, geometry and Vista losses (vectorised torch).

Everything is one dimension-agnostic implementation (2-D or 3-D from the input's shape) that
stays on the input's device; per-instance statistics are segment reductions, never a Python
loop over instances.  Training targets live in :mod:`neurons.losses.targets`.
"""

from . import targets
from ._core import LossConfigError, LossError, LossInputError, LossInputWarning, segment_instances
from .affinity import AffinityLoss, affinity_targets
from .embedding import CentroidEmbeddingLoss, SkeletonEmbeddingLoss
from .vista import (
    GeometryLoss,
    InstanceLoss,
    SemanticLoss,
    Vista2DLoss,
    Vista3DLoss,
    VistaLoss,
    partial_label_mask,
)

__version__ = "0.1.0"

DiscriminativeLoss = CentroidEmbeddingLoss

__all__ = [
    "__version__",
    "CentroidEmbeddingLoss",
    "DiscriminativeLoss",
    "SkeletonEmbeddingLoss",
    "SemanticLoss",
    "partial_label_mask",
    "InstanceLoss",
    "GeometryLoss",
    "VistaLoss",
    "AffinityLoss",
    "affinity_targets",
    "Vista2DLoss",
    "Vista3DLoss",
    "LossError",
    "LossConfigError",
    "LossInputError",
    "LossInputWarning",
    "segment_instances",
    "targets",
]
