"""Section-level EM artefacts: missing sections and misalignment (3-D data only).

* :class:`RandMissingSection` replaces whole sections of the *image* (interpolated from the
  nearest non-missing sections, zero-filled or copied from the nearest non-missing one). The depth never changes and
  labels keep the true structure, which the network has to infer through the gap.
* :class:`RandMisalignment` shifts one section (``slip``) or every section from a random index
  on (``translation``) by an integer in-plane offset. The shift is applied to image **and**
  labels, so they stay aligned; content shifted in from outside the patch is mirrored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from neurons.data.transforms.base import AugmentationError, RandomTransform, Sample, draw_sections

__all__ = ["RandMisalignment", "RandMissingSection"]

_FILL_MODES = ("interpolate", "zero", "copy")


class RandMissingSection(RandomTransform):
    """Blank out 1..``max_sections`` interior sections of the image (labels untouched).

    Parameters
    ----------
    p : float
        Probability of firing.
    max_sections : int
        Largest number of sections replaced at once.
    modes : sequence of {"interpolate", "zero", "copy"}
        Fill modes drawn uniformly: linear interpolation between the nearest sections that
        are *not* missing below and above (the mean of the two neighbours for an isolated
        section), ``fill_value``, or a copy of the nearest non-missing section (the previous
        one on a tie). Adjacent missing sections never read each other's original pixels;
        with no valid section at all the fill is zero.
    fill_value : float
        Intensity used by ``"zero"``.
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandMissingSection(p=1.0, seed=0)({"image": img3d, "instance": ids3d})
    """

    name = "missing_section"
    intensity_only = True
    needs_depth = 3

    def __init__(
        self,
        p: float = 0.2,
        max_sections: int = 2,
        modes: Sequence[str] = _FILL_MODES,
        fill_value: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        modes = (modes,) if isinstance(modes, str) else tuple(modes)
        bad = [m for m in modes if m not in _FILL_MODES]
        if bad or not modes or int(max_sections) < 1:
            raise AugmentationError(
                f"missing_section: modes must be a non-empty subset of {_FILL_MODES} and "
                f"max_sections >= 1, got modes={modes}, max_sections={max_sections}"
            )
        self.max_sections = int(max_sections)
        self.modes = modes
        self.fill_value = float(fill_value)

    def _draw(self, rng, spatial_shape):
        zs = draw_sections(rng, spatial_shape[0], self.max_sections, interior=True)
        return {"sections": zs, "mode": self.modes[int(rng.integers(len(self.modes)))]}

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        zs, mode = np.asarray(params["sections"], dtype=np.intp), params["mode"]
        for key in self._image_keys(sample):
            img = sample[key]
            res = img.copy()
            if mode == "zero":
                res[:, zs] = self.fill_value
            else:
                res[:, zs] = _fill_from_valid(img, zs, mode)
            out[key] = res
        return out


def _valid_neighbours(depth: int, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest non-missing section below / above every section (``-1`` / ``depth`` if none).

    Parameters
    ----------
    depth : int
        Number of sections.
    missing : numpy.ndarray
        Indices of the missing sections.

    Returns
    -------
    lower, upper : numpy.ndarray
        ``(depth,)`` intp arrays; for a valid section both equal its own index.
    """
    idx = np.arange(depth)
    valid = np.ones(depth, dtype=bool)
    valid[missing] = False
    lower = np.maximum.accumulate(np.where(valid, idx, -1))
    upper = np.minimum.accumulate(np.where(valid, idx, depth)[::-1])[::-1]
    return lower, upper


def _fill_from_valid(img: np.ndarray, zs: np.ndarray, mode: str) -> np.ndarray:
    """Content of the missing sections ``zs`` of ``img`` ``(C, D, H, W)``, from valid ones only.

    ``"interpolate"`` is linear in z between the nearest valid sections below and above
    (the only valid one when one side has none); ``"copy"`` repeats the nearest valid section
    (the lower one on a tie). With no valid section at all the result is zero. A missing
    section never contributes its own (original) pixels, even when its neighbour is missing too.

    Parameters
    ----------
    img : numpy.ndarray
        Image ``(C, D, H, W)``.
    zs : numpy.ndarray
        Indices of the missing sections.
    mode : {"interpolate", "copy"}
        Fill rule.

    Returns
    -------
    numpy.ndarray
        ``(C, len(zs), H, W)`` in the dtype of ``img``.
    """
    depth = img.shape[1]
    lower, upper = _valid_neighbours(depth, zs)
    lo, hi = lower[zs], upper[zs]
    has_lo, has_hi = lo >= 0, hi < depth
    both = has_lo & has_hi
    lo_c, hi_c = np.clip(lo, 0, depth - 1), np.clip(hi, 0, depth - 1)
    if mode == "interpolate":
        w_hi = np.where(both, (zs - lo) / np.where(both, hi - lo, 1), has_hi)
    else:  # copy: nearest valid section, the lower one on a tie
        w_hi = np.where(both, (hi - zs) < (zs - lo), has_hi)
    w_hi = w_hi.astype(img.dtype)[None, :, None, None]
    res = (1 - w_hi) * img[:, lo_c] + w_hi * img[:, hi_c]
    res[:, ~(has_lo | has_hi)] = 0
    return res.astype(img.dtype, copy=False)


def _reflect_index(n: int, shift: int) -> np.ndarray:
    """Source index of each output position for an integer shift, mirrored at the borders."""
    idx = np.arange(n) - shift
    if n == 1:
        return np.zeros(n, dtype=np.intp)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx > n - 1, period - idx, idx).astype(np.intp)


class RandMisalignment(RandomTransform):
    """Shift sections in-plane by an integer offset, image and labels together.

    Parameters
    ----------
    p : float
        Probability of firing.
    max_displacement : int
        Largest shift in pixels (the offset length is uniform in ``[1, max_displacement]``).
    slip_prob : float
        Probability of a ``slip`` (one section moves) rather than a ``translation`` (every
        section from a random index on moves: a misaligned stack).
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandMisalignment(p=1.0, seed=0)({"image": img3d, "instance": ids3d})
    """

    name = "misalignment"
    needs_depth = 2

    def __init__(
        self, p: float = 0.2, max_displacement: int = 8, slip_prob: float = 0.5, **kwargs: Any
    ) -> None:
        super().__init__(p, **kwargs)
        if int(max_displacement) < 1 or not 0.0 <= slip_prob <= 1.0:
            raise AugmentationError(
                "misalignment: max_displacement must be >= 1 and slip_prob in [0, 1], got "
                f"{max_displacement}, {slip_prob}"
            )
        self.max_displacement = int(max_displacement)
        self.slip_prob = float(slip_prob)

    def _draw(self, rng, spatial_shape):
        d = spatial_shape[0]
        slip = rng.random() < self.slip_prob
        radius = rng.uniform(1.0, self.max_displacement)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        dy, dx = int(round(radius * np.sin(angle))), int(round(radius * np.cos(angle)))
        if dy == 0 and dx == 0:
            dx = 1
        z0 = int(rng.integers(0, d)) if slip else int(rng.integers(1, d))
        z1 = z0 + 1 if slip else d
        return {"mode": "slip" if slip else "translation", "z": (z0, z1), "shift": (dy, dx)}

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        z0, z1 = params["z"]
        dy, dx = params["shift"]
        for key in self._image_keys(sample) + self._label_keys(sample):
            arr = sample[key]
            h, w = arr.shape[-2:]
            block = np.take(arr[..., z0:z1, :, :], _reflect_index(h, dy), axis=-2)
            res = arr.copy()
            res[..., z0:z1, :, :] = np.take(block, _reflect_index(w, dx), axis=-1)
            out[key] = res
        return out
