"""From a training checkpoint to a predictor and inference defaults.

The training config stored in the checkpoint decides the defaults: window = ``inference.window``
(else ``inference.patch_size``, else ``data.patch_size``), semantic activation (sigmoid when the
loss says so, else softmax), decoder bandwidth = the embedding loss' pull margin ``delta_v``.
Keys read from the config's ``inference`` section (all optional): ``patch_size``/``window``,
``overlap`` (fraction of the window shared by neighbouring windows, < 1), ``sw_batch_size``,
``blend`` (``gaussian`` | ``constant``), ``tta``, ``block_size``, ``halo`` (voxels of block
overlap used to match ids), ``decoder``, ``bandwidth``, ``min_size``, ``threshold``,
``seed_threshold``, ``sigma``, ``intensity_range`` (``[lo, hi]`` scaling raw intensities to
[0, 1]; null: the range training uses for the input volume, see
:func:`~.sliding.training_intensity_range`). The schema of that section is
:class:`neurons.train.config.InferenceConfig`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .decode import DecodeConfig
from .errors import CheckpointError
from .sliding import SlidingWindow

__all__ = ["InferenceSettings", "idle_cpu_threads", "load_model", "settings_from_config"]


def idle_cpu_threads() -> int:
    """Torch intra-op threads worth using on this machine: the cores not already busy.

    On a CPU shared with other work, OpenMP threads spin-waiting for busy cores make torch
    slower by orders of magnitude (measured: 0.3 s vs 6.5 s per training step with 2 threads
    on 2 loaded cores); one thread per idle core avoids that.

    Examples
    --------
    >>> idle_cpu_threads() >= 1
    True
    """
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - platforms without load averages
        load = 0.0
    return max(1, min(cpus, int(round(cpus - load))))


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """Load a ``neurons-train`` checkpoint: ``(model in eval mode on device, config dict)``.

    Examples
    --------
    >>> model, cfg = load_model("outputs/synthetic/checkpoints/last.ckpt")  # doctest: +SKIP
    """
    try:
        from neurons.train.checkpointing import load_checkpoint
    except ImportError as exc:  # pragma: no cover - the train package always ships it
        raise CheckpointError(f"neurons.train cannot load checkpoints here: {exc}") from exc
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    model, cfg = load_checkpoint(path, map_location=device)
    model.eval()
    return model, dict(cfg)


def _get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def _find(node: Any, key: str) -> Any:
    """First value of ``key`` anywhere in a nested mapping (depth first)."""
    if isinstance(node, Mapping):
        if key in node and node[key] is not None:
            return node[key]
        for v in node.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def _default_semantic_mode() -> str:
    """The semantic mode :class:`neurons.losses.VistaLoss` uses when the config names none."""
    try:
        import inspect

        from neurons.losses import VistaLoss

        default = inspect.signature(VistaLoss).parameters["semantic_mode"].default
        return str(default) if isinstance(default, str) else "softmax"
    except (ImportError, KeyError, TypeError, ValueError):
        return "softmax"


def _tta(value: Any) -> str | None:
    """``None``/``[]``/``"none"``/``false`` -> no TTA; ``"flips"``/``true``/a non-empty list -> flips."""
    if value in (None, False, "none", "") or (isinstance(value, list | tuple) and not value):
        return None
    return "flips"


def _intensity_range(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"config key 'inference.intensity_range' = {value!r}: expected null or [lo, hi]"
        ) from None
    if not hi > lo:
        raise CheckpointError(
            f"config key 'inference.intensity_range' = {value!r}: expected lo < hi"
        )
    return lo, hi


@dataclass
class InferenceSettings:
    """Sliding-window, decoder and block settings derived from a training config."""

    window: SlidingWindow
    decode: DecodeConfig
    block_size: tuple[int, ...]
    overlap: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def settings_from_config(
    cfg: Mapping[str, Any], spatial_dims: int | None = None
) -> InferenceSettings:
    """Inference defaults for a model trained with ``cfg`` (see the module docstring).

    Examples
    --------
    >>> s = settings_from_config({"data": {"patch_size": [16, 64, 64]}})
    >>> s.window.window, s.block_size
    ((16, 64, 64), (64, 256, 256))
    """
    inf = dict(_get(cfg, "inference", {}) or {})
    window = inf.get("window") or inf.get("patch_size") or _get(cfg, "data.patch_size")
    if window is None:
        raise CheckpointError(
            "config has no inference.window / data.patch_size to size the sliding window"
        )
    window = tuple(int(w) for w in window)
    if spatial_dims is not None and len(window) != spatial_dims:
        if len(window) == 3 and spatial_dims == 2:
            window = window[1:]
        else:
            raise CheckpointError(f"window {window} does not match a {spatial_dims}-D model")
    sdims = len(window)
    loss = _get(cfg, "loss", {}) or {}
    mode = str(_find(loss, "semantic_mode") or _default_semantic_mode())
    activation = "sigmoid" if "sigmoid" in mode.lower() or "bce" in mode.lower() else "softmax"
    bandwidth = (
        inf.get("bandwidth")
        or _find(loss, "delta_v")
        or _get(cfg, "training.validation.bandwidth")
        or 0.5
    )
    wov = inf.get("window_overlap", inf.get("overlap", 0.25))
    sw = SlidingWindow(
        window=window,
        overlap=float(wov if wov is not None and float(wov) < 1 else 0.25),
        batch_size=int(inf.get("sw_batch_size", inf.get("batch_size", 1)) or 1),
        blend=str(inf.get("blend", "gaussian")),
        tta=_tta(inf.get("tta")),
        activation={"semantic": activation, "affinity": "sigmoid"},
        intensity_range=_intensity_range(inf.get("intensity_range")),
    )
    dec = DecodeConfig(
        method=str(inf.get("decoder", "auto")),
        bandwidth=float(bandwidth),
        min_size=int(inf.get("min_size", _get(cfg, "training.validation.min_size", 0))),
        threshold=float(inf.get("threshold", 0.5)),
        seed_threshold=inf.get("seed_threshold"),
        sigma=float(inf.get("sigma", 0.0)),
        delta_d=float(inf.get("delta_d") or _find(loss, "delta_d") or 1.5),
        offsets=[[int(v) for v in o] for o in _get(cfg, "model.affinity_offsets", [])] or None,
    )
    default_block = (64, 256, 256) if sdims == 3 else (1024, 1024)
    block = inf.get("block_size") or default_block
    block = tuple(int(b) for b in (block if isinstance(block, list | tuple) else [block] * sdims))
    ov = inf.get("halo")
    if ov is None:
        ov = tuple(max(2, w // 4) for w in window)
    ov = tuple(int(o) for o in (ov if isinstance(ov, list | tuple) else [ov] * sdims))
    return InferenceSettings(window=sw, decode=dec, block_size=block, overlap=ov)
