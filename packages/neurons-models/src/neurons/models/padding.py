"""Pad a batch to the network's stride multiple and crop predictions back.

The encoders downsample by an integer factor per spatial axis (``model.shape_factor()``), so the
padded size of each axis is the next multiple of that factor. Padding is added at the **high end**
of every axis only (after the last voxel), which keeps voxel coordinates (and therefore point
prompts) unchanged; outputs are cropped back to ``[0:size]`` along each axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import ModelConfigError

__all__ = ["PAD_MODES", "padded_shape", "pad_to_multiple", "crop_to_shape"]

#: Padding modes accepted by :func:`pad_to_multiple` (``torch.nn.functional.pad`` names).
#: ``reflect`` is not offered: it fails when the pad is not smaller than the axis length.
PAD_MODES = ("replicate", "constant", "circular")


def padded_shape(shape: Sequence[int], multiple: Sequence[int]) -> tuple[int, ...]:
    """Return ``shape`` rounded up, per axis, to a multiple of ``multiple``.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape ``([D,] H, W)``.
    multiple : sequence of int
        Required divisor per axis (same length as ``shape``).

    Returns
    -------
    tuple of int
        The padded spatial shape.

    Examples
    --------
    >>> padded_shape((33, 47), (8, 8))
    (40, 48)
    """
    if len(shape) != len(multiple):
        raise ModelConfigError(
            f"shape {tuple(shape)} and multiple {tuple(multiple)} differ in length"
        )
    return tuple(-(-int(s) // int(m)) * int(m) for s, m in zip(shape, multiple, strict=True))


def pad_to_multiple(
    x: torch.Tensor, multiple: Sequence[int], mode: str = "replicate", value: float = 0.0
) -> torch.Tensor:
    """Pad the spatial axes of ``x`` (B, C, *spatial) at their high end to a multiple.

    Parameters
    ----------
    x : torch.Tensor
        Channels-first batch ``(B, C, [D,] H, W)``.
    multiple : sequence of int
        Divisor per spatial axis.
    mode : {"replicate", "constant", "circular"}
        How padded voxels are filled.
    value : float
        Fill value for ``mode="constant"``.

    Returns
    -------
    torch.Tensor
        ``x`` itself when no padding is needed, else a padded copy.

    Examples
    --------
    >>> pad_to_multiple(torch.zeros(1, 1, 5, 6), (4, 4)).shape
    torch.Size([1, 1, 8, 8])
    """
    if mode not in PAD_MODES:
        raise ModelConfigError(f"pad_mode must be one of {PAD_MODES}, got {mode!r}")
    spatial = tuple(x.shape[2:])
    target = padded_shape(spatial, multiple)
    if target == spatial:
        return x
    # F.pad takes (last_lo, last_hi, second_last_lo, second_last_hi, ...)
    pads: list[int] = []
    for s, t in zip(reversed(spatial), reversed(target), strict=True):
        pads += [0, t - s]
    if mode == "constant":
        return F.pad(x, pads, mode="constant", value=value)
    return F.pad(x, pads, mode=mode)


def crop_to_shape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes of ``x`` (B, C, *spatial) to ``[0:shape]`` (a view, no copy).

    Examples
    --------
    >>> crop_to_shape(torch.zeros(1, 3, 8, 8), (5, 6)).shape
    torch.Size([1, 3, 5, 6])
    """
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    index = (slice(None), slice(None), *(slice(0, int(s)) for s in shape))
    return x[index]
