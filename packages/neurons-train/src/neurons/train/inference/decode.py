"""Decode model outputs into instances in the unified label space.

The decoders live in :mod:`.decoders` (one module each, one registry, one entry point
:func:`~.decoders.decode`); this module keeps the configuration object the inference pipeline
and the block-wise stitching pass around (:class:`DecodeConfig`) and :func:`decode_instances`,
which returns the semantic map next to the instances. The label utilities are re-exported
from here for existing callers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .decoders import DECODERS, decode
from .decoders.labels import (
    INSTANCE_CLASSES,
    NUM_CLASSES,
    label_components,
    relabel_sequential,
    remove_small_objects,
    semantic_argmax,
)
from .decoders.meanshift import cluster_embeddings
from .decoders.registry import resolve_decoder
from .decoders.watershed import seeded_watershed
from .errors import DecodeError

__all__ = [
    "INSTANCE_CLASSES",
    "NUM_CLASSES",
    "DecodeConfig",
    "cluster_embeddings",
    "decode_instances",
    "label_components",
    "relabel_sequential",
    "remove_small_objects",
    "seeded_watershed",
    "semantic_argmax",
]

#: DecodeConfig fields that are decoder parameters (passed to a decoder that has them)
_PARAM_FIELDS = (
    "bandwidth",
    "max_samples",
    "max_seeds",
    "seed",
    "threshold",
    "seed_threshold",
    "seed_distance",
    "sigma",
    "sampling",
    "delta_d",
)


@dataclass
class DecodeConfig:
    """Parameters of :func:`decode_instances`.

    ``method``: a decoder of :data:`~.decoders.DECODERS` (``mutex_watershed``,
    ``agglomeration``, ``embedding``, ``watershed``, ``meanshift``) or ``"auto"``
    (affinities -> mutex watershed, else embedding -> embedding decoder, else watershed).
    ``planewise`` decodes each z plane of a 3-D volume on its own (2-D models on stacks).
    ``classes`` maps each instance class to the semantic values forming its instances;
    ``dense`` lets neurons fill every voxel not of another class. ``min_size`` removes smaller
    objects (0 disables). ``offsets``: the model's affinity offsets (None = default list).
    The remaining fields are decoder parameters, used by the decoders that have them:
    ``bandwidth`` (mean-shift radius; the embedding decoder's pull margin ``delta_v``),
    ``delta_d`` (push margin), ``threshold``/``seed_threshold``/``seed_distance``/``sigma``/
    ``sampling`` (seeded watershed; ``threshold`` is also the agglomeration threshold), and
    ``params`` any other decoder parameter (e.g. ``{"bias": 0.6}``), overriding the fields.
    """

    method: str = "auto"
    classes: Mapping[int, tuple[int, ...]] = field(default_factory=lambda: dict(INSTANCE_CLASSES))
    min_size: int = 0
    connectivity: int = 1
    bandwidth: float = 0.5
    max_samples: int = 10000
    max_seeds: int = 128
    seed: int = 0
    threshold: float = 0.5
    seed_threshold: float | None = 0.9
    seed_distance: float | None = None
    sigma: float = 0.0
    dense: bool = False
    sampling: Sequence[float] | None = None
    planewise: bool = False
    delta_d: float = 1.5
    offsets: Sequence[Sequence[int]] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method != "auto" and self.method not in DECODERS:
            raise DecodeError(
                f"decode method must be one of {['auto', *DECODERS]}, got {self.method!r}"
            )

    def decoder_params(self, name: str) -> dict[str, Any]:
        """Parameters for decoder ``name``: its fields of this config, then ``params``.

        Examples
        --------
        >>> DecodeConfig(bandwidth=0.3, params={"bias": 0.6}).decoder_params("embedding")
        {'delta_d': 1.5, 'delta_v': 0.3, 'min_size': 0, 'bias': 0.6}
        """
        accepted = DECODERS[name].defaults
        out: dict[str, Any] = {}
        for f in _PARAM_FIELDS:
            if f in accepted:
                out[f] = getattr(self, f)
        if "delta_v" in accepted:
            out["delta_v"] = self.bandwidth
        out["min_size"] = self.min_size
        out.update(self.params)
        return out


def decode_instances(
    outputs: Mapping[str, np.ndarray], config: DecodeConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Instances and semantic classes from blended model outputs.

    Parameters
    ----------
    outputs : mapping
        ``"semantic"``: class probabilities ``(C, *spatial)`` (required); ``"instance"``:
        embedding ``(E, *spatial)``; ``"affinity"``: ``(K, *spatial)`` for ``config.offsets``.
    config : DecodeConfig, optional

    Returns
    -------
    (instance, semantic)
        ``instance``: uint64 ids ``1..K``, unique across classes, 0 = background;
        ``semantic``: uint8 unified classes (0..4).

    Examples
    --------
    >>> probs = np.zeros((2, 4, 4), np.float32); probs[0] = 1; probs[:, 1:3, 1:3] = [[[0]], [[1]]]
    >>> ins, sem = decode_instances({"semantic": probs}, DecodeConfig(method="watershed"))
    >>> int(ins.max()), int(sem.sum())
    (1, 4)
    """
    cfg = config or DecodeConfig()
    if cfg.planewise:
        return _decode_planewise(outputs, cfg)
    if "semantic" not in outputs:
        raise DecodeError(f"outputs need a 'semantic' entry, got keys {sorted(outputs)}")
    semantic = semantic_argmax(np.asarray(outputs["semantic"]))
    name = resolve_decoder(cfg.method, outputs)
    instance = decode(
        outputs,
        name,
        cfg.decoder_params(name),
        offsets=cfg.offsets,
        semantic_mode="dense" if cfg.dense else "classes",
        classes=cfg.classes,
        connectivity=cfg.connectivity,
    )
    return instance, semantic


def _decode_planewise(
    outputs: Mapping[str, np.ndarray], cfg: DecodeConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Decode each z plane separately; ids stay unique across planes.

    Affinity offsets must then be 2-D (in-plane), as a 2-D model predicts them.
    """
    sub = DecodeConfig(**{**cfg.__dict__, "planewise": False})
    first = np.asarray(outputs["semantic"]) if "semantic" in outputs else None
    if first is None or first.ndim != 4:
        shape = None if first is None else first.shape
        raise DecodeError(f"planewise decoding needs (C, Z, Y, X) outputs, got shape {shape}")
    instance = np.zeros(first.shape[1:], dtype=np.uint64)
    semantic = np.zeros(first.shape[1:], dtype=np.uint8)
    next_id = np.uint64(0)
    for z in range(first.shape[1]):
        ins, sem = decode_instances({k: np.asarray(v)[:, z] for k, v in outputs.items()}, sub)
        instance[z] = np.where(ins > 0, ins + next_id, np.uint64(0))
        semantic[z] = sem
        next_id += ins.max(initial=np.uint64(0))
    return instance, semantic
