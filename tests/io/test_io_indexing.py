"""split_index reproduces numpy indexing exactly (brute force over many random indices)."""

from __future__ import annotations

import numpy as np
import pytest

from neurons.io.indexing import box_shape, split_index


def _random_index(rng, shape):
    parts = []
    for n in shape:
        kind = rng.integers(0, 4)
        if kind == 0:
            parts.append(int(rng.integers(-n, n)))
        elif kind == 1:
            a, b = rng.integers(-n - 2, n + 2, size=2)
            step = int(rng.choice([-3, -2, -1, 1, 2, 3]))
            parts.append(slice(int(a), int(b), step))
        elif kind == 2:
            parts.append(slice(None))
        else:
            parts.append(rng.integers(0, n, size=int(rng.integers(1, 4))))
    if rng.random() < 0.3:
        parts.insert(int(rng.integers(0, len(parts) + 1)), None)
    if rng.random() < 0.3:
        cut = int(rng.integers(0, len(parts)))
        parts = [*parts[:cut], Ellipsis]
    return tuple(parts)


def test_split_index_matches_numpy(rng):
    arr = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    for _ in range(2000):
        key = _random_index(rng, arr.shape)
        try:
            expected = arr[key]
        except IndexError:  # e.g. advanced indices that do not broadcast: numpy refuses too
            continue
        box, post = split_index(key, arr.shape)
        assert all(0 <= s.start <= s.stop <= n for s, n in zip(box, arr.shape, strict=True))
        region = arr[box]
        assert region.shape == box_shape(box)
        np.testing.assert_array_equal(region[post], expected, err_msg=str(key))


def test_split_index_errors():
    with pytest.raises(IndexError):
        split_index((5,), (5, 6))
    with pytest.raises(IndexError):
        split_index((0, 0, 0), (5, 6))
    with pytest.raises(IndexError):
        split_index((Ellipsis, Ellipsis), (5, 6))
