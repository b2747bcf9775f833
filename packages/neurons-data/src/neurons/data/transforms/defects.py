"""Imaging defects: stripes / line artefacts and low-contrast sections (image only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from neurons.data.transforms.base import (
    AugmentationError,
    RandomTransform,
    Sample,
    _as_range,
    draw_sections,
)

__all__ = ["RandLowContrast", "RandStripes"]


class RandStripes(RandomTransform):
    """Add straight bright/dark bands at random angles (curtaining, scratches, fold lines).

    Each stripe spans all sections with probability ``all_sections_prob`` (curtaining of a
    block face) and otherwise a single section (a scratch or fold of one section). Band edges
    are anti-aliased; the result is clipped to ``[0, 1]``.

    Parameters
    ----------
    p : float
        Probability of firing.
    num_stripes : int or (int, int)
        Range of the number of stripes.
    thickness : float or (float, float)
        Range of the band width in pixels.
    intensity : float or (float, float)
        Range of the additive intensity change (negative = dark).
    all_sections_prob : float
        Probability that a stripe runs through every section.
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandStripes(p=1.0, seed=0)({"image": img, "instance": ids})
    """

    name = "stripes"
    intensity_only = True

    def __init__(
        self,
        p: float = 0.15,
        num_stripes: int | tuple[int, int] = (1, 4),
        thickness: float | tuple[float, float] = (1.0, 4.0),
        intensity: float | tuple[float, float] = (-0.3, 0.3),
        all_sections_prob: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.num_stripes = _as_range("stripes.num_stripes", num_stripes, integer=True)
        self.thickness = _as_range("stripes.thickness", thickness)
        self.intensity = _as_range("stripes.intensity", intensity)
        if self.num_stripes[0] < 1 or self.thickness[0] <= 0:
            raise AugmentationError(
                f"stripes: num_stripes must be >= 1 and thickness > 0, got {num_stripes}, {thickness}"
            )
        self.all_sections_prob = float(all_sections_prob)

    def _draw(self, rng, spatial_shape):
        d, h, w = spatial_shape
        n = int(rng.integers(self.num_stripes[0], self.num_stripes[1] + 1))
        return {
            "angle": rng.uniform(0.0, np.pi, n),
            "centre": rng.uniform((0.0, 0.0), (h, w), (n, 2)),
            "thickness": rng.uniform(*self.thickness, n),
            "intensity": rng.uniform(*self.intensity, n),
            # -1 = all sections, else the one section hit
            "section": np.where(rng.random(n) < self.all_sections_prob, -1, rng.integers(0, d, n)),
        }

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        keys = self._image_keys(sample)
        if not keys:
            return out
        d, h, w = sample[keys[0]].shape[1:]
        yy = np.arange(h, dtype=np.float32)[None, :, None]
        xx = np.arange(w, dtype=np.float32)[None, None, :]
        ang = params["angle"].astype(np.float32)[:, None, None]
        cy = params["centre"][:, 0].astype(np.float32)[:, None, None]
        cx = params["centre"][:, 1].astype(np.float32)[:, None, None]
        dist = np.abs((yy - cy) * np.cos(ang) - (xx - cx) * np.sin(ang))  # (n, H, W)
        half = (params["thickness"].astype(np.float32) / 2)[:, None, None]
        weight = (
            np.clip(half + 0.5 - dist, 0.0, 1.0)
            * params["intensity"].astype(np.float32)[:, None, None]
        )
        sections = params["section"]
        delta = np.zeros((d, h, w), dtype=np.float32)
        delta += weight[sections < 0].sum(axis=0)
        np.add.at(delta, sections[sections >= 0], weight[sections >= 0])
        for key in keys:
            out[key] = np.clip(sample[key] + delta, 0.0, 1.0)
        return out


class RandLowContrast(RandomTransform):
    """Compress the contrast of 1..``max_sections`` sections around their mean (all of a 2-D image).

    Parameters
    ----------
    p : float
        Probability of firing.
    max_sections : int
        Largest number of affected sections.
    scale : float or (float, float)
        Range of the contrast factor (``0.1`` = 10 % of the original contrast).
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandLowContrast(p=1.0, seed=0)({"image": img, "instance": ids})
    """

    name = "low_contrast"
    intensity_only = True

    def __init__(
        self,
        p: float = 0.15,
        max_sections: int = 2,
        scale: float | tuple[float, float] = (0.05, 0.3),
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.scale = _as_range("low_contrast.scale", scale)
        if int(max_sections) < 1 or self.scale[0] < 0:
            raise AugmentationError(
                f"low_contrast: max_sections must be >= 1 and scale >= 0, got {max_sections}, {scale}"
            )
        self.max_sections = int(max_sections)

    def _draw(self, rng, spatial_shape):
        zs = draw_sections(rng, spatial_shape[0], self.max_sections)
        return {"sections": zs, "scale": rng.uniform(*self.scale, zs.size).astype(np.float32)}

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        zs, scale = params["sections"], params["scale"][None, :, None, None]
        for key in self._image_keys(sample):
            img = sample[key]
            sub = img[:, zs]
            mean = sub.mean(axis=(2, 3), keepdims=True)
            res = img.copy()
            res[:, zs] = mean + (sub - mean) * scale
            out[key] = res
        return out
