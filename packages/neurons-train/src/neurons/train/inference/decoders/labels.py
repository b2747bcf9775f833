"""Label-map utilities shared by every decoder: relabelling, components, small objects.

All work for any integer ids up to uint64 without a table indexed by raw ids.
"""

from __future__ import annotations

import numpy as np
from skimage import measure

from ..errors import DecodeError

__all__ = [
    "INSTANCE_CLASSES",
    "NUM_CLASSES",
    "label_components",
    "relabel_sequential",
    "remove_small_objects",
    "semantic_argmax",
]

NUM_CLASSES = 5
#: instance class -> semantic values whose voxels make up its instances
#: (0 background, 1 neuron, 2 cleft, 3 mitochondrion, 4 mitochondrion boundary)
INSTANCE_CLASSES: dict[int, tuple[int, ...]] = {1: (1,), 2: (2,), 3: (3, 4)}


def relabel_sequential(
    labels: np.ndarray, dtype: np.dtype | type = np.uint64
) -> tuple[np.ndarray, int]:
    """Map the non-zero ids of ``labels`` to ``1..K`` (order of id value), 0 stays 0.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer ids (any width, up to uint64).
    dtype : dtype
        Output dtype.

    Returns
    -------
    (numpy.ndarray, int)
        Relabelled array of ``dtype`` and the number of objects ``K``.

    Examples
    --------
    >>> relabel_sequential(np.array([0, 7, 2**60, 7]))[0].tolist()
    [0, 1, 2, 1]
    """
    ids, inv = np.unique(labels, return_inverse=True)
    has_bg = ids.size > 0 and ids[0] == 0
    new = np.arange(ids.size, dtype=np.uint64) + (0 if has_bg else 1)
    out = new[inv.reshape(labels.shape)].astype(dtype, copy=False)
    return out, int(ids.size - (1 if has_bg else 0))


def remove_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set objects with fewer than ``min_size`` voxels to 0 (ids are kept, not compacted).

    Examples
    --------
    >>> remove_small_objects(np.array([1, 1, 2, 0]), 2).tolist()
    [1, 1, 0, 0]
    """
    if min_size <= 1 or labels.size == 0:
        return labels
    ids, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = (counts >= min_size) & (ids != 0)
    out = labels.copy()
    out[~keep[inv.reshape(labels.shape)]] = 0
    return out


def label_components(labels: np.ndarray, connectivity: int = 1) -> tuple[np.ndarray, int]:
    """Split every id of ``labels`` into its spatially connected pieces, ids ``1..K`` (int64).

    ``connectivity`` 1 = faces (4/6-neighbourhood) … ndim = full.

    Examples
    --------
    >>> label_components(np.array([[1, 0, 1]]))[1]
    2
    """
    if labels.dtype == np.uint64 and labels.size and labels.max() >= 2**63:
        labels = relabel_sequential(labels, np.int64)[0]
    out, n = measure.label(labels, background=0, connectivity=connectivity, return_num=True)
    return out.astype(np.int64, copy=False), int(n)


def semantic_argmax(probs: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Unified semantic map (uint8) from class probabilities ``(C, *spatial)``.

    Channels beyond the unified classes (the model may have more) are ignored.

    Examples
    --------
    >>> semantic_argmax(np.array([[0.2], [0.8]])).tolist()
    [1]
    """
    if probs.ndim < 2:
        raise DecodeError(f"semantic probabilities must be (C, *spatial), got shape {probs.shape}")
    return np.argmax(probs[:num_classes], axis=0).astype(np.uint8)
