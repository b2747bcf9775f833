"""Waterz agglomeration: watershed fragments of the nearest-neighbour affinities, then greedy
merging of the region adjacency graph by a boundary score (Funke et al., 2018).

Waterz reads three channels ``(3, Z, Y, X)``: the affinities of each voxel to its neighbour
at ``(-1, 0, 0)``, ``(0, -1, 0)`` and ``(0, 0, -1)``, taken from the offset list (a ``+1``
offset is shifted onto that convention); 2-D outputs get a singleton z. Regions are merged
while their score (for ``"mean"``: one minus the mean affinity on their boundary) is below a
threshold; one run yields the segmentation of every threshold of a list.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import DecodeError
from .base import (
    Offsets,
    affinity_decoder,
    cut_region_edges,
    label_singletons,
    nearest_neighbour_indices,
)

__all__ = ["SCORING_FUNCTIONS", "agglomerate", "agglomerate_all", "agglomeration_decoder"]

#: short names of waterz scoring functions shipped precompiled (others: a C++ type string,
#: compiled on first use, which needs a compiler and boost)
SCORING_FUNCTIONS: dict[str, str] = {
    "mean": "OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>",
    **{
        f"quantile{q}": f"OneMinus<HistogramQuantileAffinity<RegionGraphType, {q}, ScoreValue, 256, false>>"
        for q in (10, 25, 50, 75, 90)
    },
}
SCORING_FUNCTIONS["median"] = SCORING_FUNCTIONS["quantile50"]

_STDOUT_LOCK = threading.Lock()


def _waterz() -> Any:
    try:
        import waterz
    except ImportError as e:
        raise DecodeError(
            "decoder 'agglomeration' needs the waterz package, which is not installed: "
            "pip install 'neurons-train[decoders]' (or pip install waterz)"
        ) from e
    return waterz


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence waterz's progress lines (Python prints and C++ writes to file descriptor 1)."""
    with _STDOUT_LOCK, contextlib.redirect_stdout(io.StringIO()):
        try:
            saved = os.dup(1)
        except OSError:  # no stdout descriptor: nothing to silence
            yield
            return
        try:
            with open(os.devnull, "wb") as null:
                if sys.__stdout__ is not None:
                    sys.__stdout__.flush()
                os.dup2(null.fileno(), 1)
                yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _waterz_affinities(affinities: np.ndarray, offsets: Offsets) -> np.ndarray:
    """``(3, Z, Y, X)`` float32 nearest-neighbour affinities in waterz's convention."""
    ndim = affinities.ndim - 1
    if ndim not in (2, 3):
        raise DecodeError(f"agglomeration decodes 2-D or 3-D outputs, got {ndim}-D affinities")
    idx = nearest_neighbour_indices(offsets)
    missing = [ax for ax, k in enumerate(idx) if k is None]
    if missing:
        raise DecodeError(
            f"agglomeration needs a nearest-neighbour offset (±1) along every axis; the offsets "
            f"{list(offsets)} have none along axis {missing}"
        )
    spatial = affinities.shape[1:]
    out = np.zeros((3, *((1,) * (3 - ndim)), *spatial), dtype=np.float32)
    for ax, k in enumerate(idx):
        a = affinities[k]
        c = ax + 3 - ndim
        if offsets[k][ax] == -1:
            out[c].reshape(spatial)[...] = a
        else:  # (+1): the pair of v + 1 and v, stored at v + 1
            sl_dst = [slice(None)] * ndim
            sl_src = [slice(None)] * ndim
            sl_dst[ax], sl_src[ax] = slice(1, None), slice(None, -1)
            out[c].reshape(spatial)[tuple(sl_dst)] = a[tuple(sl_src)]
    return out


def _scoring(scoring: str) -> str:
    if scoring in SCORING_FUNCTIONS:
        return SCORING_FUNCTIONS[scoring]
    if "<" in scoring:
        return scoring
    raise DecodeError(
        f"scoring {scoring!r}: expected one of {sorted(SCORING_FUNCTIONS)} or a waterz C++ "
        "scoring-function type string"
    )


def agglomerate_all(
    affinities: np.ndarray,
    offsets: Offsets,
    thresholds: Sequence[float],
    *,
    scoring: str = "mean",
    aff_threshold_low: float = 0.0001,
    aff_threshold_high: float = 0.9999,
    regions: np.ndarray | None = None,
) -> dict[float, np.ndarray]:
    """One agglomeration, the segmentation at every threshold of ``thresholds``.

    Parameters
    ----------
    affinities : array (K, *spatial)
        Affinities for ``offsets`` (2-D or 3-D); only the nearest-neighbour ones are read.
    offsets : sequence of K tuples
        Must contain a unit offset along every axis.
    thresholds : sequence of float
        Scores at which to stop merging (``"mean"``: merge while ``1 - mean boundary affinity <
        threshold``); higher thresholds merge more.
    scoring : str
        A name of :data:`SCORING_FUNCTIONS` or a waterz C++ scoring-function type.
    aff_threshold_low, aff_threshold_high : float
        Fragment watershed: edges below ``low`` are never followed, voxels joined by edges
        above ``high`` start in one fragment.
    regions : int array (*spatial), optional
        Voxels of different values are never merged; voxels of value 0 get label 0.

    Returns
    -------
    dict of float to numpy.ndarray
        Threshold -> uint64 labels of ``affinities.shape[1:]``, 0 only outside ``regions``
        (voxels with no affinity above ``aff_threshold_low``, which waterz leaves at 0, get
        ids of their own).

    Examples
    --------
    >>> a = np.ones((2, 4, 4), np.float32); a[1, :, 2] = 0.1
    >>> segs = agglomerate_all(a, ((-1, 0), (0, -1)), [0.5, 0.95])
    >>> [np.unique(s).size for s in segs.values()]
    [2, 1]
    """
    wz = _waterz()
    if len(thresholds) == 0:
        raise DecodeError("agglomeration needs at least one threshold")
    aff = np.asarray(affinities, dtype=np.float32)
    if aff.shape[0] != len(offsets):
        raise DecodeError(
            f"affinities have {aff.shape[0]} channels but {len(offsets)} offsets were given"
        )
    aff = cut_region_edges(aff, offsets, regions, value=0.0)
    waff = np.ascontiguousarray(_waterz_affinities(aff, offsets))
    ts = sorted(float(t) for t in thresholds)
    out: dict[float, np.ndarray] = {}
    with _quiet_stdout():
        gen = wz.agglomerate(
            waff,
            ts,
            aff_threshold_low=float(aff_threshold_low),
            aff_threshold_high=float(aff_threshold_high),
            scoring_function=_scoring(scoring),
        )
        for t, seg in zip(ts, gen, strict=True):
            lab = np.array(seg, dtype=np.uint64).reshape(aff.shape[1:])
            if regions is not None:
                lab[regions == 0] = 0
            out[t] = label_singletons(lab, regions)
    return out


def agglomerate(
    affinities: np.ndarray, offsets: Offsets, *, threshold: float = 0.5, **kwargs: Any
) -> np.ndarray:
    """The segmentation of :func:`agglomerate_all` at one ``threshold``.

    Examples
    --------
    >>> a = np.ones((2, 4, 4), np.float32); a[1, :, 2] = 0.1
    >>> int(agglomerate(a, ((-1, 0), (0, -1)), threshold=0.5).max())
    2
    """
    return agglomerate_all(affinities, offsets, [threshold], **kwargs)[float(threshold)]


agglomeration_decoder = affinity_decoder(agglomerate)
