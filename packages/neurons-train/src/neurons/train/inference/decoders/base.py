"""What every decoder shares: its registry entry and the affinity-graph helpers.

Affinity convention (the same as the model's ``affinity`` head, mutex watershed and waterz):
channel ``k`` of ``(K, *spatial)`` affinities at voxel ``v`` is the probability that ``v`` and
``v + offsets[k]`` belong to the same instance; pairs that leave the volume are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DecodeError

__all__ = [
    "DecoderSpec",
    "affinity_decoder",
    "cut_region_edges",
    "label_singletons",
    "nearest_neighbour_indices",
    "pair_slices",
    "resolve_offsets",
]

Offsets = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class DecoderSpec:
    """One registered decoder.

    Attributes
    ----------
    fn : callable
        ``fn(outputs, *, offsets, regions, foreground, **params) -> labels``: integer labels
        (0 = unlabelled) of the outputs' spatial shape. ``regions`` is ``None`` (decode every
        voxel) or an integer map whose voxels of value 0 are not decoded and whose different
        values never share an instance; ``foreground`` the probability of the decoded class.
    needs : tuple of str
        Output keys the decoder reads (``"semantic"`` is needed in addition unless
        ``semantic_mode="none"``).
    defaults : dict
        Documented robust parameters (``min_size`` included: applied after decoding).
    search_space : dict
        Parameter -> candidate values, for calibration.
    per_class : bool
        ``True``: called once per instance class with that class's voxels as ``regions`` and
        its probability as ``foreground``; ``False``: called once with the class map.
    uses_offsets : bool
        Whether the decoder reads ``offsets`` (affinity-based decoders).
    description : str
        One line for ``--help`` and the README.
    """

    fn: Callable[..., np.ndarray]
    needs: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    search_space: dict[str, list[Any]] = field(default_factory=dict)
    per_class: bool = False
    uses_offsets: bool = False
    description: str = ""


def resolve_offsets(offsets: Sequence[Sequence[int]] | None, ndim: int) -> Offsets:
    """Validated offsets as a tuple of ``ndim``-tuples; ``None`` = the model's default list.

    Raises
    ------
    DecodeError
        An offset of the wrong length, a zero offset or a repeated one.

    Examples
    --------
    >>> resolve_offsets([[-1, 0], [0, -1]], 2)
    ((-1, 0), (0, -1))
    """
    if offsets is None:
        from neurons.models import default_affinity_offsets

        return tuple(tuple(int(v) for v in o) for o in default_affinity_offsets(ndim))
    out: list[tuple[int, ...]] = []
    for i, off in enumerate(offsets):
        t = tuple(int(v) for v in off)
        if len(t) != ndim or not any(t) or t in out:
            raise DecodeError(
                f"offsets[{i}] = {tuple(off)}: expected a distinct non-zero offset of {ndim} "
                f"integers for {ndim}-D outputs"
            )
        out.append(t)
    if not out:
        raise DecodeError("offsets is empty: expected at least the nearest-neighbour offsets")
    return tuple(out)


def nearest_neighbour_indices(offsets: Offsets) -> list[int | None]:
    """Index in ``offsets`` of the unit offset along each axis (``-1`` or ``+1``), else None.

    Examples
    --------
    >>> nearest_neighbour_indices(((0, -1), (-1, 0), (0, -3)))
    [1, 0]
    """
    ndim = len(offsets[0])
    found: list[int | None] = []
    for ax in range(ndim):
        idx = None
        for k, off in enumerate(offsets):
            if abs(off[ax]) == 1 and sum(abs(v) for v in off) == 1:
                idx = k
                break
        found.append(idx)
    return found


def pair_slices(
    offset: Sequence[int], shape: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices ``(src, dst)`` such that voxel ``src[i]`` pairs with ``dst[i] = src[i] + offset``.

    Examples
    --------
    >>> pair_slices((-1,), (4,))
    ((slice(1, 4, None),), (slice(0, 3, None),))
    """
    src, dst = [], []
    for o, s in zip(offset, shape, strict=True):
        if o >= 0:
            src.append(slice(0, max(s - o, 0)))
            dst.append(slice(min(o, s), s))
        else:
            src.append(slice(min(-o, s), s))
            dst.append(slice(0, max(s + o, 0)))
    return tuple(src), tuple(dst)


def cut_region_edges(
    affinities: np.ndarray,
    offsets: Offsets,
    regions: np.ndarray | None,
    value: float = 0.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Affinities with every pair that crosses regions or touches region 0 set to ``value``.

    Returns ``affinities`` itself when ``regions`` is None, else a float32 copy, or ``out``
    (which may be ``affinities`` itself: in place). One vectorised operation per offset.

    Examples
    --------
    >>> a = np.ones((1, 3), np.float32); r = np.array([1, 1, 2])
    >>> cut_region_edges(a, ((-1,),), r).tolist()
    [[1.0, 1.0, 0.0]]
    """
    if regions is None:
        return affinities
    if out is None:
        out = np.array(affinities, dtype=np.float32, copy=True)
    elif out is not affinities:
        out[...] = affinities
    for k, off in enumerate(offsets):
        src, dst = pair_slices(off, regions.shape)
        a, b = regions[src], regions[dst]
        out[k][src][(a != b) | (a == 0)] = value
    out[:, regions == 0] = value  # also the pairs of excluded voxels that leave the volume
    return out


def label_singletons(labels: np.ndarray, regions: np.ndarray | None) -> np.ndarray:
    """Give every unlabelled voxel inside ``regions`` (everywhere if None) its own new id.

    mwatershed and waterz leave voxels that were never merged with anything at 0; here a voxel
    of a decoded region always belongs to an instance (``min_size`` removes the tiny ones).

    Examples
    --------
    >>> label_singletons(np.array([3, 0, 0, 3], np.uint64), np.array([1, 1, 0, 1])).tolist()
    [3, 4, 0, 3]
    """
    todo = labels == 0
    if regions is not None:
        todo &= regions > 0
    n = int(np.count_nonzero(todo))
    if n:
        start = labels.max(initial=0) + np.uint64(1)
        labels[todo] = np.arange(n, dtype=np.uint64) + start
    return labels


def affinity_decoder(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Registry adapter running ``fn(affinities, offsets, regions=..., **params)`` on
    ``outputs["affinity"]`` after checking it has one channel per offset."""

    def run(
        outputs: Mapping[str, np.ndarray],
        *,
        offsets: Offsets,
        regions: np.ndarray | None = None,
        foreground: np.ndarray | None = None,  # noqa: ARG001 - the class map carries it
        **params: Any,
    ) -> np.ndarray:
        aff = np.asarray(outputs["affinity"])
        if aff.shape[0] != len(offsets):
            raise DecodeError(
                f"output 'affinity' has shape {aff.shape}: expected one channel per affinity "
                f"offset ({len(offsets)} offsets: {list(offsets)})"
            )
        return fn(np.ascontiguousarray(aff, dtype=np.float32), offsets, regions=regions, **params)

    run.__name__ = f"{fn.__name__}_decoder"
    run.__doc__ = f"Registry adapter: :func:`{fn.__name__}` of ``outputs['affinity']``."
    return run
