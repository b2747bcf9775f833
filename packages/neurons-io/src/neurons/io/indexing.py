"""Turn a numpy index into (bounding box to read, index to apply to what was read).

Backends only implement ``read(box)`` for a box of unit-step slices; this module gives every
backend full numpy indexing semantics (ints, steps, negative steps, ``...``, ``None``, integer and
boolean arrays) while reading only the bounding region from disk.
"""

from __future__ import annotations

import numbers

import numpy as np

Box = tuple[slice, ...]


def _axis(index: slice, n: int) -> tuple[slice, slice]:
    start, stop, step = index.indices(n)
    count = len(range(start, stop, step))
    if count == 0:
        return slice(0, 0), slice(None)
    last = start + step * (count - 1)
    lo, hi = min(start, last), max(start, last) + 1
    return slice(lo, hi), slice(None, None, step)


def split_index(key, shape: tuple[int, ...]) -> tuple[Box, tuple]:
    """Split a numpy index into a read box and a post-index.

    Parameters
    ----------
    key : index
        Anything numpy accepts for basic/advanced indexing.
    shape : tuple of int
        Shape of the array being indexed.

    Returns
    -------
    box : tuple of slice
        One unit-step ``slice(start, stop)`` per axis, ``0 <= start <= stop <= n``.
    post : tuple
        Index to apply to the array read for ``box``; ``read(box)[post]`` equals ``full[key]``.
    """
    if not isinstance(key, tuple):
        key = (key,)
    consumed = []
    for k in key:
        if k is None or k is Ellipsis:
            consumed.append(0)
        elif isinstance(k, np.ndarray) and k.dtype == bool:
            consumed.append(max(k.ndim, 1))
        else:
            consumed.append(1)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis in [k for k in key if not isinstance(k, np.ndarray)]:
        pos = next(i for i, k in enumerate(key) if not isinstance(k, np.ndarray) and k is Ellipsis)
        fill = len(shape) - sum(consumed)
        key = key[:pos] + (slice(None),) * fill + key[pos + 1 :]
    elif sum(consumed) < len(shape):
        key = key + (slice(None),) * (len(shape) - sum(consumed))
    box: list[slice] = []
    post: list = []
    axis = 0
    for k in key:
        if k is None:
            post.append(None)
            continue
        if axis >= len(shape):
            raise IndexError(f"too many indices for array of shape {shape}")
        n = shape[axis]
        if isinstance(k, slice):
            b, p = _axis(k, n)
            box.append(b)
            post.append(p)
            axis += 1
        elif isinstance(k, numbers.Integral) and not isinstance(k, bool):
            i = int(k)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
            i %= n
            box.append(slice(i, i + 1))
            post.append(0)
            axis += 1
        else:  # advanced index: read the whole axis (or axes), index in memory
            arr = np.asarray(k)
            width = max(arr.ndim, 1) if arr.dtype == bool else 1
            for j in range(width):
                box.append(slice(0, shape[axis + j]))
            post.append(arr)
            axis += width
    return tuple(box), tuple(post)


def box_shape(box: Box) -> tuple[int, ...]:
    """Shape of the region covered by ``box``."""
    return tuple(s.stop - s.start for s in box)
