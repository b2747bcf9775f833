"""Model registry: ``build_model(name, preset=None, **kwargs)``.

A preset is a named set of constructor arguments; explicit ``kwargs`` override it. Sequences in
``kwargs`` (e.g. YAML lists from a Hydra config) are converted to tuples, mappings to dicts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from .base import DenseSegmentationModel
from .errors import ModelConfigError, UnknownModelError
from .segresnet import SegResNet
from .vista import Vista2D, Vista3D, VistaModel

__all__ = ["DEFAULT_PRESET", "PRESETS", "MODELS", "build_model", "list_models", "list_presets"]

#: Preset used when ``build_model`` gets none.
DEFAULT_PRESET = "base"

# CPU tests: no residual block at full resolution, point-wise heads.
_TINY = dict(
    init_filters=8,
    blocks_down=(0, 1, 1),
    blocks_up=(1, 0),
    feature_size=8,
    head_channels=8,
    head_kernel_size=1,
)

_VISTA_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    "small": dict(init_filters=16, blocks_down=(1, 2, 2, 4), feature_size=32),
    # Research default: VISTA3D-style encoder, 64 shared feature channels (as the predecessor).
    "base": dict(init_filters=32, blocks_down=(1, 2, 2, 4), feature_size=64),
    # MONAI vista3d132's image encoder configuration (48 filters, 5 levels, instance norm).
    "large": dict(init_filters=48, blocks_down=(1, 2, 2, 4, 4), feature_size=48),
}

_SEGRESNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    "small": dict(init_filters=16, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), feature_size=32),
    "base": dict(init_filters=32, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), feature_size=64),
}

#: name -> (constructor, fixed kwargs, presets)
MODELS: dict[str, tuple[Callable[..., DenseSegmentationModel], dict[str, Any], dict[str, dict]]] = {
    "vista3d": (Vista3D, {}, _VISTA_PRESETS),
    "vista2d": (Vista2D, {}, _VISTA_PRESETS),
    "vista": (VistaModel, {}, _VISTA_PRESETS),
    "segresnet": (SegResNet, {}, _SEGRESNET_PRESETS),
    "segresnet3d": (SegResNet, {"spatial_dims": 3}, _SEGRESNET_PRESETS),
    "segresnet2d": (SegResNet, {"spatial_dims": 2}, _SEGRESNET_PRESETS),
}

#: name -> preset name -> constructor kwargs (read-only view for documentation / tools).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {name: spec[2] for name, spec in MODELS.items()}


def list_models() -> list[str]:
    """Registered model names.

    Examples
    --------
    >>> "vista3d" in list_models()
    True
    """
    return sorted(MODELS)


def list_presets(name: str) -> list[str]:
    """Preset names of model ``name``.

    Examples
    --------
    >>> list_presets("vista3d")
    ['base', 'large', 'small', 'tiny']
    """
    return sorted(_lookup(name)[2])


def _lookup(name: str) -> tuple[Callable[..., DenseSegmentationModel], dict, dict]:
    if not isinstance(name, str):
        raise UnknownModelError(f"model name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return MODELS[key]


def _plain(value: Any) -> Any:
    """YAML/OmegaConf containers -> tuples / dicts (strings stay strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return tuple(_plain(v) for v in value)
    return value


def _accepted(ctor: Callable[..., Any]) -> list[str]:
    target = VistaModel if ctor in (Vista2D, Vista3D) else ctor
    params = inspect.signature(target.__init__).parameters
    return [
        p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_KEYWORD
    ]


def build_model(name: str, preset: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name : str
        One of :func:`list_models` (``"vista3d"``, ``"vista2d"``, ``"vista"``, ``"segresnet"``,
        ``"segresnet2d"``, ``"segresnet3d"``); case-insensitive.
    preset : str, optional
        One of :func:`list_presets` (``"tiny"``, ``"small"``, ``"base"``, ...); default
        ``"base"`` (the research default).
    **kwargs
        Constructor arguments overriding the preset (e.g. ``num_classes=5``,
        ``spatial_dims=2`` for ``"vista"``/``"segresnet"``, ``resolution=(40, 4, 4)``).

    Returns
    -------
    DenseSegmentationModel
        The model, with ``model.config`` holding ``name``, ``preset`` and the resolved kwargs so
        the same model can be rebuilt with ``build_model(**model.config)``.

    Raises
    ------
    UnknownModelError
        Unknown ``name`` (the message lists the known names).
    ModelConfigError
        Unknown ``preset`` or keyword argument, or invalid values.
    ModelBuildError
        The MONAI backbone cannot be built (never replaced by another network).

    Examples
    --------
    >>> model = build_model("vista3d", preset="tiny")
    >>> model.spatial_dims, model.num_classes
    (3, 16)
    """
    ctor, fixed, presets = _lookup(name)
    preset_name = DEFAULT_PRESET if preset is None else str(preset).strip().lower()
    if preset_name not in presets:
        raise ModelConfigError(
            f"unknown preset {preset!r} for model {name!r}; known presets: {', '.join(sorted(presets))}"
        )
    user = {str(k): _plain(v) for k, v in kwargs.items()}
    accepted = _accepted(ctor)
    unknown = sorted(set(user) - set(accepted))
    if unknown:
        raise ModelConfigError(
            f"unknown argument(s) {unknown} for model {name!r}; accepted: {', '.join(accepted)}"
        )
    for key, value in fixed.items():
        if key in user and user[key] != value:
            raise ModelConfigError(f"model {name!r} fixes {key}={value!r}, got {key}={user[key]!r}")
    resolved = {**presets[preset_name], **fixed, **user}
    model = ctor(**resolved)
    model.config = {"name": name.strip().lower(), "preset": preset_name, **user}
    return model
