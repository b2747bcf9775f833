"""Mutex watershed on affinities (Wolf et al., 2018) with the ``mwatershed`` library.

Every pair ``(v, v + offset)`` becomes an edge of weight ``affinity - bias``: positive weights
attract (merge), negative ones repel (a mutex constraint), processed greedily by decreasing
magnitude. Nearest-neighbour edges (unit offsets) do both; long-range edges are repulsive only
(their attraction is clipped to 0) unless ``long_range_attractive`` — the original algorithm's
split: local evidence merges, long-range evidence separates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DecodeError
from .base import Offsets, affinity_decoder, cut_region_edges, label_singletons

__all__ = ["mutex_watershed", "mutex_watershed_decoder"]


def _mwatershed() -> Any:
    try:
        import mwatershed
    except ImportError as e:  # pragma: no cover - a dependency of neurons-train
        raise DecodeError(
            "decoder 'mutex_watershed' needs the mwatershed package: pip install mwatershed"
        ) from e
    return mwatershed


def _stride(value: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * ndim
    if isinstance(value, int | np.integer):
        return (int(value),) * ndim
    t = tuple(int(v) for v in value)
    if len(t) != ndim or any(v < 1 for v in t):
        raise DecodeError(f"long_range_stride {value!r}: expected {ndim} integers >= 1")
    return t


def mutex_watershed(
    affinities: np.ndarray,
    offsets: Offsets,
    *,
    bias: float = 0.5,
    long_range_bias: float | None = None,
    long_range_attractive: bool = False,
    long_range_stride: int | Sequence[int] | None = None,
    randomized_strides: bool = False,
    regions: np.ndarray | None = None,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """Segment affinities with the mutex watershed.

    Parameters
    ----------
    affinities : array (K, *spatial)
        Probabilities in [0, 1] that ``v`` and ``v + offsets[k]`` are in the same instance.
    offsets : sequence of K tuples
        One offset per channel; unit offsets are the nearest-neighbour edges.
    bias : float
        Edge weight = ``affinity - bias`` for nearest-neighbour edges: higher bias splits more.
    long_range_bias : float, optional
        The same for long-range edges (default ``bias``).
    long_range_attractive : bool
        Let long-range edges merge as well (default: they only separate).
    long_range_stride : int or sequence of int, optional
        Keep only every n-th long-range edge per axis (fewer edges, faster, less
        over-segmentation); ``randomized_strides`` samples them with probability
        ``1/prod(stride)`` instead.
    regions : int array (*spatial), optional
        Voxels of different values are never merged; voxels of value 0 get label 0.
    seeds : int array (*spatial), optional
        Non-zero voxels keep their id (passed to ``mwatershed``).

    Returns
    -------
    numpy.ndarray
        uint64 labels, 0 only where ``regions`` is 0 (voxels merged with nothing, which
        mwatershed leaves at 0, get ids of their own).

    Examples
    --------
    >>> a = np.ones((2, 4, 4), np.float32); a[1, :, 2] = 0  # cut between columns 1 and 2
    >>> np.unique(mutex_watershed(a, ((-1, 0), (0, -1)))).size
    2
    """
    mws = _mwatershed()
    aff = np.asarray(affinities)
    ndim = aff.ndim - 1
    if aff.shape[0] != len(offsets):
        raise DecodeError(
            f"affinities have {aff.shape[0]} channels but {len(offsets)} offsets were given"
        )
    lr_bias = bias if long_range_bias is None else long_range_bias
    nn = np.array([sum(abs(v) for v in off) == 1 for off in offsets])
    # offsets as long as an axis pair nothing (and mwatershed cannot slice them): drop them
    fits = [all(abs(o) < n for o, n in zip(off, aff.shape[1:], strict=True)) for off in offsets]
    if not all(fits):
        aff, nn = aff[fits], nn[fits]
        offsets = tuple(off for off, f in zip(offsets, fits, strict=True) if f)
    # mwatershed takes float64 only: one copy, then everything in place (memory K x N x 8 B)
    weights = np.array(aff, dtype=np.float64, order="C")
    for k in range(len(offsets)):
        weights[k] -= bias if nn[k] else lr_bias
        if not (nn[k] or long_range_attractive):
            np.minimum(weights[k], 0.0, out=weights[k])
    if regions is not None:
        # -2 is stronger than any weight in [-1, 1]: these mutexes are applied first
        cut_region_edges(weights, offsets, regions, value=-2.0, out=weights)
    stride = _stride(long_range_stride, ndim)
    strides = [(1,) * ndim if n else stride for n in nn]
    kw: dict[str, Any] = {}
    if any(s != (1,) * ndim for s in strides):
        kw.update(strides=[list(s) for s in strides], randomized_strides=bool(randomized_strides))
    if seeds is not None:
        kw["seeds"] = np.ascontiguousarray(seeds, dtype=np.uint64)
    labels = mws.agglom(weights, [list(o) for o in offsets], **kw)
    labels = np.array(labels, dtype=np.uint64)
    if regions is not None:
        labels[regions == 0] = 0
    return label_singletons(labels, regions)


mutex_watershed_decoder = affinity_decoder(mutex_watershed)
