"""Blur artefacts: motion blur of single sections and cut-blur (low-resolution boxes); image only."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from neurons.data.transforms.base import (
    AugmentationError,
    BoxTransform,
    RandomTransform,
    Sample,
    _as_range,
    draw_sections,
)

__all__ = ["RandCutBlur", "RandMotionBlur", "line_kernel"]


def line_kernel(length: int, angle: float) -> np.ndarray:
    """Normalised 2-D line (motion) kernel of odd size ``length`` at ``angle`` radians.

    Parameters
    ----------
    length : int
        Kernel size and line length in pixels (made odd).
    angle : float
        Direction of motion, radians from the x axis.

    Returns
    -------
    numpy.ndarray
        float32 ``(length, length)`` kernel summing to 1.

    Examples
    --------
    >>> line_kernel(3, 0.0)
    array([[0.        , 0.        , 0.        ],
           [0.33333334, 0.33333334, 0.33333334],
           [0.        , 0.        , 0.        ]], dtype=float32)
    """
    length = int(length) | 1
    r = (length - 1) / 2
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    along = x * np.cos(angle) + y * np.sin(angle)
    perp = np.abs(-x * np.sin(angle) + y * np.cos(angle))
    k = np.clip(1.0 - perp, 0.0, 1.0) * (np.abs(along) <= r + 1e-6)
    return (k / k.sum()).astype(np.float32)


class RandMotionBlur(RandomTransform):
    """Blur 1..``max_sections`` sections (the whole image in 2-D) with a line kernel.

    Parameters
    ----------
    p : float
        Probability of firing.
    max_sections : int
        Largest number of blurred sections.
    kernel_size : int or (int, int)
        Range of the line length in pixels.
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandMotionBlur(p=1.0, seed=0)({"image": img, "instance": ids})
    """

    name = "motion_blur"
    intensity_only = True

    def __init__(
        self,
        p: float = 0.2,
        max_sections: int = 2,
        kernel_size: int | tuple[int, int] = (5, 11),
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.kernel_size = _as_range("motion_blur.kernel_size", kernel_size, integer=True)
        if int(max_sections) < 1 or self.kernel_size[0] < 2:
            raise AugmentationError(
                f"motion_blur: max_sections >= 1 and kernel_size >= 2 expected, got "
                f"{max_sections}, {kernel_size}"
            )
        self.max_sections = int(max_sections)

    def _draw(self, rng, spatial_shape):
        zs = draw_sections(rng, spatial_shape[0], self.max_sections)
        size = int(rng.integers(self.kernel_size[0], self.kernel_size[1] + 1))
        return {"sections": zs, "kernel": line_kernel(size, rng.uniform(0.0, np.pi))}

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        zs, kernel = params["sections"], params["kernel"][None, None]
        for key in self._image_keys(sample):
            img = sample[key]
            res = img.copy()
            res[:, zs] = ndimage.convolve(np.ascontiguousarray(img[:, zs]), kernel, mode="reflect")
            out[key] = res
        return out


class RandCutBlur(BoxTransform):
    """Replace a random box with a down- then up-sampled copy of itself (local loss of resolution).

    Parameters
    ----------
    p : float
        Probability of firing.
    length_ratio : float or (float, float)
        Range of the box side as a fraction of each axis.
    down_ratio : float or (float, float)
        Range of the downsampling factor.
    downsample_z : bool
        Also downsample along z (off for anisotropic EM).
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandCutBlur(p=1.0, seed=0)({"image": img, "instance": ids})
    """

    name = "cut_blur"

    def __init__(
        self,
        p: float = 0.2,
        length_ratio: float | tuple[float, float] = (0.1, 0.4),
        down_ratio: float | tuple[float, float] = (2.0, 8.0),
        downsample_z: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, length_ratio, **kwargs)
        self.down_ratio = _as_range("cut_blur.down_ratio", down_ratio)
        if self.down_ratio[0] < 1:
            raise AugmentationError(f"cut_blur: down_ratio must be >= 1, got {down_ratio}")
        self.downsample_z = bool(downsample_z)

    def _draw_region(self, rng):
        return {"factor": rng.uniform(*self.down_ratio)}

    def _region(self, region: np.ndarray, params: dict) -> np.ndarray:
        factor = params["factor"]
        full = np.array(region.shape, dtype=np.float64)
        down = np.array([1, factor if self.downsample_z else 1, factor, factor])
        small = np.maximum(1, np.round(full / down))
        low = ndimage.zoom(region, small / full, order=1, mode="nearest", grid_mode=True)
        return ndimage.zoom(
            low, full / np.array(low.shape), order=1, mode="nearest", grid_mode=True
        )
