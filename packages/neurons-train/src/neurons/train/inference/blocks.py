"""Block geometry: tiling a volume into cores with a halo, shared by every block-wise path."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import StitchError

__all__ = ["BlockGrid", "as_axis_tuple", "halo_mask", "inner_box"]


@dataclass(frozen=True)
class BlockGrid:
    """Tiling of a volume into blocks with a halo.

    Examples
    --------
    >>> g = BlockGrid((10, 10), (4, 4), (1, 1))
    >>> len(g), g.core(0), g.outer(0)
    (9, (slice(0, 4, None), slice(0, 4, None)), (slice(0, 5, None), slice(0, 5, None)))
    """

    shape: tuple[int, ...]
    block: tuple[int, ...]
    overlap: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.shape) == len(self.block) == len(self.overlap)):
            raise StitchError(
                f"block size {self.block} and overlap {self.overlap} need one entry per axis of "
                f"the volume shape {self.shape}"
            )
        if any(b < 1 for b in self.block) or any(o < 0 for o in self.overlap):
            raise StitchError(
                f"block sizes must be >= 1 and overlaps >= 0, got {self.block}, {self.overlap}"
            )

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / b) for s, b in zip(self.shape, self.block, strict=True))

    def __len__(self) -> int:
        return int(np.prod(self.counts))

    def index(self, i: int) -> tuple[int, ...]:
        return tuple(int(v) for v in np.unravel_index(i, self.counts))

    def core(self, i: int) -> tuple[slice, ...]:
        return tuple(
            slice(k * b, min((k + 1) * b, s))
            for k, b, s in zip(self.index(i), self.block, self.shape, strict=True)
        )

    def outer(self, i: int) -> tuple[slice, ...]:
        return tuple(
            slice(max(c.start - o, 0), min(c.stop + o, s))
            for c, o, s in zip(self.core(i), self.overlap, self.shape, strict=True)
        )

    @property
    def id_stride(self) -> int:
        """Provisional ids of block ``i`` lie in ``[i * id_stride, (i + 1) * id_stride)``."""
        return int(np.prod([b + 2 * o for b, o in zip(self.block, self.overlap, strict=True)])) + 1

    @property
    def has_halo(self) -> bool:
        """Whether neighbouring blocks overlap (so their ids can be matched)."""
        return any(o > 0 for o in self.overlap) and len(self) > 1


def as_axis_tuple(v: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """``v`` as one int per axis (a scalar or a 1-sequence is repeated)."""
    if isinstance(v, int | np.integer):
        return (int(v),) * n
    out = tuple(int(x) for x in v)
    if len(out) == 1:
        return out * n
    if len(out) != n:
        raise StitchError(f"{name} needs 1 or {n} values (one per axis), got {v!r}")
    return out


def inner_box(core: Sequence[slice], outer: Sequence[slice]) -> tuple[slice, ...]:
    """``core`` in the coordinates of the array read for ``outer``."""
    return tuple(
        slice(c.start - o.start, c.stop - o.start) for c, o in zip(core, outer, strict=True)
    )


def halo_mask(outer: Sequence[slice], core: Sequence[slice]) -> np.ndarray:
    """Boolean mask over ``outer`` that is True outside ``core``."""
    shape = tuple(o.stop - o.start for o in outer)
    m = np.ones(shape, dtype=bool)
    m[inner_box(core, outer)] = False
    return m
