"""Intensity augmentations: cut-noise, Gaussian noise, gamma and brightness/contrast (image only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from neurons.data.transforms.base import (
    AugmentationError,
    BoxTransform,
    RandomTransform,
    Sample,
    _as_range,
)

__all__ = ["RandContrast", "RandCutNoise", "RandGamma", "RandGaussianNoise"]


class RandCutNoise(BoxTransform):
    """Add Gaussian noise inside a random box.

    Parameters
    ----------
    p : float
        Probability of firing.
    length_ratio : float or (float, float)
        Range of the box side as a fraction of each axis.
    noise_scale : float or (float, float)
        Range of the noise standard deviation.
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandCutNoise(p=1.0, seed=0)({"image": img, "instance": ids})
    """

    name = "cut_noise"

    def __init__(
        self,
        p: float = 0.2,
        length_ratio: float | tuple[float, float] = (0.1, 0.4),
        noise_scale: float | tuple[float, float] = (0.05, 0.2),
        **kwargs: Any,
    ) -> None:
        super().__init__(p, length_ratio, **kwargs)
        self.noise_scale = _as_range("cut_noise.noise_scale", noise_scale)
        if self.noise_scale[0] < 0:
            raise AugmentationError(f"cut_noise: noise_scale must be >= 0, got {noise_scale}")

    def _draw_region(self, rng):
        # the noise itself is generated in _region from this seed, so every image key of the
        # sample gets the same field
        return {"scale": rng.uniform(*self.noise_scale), "seed": int(rng.integers(2**63))}

    def _region(self, region: np.ndarray, params: dict) -> np.ndarray:
        noise = np.random.default_rng(params["seed"]).standard_normal(
            region.shape, dtype=np.float32
        )
        noise *= np.float32(params["scale"])
        return region + noise


class RandGaussianNoise(RandomTransform):
    """Add zero-mean Gaussian noise to the whole image, clipped to ``[0, 1]``.

    Parameters
    ----------
    p : float
        Probability of firing.
    std : float or (float, float)
        Range of the noise standard deviation.
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandGaussianNoise(p=1.0, std=0.05, seed=0)({"image": img, "instance": ids})
    """

    name = "gaussian_noise"
    intensity_only = True

    def __init__(
        self, p: float = 0.3, std: float | tuple[float, float] = (0.01, 0.05), **kwargs: Any
    ) -> None:
        super().__init__(p, **kwargs)
        self.std = _as_range("gaussian_noise.std", std)
        if self.std[0] < 0:
            raise AugmentationError(f"gaussian_noise: std must be >= 0, got {std}")

    def _draw(self, rng, spatial_shape):
        return {"std": rng.uniform(*self.std), "seed": int(rng.integers(2**63))}

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        for key in self._image_keys(sample):
            img = sample[key]
            noise = np.random.default_rng(params["seed"]).standard_normal(
                img.shape, dtype=np.float32
            )
            noise *= np.float32(params["std"])
            noise += img
            out[key] = np.clip(noise, 0.0, 1.0, out=noise)
        return out


class RandGamma(RandomTransform):
    """Gamma correction ``x ** gamma`` of intensities in ``[0, 1]``.

    Parameters
    ----------
    p : float
        Probability of firing.
    gamma : float or (float, float)
        Range of the exponent (drawn log-uniformly, so darker and brighter are equally likely).
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandGamma(p=1.0, gamma=(0.7, 1.4), seed=0)({"image": img, "instance": ids})
    """

    name = "gamma"
    intensity_only = True

    def __init__(
        self, p: float = 0.3, gamma: float | tuple[float, float] = (0.7, 1.4), **kwargs: Any
    ) -> None:
        super().__init__(p, **kwargs)
        self.gamma = _as_range("gamma.gamma", gamma)
        if self.gamma[0] <= 0:
            raise AugmentationError(f"gamma: exponent must be > 0, got {gamma}")

    def _draw(self, rng, spatial_shape):
        return {"gamma": float(np.exp(rng.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))}

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        for key in self._image_keys(sample):
            res = np.clip(sample[key], 0.0, 1.0)
            out[key] = np.power(res, np.float32(params["gamma"]), out=res)
        return out


class RandContrast(RandomTransform):
    """Brightness/contrast: ``(x - mean) * scale + mean + shift``, optionally per section.

    Parameters
    ----------
    p : float
        Probability of firing.
    scale : float or (float, float)
        Range of the contrast factor.
    shift : float or (float, float)
        Range of the additive brightness change.
    per_section : bool
        Draw an independent factor and shift for every section (EM sections are stained and
        imaged separately); the whole image otherwise. No effect on 2-D data.
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandContrast(p=1.0, seed=0)({"image": img, "instance": ids})
    """

    name = "contrast"
    intensity_only = True

    def __init__(
        self,
        p: float = 0.3,
        scale: float | tuple[float, float] = (0.8, 1.2),
        shift: float | tuple[float, float] = (-0.1, 0.1),
        per_section: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.scale = _as_range("contrast.scale", scale)
        self.shift = _as_range("contrast.shift", shift)
        if self.scale[0] < 0:
            raise AugmentationError(f"contrast: scale must be >= 0, got {scale}")
        self.per_section = bool(per_section)

    def _draw(self, rng, spatial_shape):
        n = spatial_shape[0] if self.per_section else 1
        return {
            "scale": rng.uniform(*self.scale, n).astype(np.float32)[None, :, None, None],
            "shift": rng.uniform(*self.shift, n).astype(np.float32)[None, :, None, None],
        }

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        axes = (2, 3) if self.per_section else (1, 2, 3)
        for key in self._image_keys(sample):
            img = sample[key]
            mean = img.mean(axis=axes, keepdims=True, dtype=np.float32)
            res = img - mean
            res *= params["scale"]
            res += mean + params["shift"]
            out[key] = np.clip(res, 0.0, 1.0, out=res)
        return out
