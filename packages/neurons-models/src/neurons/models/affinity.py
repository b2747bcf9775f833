"""Affinity offsets: which voxel pairs the ``affinity`` head predicts.

Channel ``k`` of the ``affinity`` output at voxel ``v`` is the logit that ``v`` and
``v + offsets[k]`` belong to the same instance (``neurons.losses.affinity_targets`` computes the
matching targets; the decoders in ``neurons.train.inference.decoders`` read the same list).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import ModelConfigError

__all__ = ["default_affinity_offsets", "check_affinity_offsets"]

# In-plane long-range steps (voxels) and the extra z steps of the 3-D default.
_INPLANE_STEPS = (3, 9, 27)
_Z_STEPS = (2, 3)


def default_affinity_offsets(spatial_dims: int) -> list[tuple[int, ...]]:
    """The default offset list of a ``spatial_dims``-D model.

    Nearest neighbours along every axis, then long-range in-plane offsets of 3, 9 and 27 voxels
    (y and x), and in 3-D ``z`` offsets of 2 and 3 sections (anisotropic EM: sections are thick,
    so long z steps would cross objects). All offsets point backwards (negative), the
    convention of mutex watershed / waterz: the pair of voxel ``v`` is ``v + offset``.

    Parameters
    ----------
    spatial_dims : int
        2 (``(y, x)`` offsets) or 3 (``(z, y, x)``).

    Returns
    -------
    list of tuple of int
        3-D: 11 offsets, 2-D: 8 offsets.

    Examples
    --------
    >>> default_affinity_offsets(2)[:4]
    [(-1, 0), (0, -1), (-3, 0), (0, -3)]
    >>> len(default_affinity_offsets(3))
    11
    """
    if spatial_dims == 2:
        out = [(-1, 0), (0, -1)]
        for s in _INPLANE_STEPS:
            out += [(-s, 0), (0, -s)]
        return out
    if spatial_dims == 3:
        out3 = [(-1, 0, 0), (0, -1, 0), (0, 0, -1)]
        for s in _INPLANE_STEPS:
            out3 += [(0, -s, 0), (0, 0, -s)]
        out3 += [(-s, 0, 0) for s in _Z_STEPS]
        return out3
    raise ModelConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def check_affinity_offsets(
    offsets: Sequence[Sequence[int]] | None, spatial_dims: int
) -> tuple[tuple[int, ...], ...]:
    """Validate an offset list (``None``: :func:`default_affinity_offsets`).

    Every offset must have ``spatial_dims`` integer entries, not all zero, and appear once.

    Raises
    ------
    ModelConfigError
        Naming the offending entry and what was expected.

    Examples
    --------
    >>> check_affinity_offsets([[0, -1], [-1, 0]], 2)
    ((0, -1), (-1, 0))
    """
    if offsets is None:
        return tuple(default_affinity_offsets(spatial_dims))
    if isinstance(offsets, str | bytes) or not isinstance(offsets, Sequence):
        raise ModelConfigError(
            f"affinity_offsets must be a list of {spatial_dims}-tuples of int, got {offsets!r}"
        )
    if len(offsets) == 0:
        raise ModelConfigError(
            "affinity_offsets is empty: expected at least one offset (null for the default list)"
        )
    out: list[tuple[int, ...]] = []
    for i, off in enumerate(offsets):
        ok = isinstance(off, Sequence) and not isinstance(off, str | bytes)
        ok = ok and len(off) == spatial_dims and all(_is_int(v) for v in off)
        if not ok:
            raise ModelConfigError(
                f"affinity_offsets[{i}] = {off!r}: expected {spatial_dims} integers "
                f"({'(z, y, x)' if spatial_dims == 3 else '(y, x)'})"
            )
        t = tuple(int(v) for v in off)
        if not any(t):
            raise ModelConfigError(f"affinity_offsets[{i}] = {t}: the zero offset pairs a voxel "
                                   "with itself")
        if t in out:
            raise ModelConfigError(f"affinity_offsets[{i}] = {t} appears twice")
        out.append(t)
    return tuple(out)


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    try:
        return int(v) == v
    except (TypeError, ValueError):
        return False
