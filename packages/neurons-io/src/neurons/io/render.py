"""Sections as pictures: grey-level scaling and a random-colour label overlay (no dense tables)."""

from __future__ import annotations

import numpy as np

from .errors import InvalidVolumeError


def to_uint8(section: np.ndarray) -> np.ndarray:
    """Scale a 2-D section to uint8 for display (uint8 as is; bool 0/255; else 0.5-99.5 %)."""
    section = np.asarray(section)
    if section.dtype == np.uint8:
        return section
    if section.dtype == np.bool_:
        return section.astype(np.uint8) * 255
    data = section.astype(np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(section.shape, np.uint8)
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(section.shape, np.uint8)
    scaled = np.clip((np.nan_to_num(data, nan=lo) - lo) / (hi - lo), 0, 1)
    return (scaled * 255 + 0.5).astype(np.uint8)


def label_colors(labels: np.ndarray) -> np.ndarray:
    """A stable pseudo-random RGB colour per id (any integer dtype up to uint64), shape + (3,).

    Colours come from a 64-bit integer hash of the id, so no table indexed by raw ids is built.
    """
    h = np.asarray(labels).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        h *= np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], axis=-1)
    return (64 + rgb.astype(np.uint16) * 191 // 255).astype(np.uint8)


def render_section(
    image: np.ndarray, labels: np.ndarray | None = None, alpha: float = 0.5
) -> np.ndarray:
    """RGB uint8 picture of a 2-D section, optionally with labels blended in (0 = transparent).

    Parameters
    ----------
    image : numpy.ndarray
        2-D (Y, X) section, any numeric dtype.
    labels : numpy.ndarray, optional
        2-D ids of the same shape; 0 is background and stays uncoloured.
    alpha : float
        Opacity of the label colours.

    Returns
    -------
    numpy.ndarray
        (Y, X, 3) uint8.

    Examples
    --------
    >>> rgb = render_section(raw[10], labels=seg[10])  # doctest: +SKIP
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InvalidVolumeError(f"render_section expects a 2-D section, got shape {image.shape}")
    grey = to_uint8(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != image.shape:
            raise InvalidVolumeError(
                f"labels section shape {labels.shape} does not match image section {image.shape}"
            )
        fg = labels != 0
        rgb[fg] = (1 - alpha) * rgb[fg] + alpha * label_colors(labels[fg]).astype(np.float32)
    return (rgb + 0.5).astype(np.uint8)
