"""EM augmentations as MONAI-style dictionary transforms.

Every transform draws its parameters once per sample from an explicit
:class:`numpy.random.Generator` and applies them to every key: images are interpolated, labels
are only indexed (nearest neighbour), so image and labels stay aligned and no new label id can
appear. One implementation serves 2-D ``(C, H, W)`` and 3-D ``(C, D, H, W)`` samples.

Example
-------
>>> from neurons.data.transforms import build_augmentation
>>> aug = build_augmentation(True, spatial_dims=3, seed=0)
>>> out = aug({"image": image, "instance": instance, "semantic": semantic})
"""

from neurons.data.transforms.base import (
    AugmentationError,
    BoxTransform,
    ProcessLocalGenerator,
    RandomTransform,
    reflect_coordinates,
    smooth_random_field,
)
from neurons.data.transforms.blur import RandCutBlur, RandMotionBlur, line_kernel
from neurons.data.transforms.build import AUGMENTATIONS, DEFAULT_AUGMENTATIONS, build_augmentation
from neurons.data.transforms.compose import Compose
from neurons.data.transforms.defects import RandLowContrast, RandStripes
from neurons.data.transforms.noise import RandContrast, RandCutNoise, RandGamma, RandGaussianNoise
from neurons.data.transforms.sections import RandMisalignment, RandMissingSection
from neurons.data.transforms.spatial import RandElastic, RandFlip, RandRot90, RandTranspose

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_AUGMENTATIONS",
    "AugmentationError",
    "BoxTransform",
    "Compose",
    "ProcessLocalGenerator",
    "RandContrast",
    "RandCutBlur",
    "RandCutNoise",
    "RandElastic",
    "RandFlip",
    "RandGamma",
    "RandGaussianNoise",
    "RandLowContrast",
    "RandMisalignment",
    "RandMissingSection",
    "RandMotionBlur",
    "RandRot90",
    "RandStripes",
    "RandTranspose",
    "RandomTransform",
    "build_augmentation",
    "line_kernel",
    "reflect_coordinates",
    "smooth_random_field",
]
