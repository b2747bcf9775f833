"""The decoder registry and its one entry point, :func:`decode`.

``decode(outputs, name, params)`` validates the outputs and parameters, turns the semantic
output into the regions a decoder may label (per unified class: neurons, clefts,
mitochondria), runs the decoder, splits objects into connected pieces, removes small ones and
returns uint64 ids ``1..K`` (0 = background), unique across classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import DecodeError
from .agglomeration import agglomeration_decoder
from .base import DecoderSpec, resolve_offsets
from .embedding import embedding_decoder
from .labels import (
    INSTANCE_CLASSES,
    NUM_CLASSES,
    label_components,
    relabel_sequential,
    remove_small_objects,
    semantic_argmax,
)
from .meanshift import meanshift_decoder
from .mutex import mutex_watershed_decoder
from .watershed import watershed_decoder

__all__ = ["DECODERS", "SEMANTIC_MODES", "decode", "resolve_decoder"]

#: how the ``semantic`` output is used: ``classes`` = instances per unified class inside the
#: voxels of that class (argmax); ``dense`` = the same, but neurons fill every voxel that is not
#: of another instance class (background included); ``none`` = ignore it, label every voxel
SEMANTIC_MODES = ("classes", "dense", "none")

_MWS_DEFAULTS: dict[str, Any] = {
    "bias": 0.5,
    "long_range_bias": 0.5,
    "long_range_attractive": False,
    "long_range_stride": None,
    "randomized_strides": False,
    "min_size": 0,
}

DECODERS: dict[str, DecoderSpec] = {
    "mutex_watershed": DecoderSpec(
        fn=mutex_watershed_decoder,
        needs=("affinity",),
        defaults=dict(_MWS_DEFAULTS),
        search_space={
            "bias": [0.3, 0.4, 0.5, 0.6, 0.7],
            "long_range_bias": [0.3, 0.5, 0.7],
            "min_size": [0, 20, 100],
        },
        uses_offsets=True,
        description="mutex watershed of the affinities (mwatershed)",
    ),
    "agglomeration": DecoderSpec(
        fn=agglomeration_decoder,
        needs=("affinity",),
        defaults={
            "threshold": 0.5,
            "scoring": "mean",
            "aff_threshold_low": 0.0001,
            "aff_threshold_high": 0.9999,
            "min_size": 0,
        },
        search_space={
            "threshold": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
            "scoring": ["mean", "quantile50", "quantile75"],
            "min_size": [0, 20, 100],
        },
        uses_offsets=True,
        description="waterz: watershed fragments + mean-affinity agglomeration",
    ),
    "embedding": DecoderSpec(
        fn=embedding_decoder,
        needs=("instance",),
        defaults={"delta_v": 0.5, "delta_d": 1.5, **_MWS_DEFAULTS},
        search_space={
            "bias": [0.3, 0.4, 0.5, 0.6, 0.7],
            "delta_d": [1.0, 1.5, 2.0],
            "min_size": [0, 20, 100],
        },
        uses_offsets=True,
        description="embedding distances -> affinities (loss margins) -> mutex watershed",
    ),
    "watershed": DecoderSpec(
        fn=watershed_decoder,
        needs=(),
        defaults={
            "threshold": 0.5,
            "seed_threshold": None,  # seeds = cores of p > threshold: never empty (0.9 was)
            "seed_distance": None,
            "sigma": 0.0,
            "sampling": None,
            "compactness": 0.0,
            "min_size": 0,
        },
        search_space={
            "seed_threshold": [None, 0.5, 0.6, 0.7, 0.8, 0.9],
            "sigma": [0.0, 1.0],
            "min_size": [0, 20, 100],
        },
        per_class=True,
        description="seeded watershed of the class probability",
    ),
    "meanshift": DecoderSpec(
        fn=meanshift_decoder,
        needs=("instance",),
        defaults={
            "bandwidth": 0.5,
            "max_samples": 10000,
            "max_seeds": 128,
            "max_rounds": 6,
            "iters": 20,
            "min_support": 1,
            "seed": 0,
            "min_size": 0,
        },
        search_space={"bandwidth": [0.25, 0.5, 0.75, 1.0], "min_size": [0, 20, 100]},
        per_class=True,
        description="mean-shift clustering of the embedding (the predecessor's decoder)",
    ),
}


def resolve_decoder(name: str, outputs: Mapping[str, Any] | None = None) -> str:
    """Registry name for ``name``; ``"auto"`` picks by the outputs present: ``affinity`` ->
    mutex watershed, else ``instance`` -> embedding, else seeded watershed.

    Examples
    --------
    >>> resolve_decoder("auto", {"semantic": 0, "affinity": 0})
    'mutex_watershed'
    """
    if name == "auto":
        keys = outputs or {}
        if "affinity" in keys:
            return "mutex_watershed"
        return "embedding" if "instance" in keys else "watershed"
    if name not in DECODERS:
        raise DecodeError(f"unknown decoder {name!r}; expected one of {['auto', *DECODERS]}")
    return name


def _regions(semantic: np.ndarray, classes: Mapping[int, Sequence[int]], dense: bool) -> np.ndarray:
    """uint8 map: instance class of each voxel (0 = not decoded)."""
    regions = np.zeros(semantic.shape, dtype=np.uint8)
    for cls, members in sorted(classes.items()):
        if not 0 < int(cls) < 256:
            raise DecodeError(f"instance class {cls!r}: expected an integer in 1..255")
        regions[np.isin(semantic, np.asarray(members, dtype=np.uint8))] = cls
    if dense and 1 in classes:
        others = [m for c, ms in classes.items() if c != 1 for m in ms]
        regions[(regions == 0) & ~np.isin(semantic, np.asarray(others, dtype=np.uint8))] = 1
    return regions


def _class_probability(probs: np.ndarray, members: Sequence[int]) -> np.ndarray:
    """Probability of a class renormalised over the unified classes (a model may have more
    channels; sigmoid outputs need not sum to one)."""
    chans = [m for m in members if m < probs.shape[0]]
    return probs[chans].sum(0) / np.maximum(probs[:NUM_CLASSES].sum(0), 1e-6)


def _check_outputs(outputs: Mapping[str, Any], name: str, needs: Sequence[str]) -> tuple[int, ...]:
    missing = [k for k in needs if k not in outputs]
    if missing:
        raise DecodeError(
            f"decoder {name!r} needs output(s) {missing}, which are missing; outputs have keys "
            f"{sorted(outputs)}"
        )
    spatial: tuple[int, ...] | None = None
    for k in needs:
        shape = tuple(np.shape(outputs[k]))
        if len(shape) not in (3, 4):
            raise DecodeError(
                f"output {k!r} has shape {shape}: expected (C, Y, X) or (C, Z, Y, X) without a "
                "batch axis"
            )
        if spatial is None:
            spatial = shape[1:]
        elif shape[1:] != spatial:
            raise DecodeError(
                f"output {k!r} has spatial shape {shape[1:]}, but {needs[0]!r} has {spatial}"
            )
    if spatial is None:
        raise DecodeError(f"decoder {name!r} has nothing to decode (no outputs needed)")
    return spatial


def _params(name: str, spec: DecoderSpec, params: Mapping[str, Any] | None) -> dict[str, Any]:
    p = dict(spec.defaults)
    unknown = sorted(set(params or {}) - set(p))
    if unknown:
        raise DecodeError(
            f"decoder {name!r} has no parameter(s) {unknown}; its parameters are {sorted(p)}"
        )
    p.update(params or {})
    return p


def decode(
    outputs: Mapping[str, np.ndarray],
    decoder: str,
    params: Mapping[str, Any] | None = None,
    *,
    offsets: Sequence[Sequence[int]] | None = None,
    semantic_mode: str = "classes",
    classes: Mapping[int, Sequence[int]] | None = None,
    connectivity: int = 1,
) -> np.ndarray:
    """Decode model outputs into instances with a registered decoder.

    Parameters
    ----------
    outputs : mapping of str to numpy.ndarray
        Activated outputs without batch axis: ``"semantic"`` ``(C, *spatial)`` class
        probabilities, ``"instance"`` ``(E, *spatial)`` embedding, ``"affinity"``
        ``(K, *spatial)`` probabilities for ``offsets``; spatial is (Y, X) or (Z, Y, X).
    decoder : str
        A name of :data:`DECODERS` or ``"auto"`` (see :func:`resolve_decoder`).
    params : mapping, optional
        Decoder parameters overriding ``DECODERS[decoder].defaults`` (``min_size`` removes
        smaller objects after decoding).
    offsets : sequence of tuples, optional
        Affinity offsets (``None``: ``neurons.models.default_affinity_offsets(ndim)``); the
        embedding decoder computes its affinities for them.
    semantic_mode : {"classes", "dense", "none"}
        See :data:`SEMANTIC_MODES`.
    classes : mapping, optional
        Instance class -> semantic values forming its instances (default
        :data:`~.labels.INSTANCE_CLASSES`).
    connectivity : int
        Objects are split into pieces connected at this connectivity (1 = faces).

    Returns
    -------
    numpy.ndarray
        uint64 instance ids ``1..K`` of the spatial shape, 0 = background; ordered by class.

    Raises
    ------
    DecodeError
        Unknown decoder or parameter, a missing output, channels that do not match the
        offsets, shapes that disagree.

    Examples
    --------
    >>> aff = np.ones((2, 4, 6), np.float32); aff[1, :, 3] = 0  # cut between x = 2 and 3
    >>> decode({"affinity": aff}, "mutex_watershed", offsets=[(-1, 0), (0, -1)],
    ...        semantic_mode="none").max()
    np.uint64(2)
    """
    name = resolve_decoder(decoder, outputs)
    spec = DECODERS[name]
    p = _params(name, spec, params)
    min_size = int(p.pop("min_size", 0) or 0)
    if semantic_mode not in SEMANTIC_MODES:
        raise DecodeError(f"semantic_mode {semantic_mode!r}: expected one of {SEMANTIC_MODES}")
    needs = tuple(spec.needs) + (("semantic",) if semantic_mode != "none" else ())
    if not needs:
        raise DecodeError(
            f"decoder {name!r} decodes the semantic output: use semantic_mode 'classes' or 'dense'"
        )
    spatial = _check_outputs(outputs, name, needs)
    offs = resolve_offsets(offsets, len(spatial)) if spec.uses_offsets else None
    if "affinity" in spec.needs and np.shape(outputs["affinity"])[0] != len(offs):
        raise DecodeError(
            f"output 'affinity' has {np.shape(outputs['affinity'])[0]} channels but there are "
            f"{len(offs)} offsets {list(offs)}: pass the offsets the model was trained with"
        )
    instance = np.zeros(spatial, dtype=np.uint64)
    if semantic_mode == "none":
        labels = spec.fn(outputs, offsets=offs, regions=None, foreground=None, **p)
        _add_objects(instance, np.asarray(labels), None, connectivity, min_size)
        return instance
    cls_map = dict(INSTANCE_CLASSES if classes is None else classes)
    probs = np.asarray(outputs["semantic"])
    regions = _regions(semantic_argmax(probs), cls_map, semantic_mode == "dense")
    labels = None
    if not spec.per_class:
        labels = spec.fn(outputs, offsets=offs, regions=regions, foreground=None, **p)
    # class by class (a few classes, not instances): ids ordered by class, never across them
    for cls, members in sorted(cls_map.items()):
        mask = regions == cls
        if not mask.any():
            continue
        if spec.per_class:
            lab = spec.fn(
                outputs,
                offsets=offs,
                regions=mask.view(np.uint8),
                foreground=_class_probability(probs, members),
                **p,
            )
        else:
            lab = labels
        _add_objects(instance, np.asarray(lab), mask, connectivity, min_size)
    return instance


def _add_objects(
    instance: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None,
    connectivity: int,
    min_size: int,
) -> None:
    """Write the connected pieces of ``labels`` inside ``mask`` into ``instance`` with new ids
    after the ones it holds (small pieces removed)."""
    if labels.shape != instance.shape:
        raise DecodeError(
            f"decoder returned labels of shape {labels.shape}, expected {instance.shape}"
        )
    comp, n = label_components(labels if mask is None else np.where(mask, labels, 0), connectivity)
    if min_size > 1:
        comp, n = relabel_sequential(remove_small_objects(comp, min_size), np.int64)
    start = instance.max(initial=0)
    sel = comp > 0
    instance[sel] = comp[sel].astype(np.uint64) + start
