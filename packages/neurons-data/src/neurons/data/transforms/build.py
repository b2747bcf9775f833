"""Build the EM augmentation pipeline from a config (``True`` / ``False`` / dict of overrides)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from neurons.data.transforms.base import AugmentationError, RandomTransform
from neurons.data.transforms.blur import RandCutBlur, RandMotionBlur
from neurons.data.transforms.compose import Compose
from neurons.data.transforms.defects import RandLowContrast, RandStripes
from neurons.data.transforms.noise import RandContrast, RandCutNoise, RandGamma, RandGaussianNoise
from neurons.data.transforms.sections import RandMisalignment, RandMissingSection
from neurons.data.transforms.spatial import RandElastic, RandFlip, RandRot90, RandTranspose

__all__ = ["AUGMENTATIONS", "DEFAULT_AUGMENTATIONS", "build_augmentation"]

#: Augmentation classes by config name, in the order they are applied: geometry first (it moves
#: labels), then section artefacts, then image-only defects, blur and intensity changes.
AUGMENTATIONS: dict[str, type[RandomTransform]] = {
    cls.name: cls
    for cls in (
        RandFlip,
        RandRot90,
        RandTranspose,
        RandElastic,
        RandMisalignment,
        RandMissingSection,
        RandStripes,
        RandLowContrast,
        RandMotionBlur,
        RandCutBlur,
        RandCutNoise,
        RandGamma,
        RandContrast,
        RandGaussianNoise,
    )
}

_PRIVATE = {"self", "keys_image", "keys_label", "seed", "kwargs"}


def _defaults(cls: type[RandomTransform]) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items() if n not in _PRIVATE}


#: Default parameters (``p`` = probability of firing) of every augmentation, by name.
DEFAULT_AUGMENTATIONS: dict[str, dict[str, Any]] = {
    n: _defaults(c) for n, c in AUGMENTATIONS.items()
}

_GLOBAL_KEYS = {"anisotropic"}


def build_augmentation(
    params: Mapping[str, Any] | bool | None,
    spatial_dims: int,
    keys_image: Sequence[str] = ("image",),
    keys_label: Sequence[str] = ("instance", "semantic"),
    seed: int | None = None,
) -> Compose:
    """Build the EM augmentation pipeline for 2-D or 3-D training samples.

    Parameters
    ----------
    params : bool or dict or None
        ``True``: every augmentation with its defaults (:data:`DEFAULT_AUGMENTATIONS`).
        ``False``/``None``: identity. A dict: overrides on top of the defaults, by augmentation
        name; each value is a dict of parameters (``p`` and the augmentation's own), ``True``
        (defaults), ``False`` (disabled) or a number (the probability ``p``). The top-level key
        ``anisotropic`` (default ``True``) keeps rotations, transposes and elastic displacement
        in-plane (EM sections). Unknown names or parameters raise :class:`AugmentationError`.
    spatial_dims : {2, 3}
        Dimensionality of the samples; section artefacts (missing section, misalignment) only
        act on 3-D samples.
    keys_image : sequence of str
        Image keys, arrays ``(C, [D,] H, W)`` float in ``[0, 1]``.
    keys_label : sequence of str
        Label keys, integer arrays ``([D,] H, W)``; moved with the image, never interpolated.
    seed : int, optional
        Seed of the pipeline's generator (see :class:`Compose` for DataLoader workers).

    Returns
    -------
    Compose
        Callable ``aug(sample, rng=None) -> sample`` with the same keys, shapes and dtypes.

    Examples
    --------
    >>> aug = build_augmentation({"elastic": {"p": 1.0, "sigma": 3}, "gamma": False}, 3, seed=0)
    >>> out = aug({"image": image, "instance": instance, "semantic": semantic})
    """
    if spatial_dims not in (2, 3):
        raise AugmentationError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    kw = {"keys_image": tuple(keys_image), "keys_label": tuple(keys_label)}
    if params is None or params is False:
        return Compose([], spatial_dims=spatial_dims, seed=seed, clip=False, **kw)
    if params is True:
        params = {}
    if not isinstance(params, Mapping):
        raise AugmentationError(
            f"augmentation params must be a bool or a dict, got {type(params).__name__}"
        )
    unknown = set(params) - set(AUGMENTATIONS) - _GLOBAL_KEYS
    if unknown:
        raise AugmentationError(
            f"unknown augmentation(s) {sorted(unknown)}; known: {sorted(AUGMENTATIONS)} "
            f"and global keys {sorted(_GLOBAL_KEYS)}"
        )
    anisotropic = bool(params.get("anisotropic", True))
    transforms: list[RandomTransform] = []
    for name, cls in AUGMENTATIONS.items():
        cfg = copy.deepcopy(DEFAULT_AUGMENTATIONS[name])
        if "anisotropic" in cfg:
            cfg["anisotropic"] = anisotropic
        override = params.get(name, True)
        if override is False or override is None:
            continue
        if isinstance(override, bool):
            pass
        elif isinstance(override, int | float):
            cfg["p"] = float(override)
        elif isinstance(override, Mapping):
            bad = set(override) - set(cfg)
            if bad:
                raise AugmentationError(
                    f"unknown parameter(s) {sorted(bad)} for augmentation {name!r}; "
                    f"valid: {sorted(cfg)}"
                )
            cfg.update(override)
        else:
            raise AugmentationError(
                f"augmentation {name!r}: expected a dict of parameters, a bool or a probability, "
                f"got {override!r}"
            )
        if cfg["p"] == 0:
            continue
        if spatial_dims == 2 and cls.needs_depth > 1:
            continue
        transforms.append(cls(**cfg, **kw))
    return Compose(transforms, spatial_dims=spatial_dims, seed=seed, **kw)
