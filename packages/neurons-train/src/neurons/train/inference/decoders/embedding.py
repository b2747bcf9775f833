"""The embedding decoder: instance embeddings -> affinities -> mutex watershed.

The discriminative loss (De Brabandere et al., 2017) pulls every voxel to within ``delta_v`` of
its instance's mean and pushes instance means at least ``2 * delta_d`` apart. So two voxels of
one instance are at most ``2 * delta_v`` apart and two voxels of different instances at least
``2 * delta_d - 2 * delta_v``; the decision boundary in between is ``delta_d``. The affinity of
a pair at embedding distance ``d`` is the logistic

    a(d) = 1 / (1 + exp((d - delta_d) / s)),   s = (delta_d - 2 delta_v) / ln 19

i.e. 0.5 at ``d = delta_d`` and 0.95 / 0.05 at ``d = delta_d ∓ (delta_d - 2 delta_v)``
(``2 delta_v`` and ``2 delta_d - 2 delta_v``: the two margins). It never saturates, so the
mutex watershed keeps the order of the evidence. Affinities are computed for the same offsets
as an affinity head would use and decoded by :func:`~.mutex.mutex_watershed`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import DecodeError
from .base import Offsets, pair_slices
from .mutex import mutex_watershed

__all__ = ["embedding_affinities", "embedding_decoder"]


def _scale(delta_v: float, delta_d: float) -> float:
    if delta_v <= 0 or delta_d <= 0:
        raise DecodeError(f"delta_v and delta_d must be > 0, got {delta_v}, {delta_d}")
    # margins that do not separate (delta_d <= 2 delta_v) still give a usable slope
    return max(delta_d - 2.0 * delta_v, 0.25 * delta_d) / math.log(19.0)


def embedding_affinities(
    embedding: np.ndarray, offsets: Offsets, *, delta_v: float = 0.5, delta_d: float = 1.5
) -> np.ndarray:
    """Affinities ``(K, *spatial)`` from embedding distances of each offset's voxel pairs.

    Parameters
    ----------
    embedding : array (E, *spatial)
        Instance embedding.
    offsets : sequence of K tuples
        Voxel pairs ``(v, v + offset)``; pairs leaving the volume get affinity 0.
    delta_v, delta_d : float
        Pull and push margins of the discriminative loss the embedding was trained with.

    Returns
    -------
    numpy.ndarray
        float32 affinities in (0, 1).

    Examples
    --------
    >>> e = np.zeros((1, 1, 4), np.float32); e[0, 0, 2:] = 5.0
    >>> embedding_affinities(e, ((0, -1),))[0, 0].round(2).tolist()
    [0.0, 1.0, 0.0, 1.0]
    """
    emb = np.asarray(embedding, dtype=np.float32)
    if emb.ndim < 2:
        raise DecodeError(f"embedding must be (E, *spatial), got shape {emb.shape}")
    spatial = emb.shape[1:]
    s = _scale(delta_v, delta_d)
    out = np.zeros((len(offsets), *spatial), dtype=np.float32)
    for k, off in enumerate(offsets):
        if len(off) != len(spatial):
            raise DecodeError(f"offset {off} does not fit {len(spatial)}-D embeddings")
        src, dst = pair_slices(off, spatial)
        diff = emb[(slice(None), *src)] - emb[(slice(None), *dst)]
        d = np.sqrt(np.einsum("c...,c...->...", diff, diff))
        # logistic written with exp of a non-positive argument only (no overflow)
        z = (d - delta_d) / s
        e = np.exp(-np.abs(z))
        out[k][src] = np.where(z > 0, e / (1.0 + e), 1.0 / (1.0 + e))
    return out


def embedding_decoder(
    outputs: Mapping[str, np.ndarray],
    *,
    offsets: Offsets,
    regions: np.ndarray | None = None,
    foreground: np.ndarray | None = None,  # noqa: ARG001 - the class map carries it
    delta_v: float = 0.5,
    delta_d: float = 1.5,
    **params: Any,
) -> np.ndarray:
    """Registry adapter: mutex watershed of :func:`embedding_affinities` of ``"instance"``."""
    aff = embedding_affinities(outputs["instance"], offsets, delta_v=delta_v, delta_d=delta_d)
    return mutex_watershed(aff, offsets, regions=regions, **params)
