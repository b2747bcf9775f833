"""Geometric augmentations: flips, 90-degree rotations, transposes and elastic deformation.

All of them move image and labels together. Flips, rotations and transposes are exact index
permutations. The elastic deformation computes one coordinate map per sample and resamples
images with (bi/tri)linear interpolation and labels by rounding the *same* coordinates to the
nearest voxel, so labels never get interpolated ids. For anisotropic data (the EM default:
sections are 5-10x thicker than pixels) rotations, transposes and elastic displacements stay
in-plane; the z axis is only ever flipped.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from neurons.data.transforms.base import (
    AugmentationError,
    RandomTransform,
    Sample,
    _as_range,
    reflect_coordinates,
    smooth_random_field,
)

__all__ = ["RandElastic", "RandFlip", "RandRot90", "RandTranspose"]


def _image_axes(axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(a + 1 for a in axes)


class RandFlip(RandomTransform):
    """Flip along each spatial axis independently with probability ``prob_per_axis``.

    Parameters
    ----------
    p : float
        Probability that the transform is considered at all.
    prob_per_axis : float
        Probability of flipping each axis (z, y, x; z is a no-op for 2-D data).
    **kwargs
        ``keys_image``, ``keys_label``, ``seed`` (see :class:`RandomTransform`).

    Examples
    --------
    >>> out = RandFlip(p=1.0, prob_per_axis=0.5, seed=0)({"image": img, "instance": ids})
    """

    name = "flip"

    def __init__(self, p: float = 1.0, prob_per_axis: float = 0.5, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        if not 0.0 <= prob_per_axis <= 1.0:
            raise AugmentationError(f"flip: prob_per_axis must be in [0, 1], got {prob_per_axis}")
        self.prob_per_axis = float(prob_per_axis)

    def _draw(self, rng, spatial_shape):
        draws = rng.random(3) < self.prob_per_axis
        axes = tuple(int(a) for a in np.flatnonzero(draws) if spatial_shape[a] > 1)
        return {"axes": axes} if axes else None

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        for key in self._image_keys(sample):
            out[key] = np.flip(sample[key], _image_axes(params["axes"]))
        for key in self._label_keys(sample):
            out[key] = np.flip(sample[key], params["axes"])
        return out


class RandRot90(RandomTransform):
    """Rotate by a random multiple of 90 degrees in-plane (any axis pair if ``anisotropic=False``).

    Rotations by 90/270 degrees are only drawn when the two axes have the same length, so the
    output shape always equals the input shape (otherwise a 180-degree rotation is used).

    Parameters
    ----------
    p : float
        Probability of rotating.
    anisotropic : bool
        Rotate only in the (y, x) plane (EM sections). ``False`` also rotates in (z, y), (z, x).
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandRot90(p=1.0, seed=0)({"image": img, "instance": ids})
    """

    name = "rot90"

    def __init__(self, p: float = 0.5, anisotropic: bool = True, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.anisotropic = bool(anisotropic)

    def _draw(self, rng, spatial_shape):
        planes = [(1, 2)] if self.anisotropic or spatial_shape[0] == 1 else [(1, 2), (0, 1), (0, 2)]
        plane = planes[int(rng.integers(len(planes)))]
        square = spatial_shape[plane[0]] == spatial_shape[plane[1]]
        k = int(rng.integers(1, 4)) if square else 2
        return {"k": k, "plane": plane}

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        k, plane = params["k"], params["plane"]
        for key in self._image_keys(sample):
            out[key] = np.rot90(sample[key], k, axes=_image_axes(plane))
        for key in self._label_keys(sample):
            out[key] = np.rot90(sample[key], k, axes=plane)
        return out


class RandTranspose(RandomTransform):
    """Permute spatial axes of equal length (only y <-> x when ``anisotropic``).

    Parameters
    ----------
    p : float
        Probability of transposing.
    anisotropic : bool
        Keep z in place (EM sections); ``False`` permutes any axes of equal length.
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandTranspose(p=1.0, seed=0)({"image": img, "instance": ids})
    """

    name = "transpose"

    def __init__(self, p: float = 0.5, anisotropic: bool = True, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.anisotropic = bool(anisotropic)

    def _draw(self, rng, spatial_shape):
        perms = [
            perm
            for perm in itertools.permutations(range(3))
            if perm != (0, 1, 2)
            and all(spatial_shape[a] == spatial_shape[b] for a, b in enumerate(perm))
            and (perm[0] == 0 or not (self.anisotropic or spatial_shape[0] == 1))
        ]
        if not perms:
            return None
        return {"perm": perms[int(rng.integers(len(perms)))]}

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        perm = params["perm"]
        for key in self._image_keys(sample):
            out[key] = sample[key].transpose(0, *_image_axes(perm))
        for key in self._label_keys(sample):
            out[key] = sample[key].transpose(perm)
        return out


class RandElastic(RandomTransform):
    """Smooth elastic deformation combined with a small in-plane rotation and scaling.

    The displacement field is a cubic B-spline over a coarse control grid (``spacing`` pixels
    in-plane, ``spacing_z`` sections along z) with standard deviation ``sigma`` pixels; the
    affine part rotates by up to ``max_rotation`` degrees and scales by ``scale``. Coordinates
    falling outside the patch are mirrored back, so no padding value (e.g. a fake background
    id) is ever introduced. Images are resampled with ``image_order`` 1 (linear, via
    :func:`torch.nn.functional.grid_sample`) or 0 (nearest); labels always by rounding the same
    coordinates, i.e. nearest neighbour with no interpolated ids.

    Parameters
    ----------
    p : float
        Probability of deforming.
    sigma : float or (float, float)
        Range of the displacement standard deviation, in pixels.
    spacing : float
        In-plane control-point spacing in pixels (larger = smoother).
    spacing_z : float
        Control-point spacing along z in sections (3-D only).
    max_rotation : float
        Largest in-plane rotation, in degrees.
    scale : float or (float, float)
        Range of the in-plane zoom factor.
    anisotropic : bool
        Displace only in-plane (EM); ``False`` also displaces along z (isotropic 3-D data).
    image_order : {0, 1}
        Interpolation order for image keys.
    **kwargs
        ``keys_image``, ``keys_label``, ``seed``.

    Examples
    --------
    >>> out = RandElastic(p=1.0, sigma=4, seed=0)({"image": img, "instance": ids})
    """

    name = "elastic"

    def __init__(
        self,
        p: float = 0.5,
        sigma: float | tuple[float, float] = (1.0, 4.0),
        spacing: float = 32.0,
        spacing_z: float = 8.0,
        max_rotation: float = 15.0,
        scale: float | tuple[float, float] = (0.9, 1.1),
        anisotropic: bool = True,
        image_order: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(p, **kwargs)
        self.sigma = _as_range("elastic.sigma", sigma)
        self.scale = _as_range("elastic.scale", scale)
        if self.sigma[0] < 0 or self.scale[0] <= 0:
            raise AugmentationError(
                f"elastic: sigma must be >= 0 and scale > 0, got {sigma}, {scale}"
            )
        if spacing <= 0 or spacing_z <= 0:
            raise AugmentationError(f"elastic: spacing must be > 0, got {spacing}, {spacing_z}")
        if image_order not in (0, 1):
            raise AugmentationError(f"elastic: image_order must be 0 or 1, got {image_order}")
        self.spacing = float(spacing)
        self.spacing_z = float(spacing_z)
        self.max_rotation = float(max_rotation)
        self.anisotropic = bool(anisotropic)
        self.image_order = int(image_order)

    def _draw(self, rng, spatial_shape):
        d, h, w = spatial_shape
        if h < 2 or w < 2:
            return None
        full3d = not self.anisotropic and d > 1
        theta = np.deg2rad(rng.uniform(-self.max_rotation, self.max_rotation))
        zoom = rng.uniform(*self.scale)
        sigma = rng.uniform(*self.sigma)
        field = smooth_random_field(
            rng, (d, h, w), (self.spacing_z, self.spacing, self.spacing), 3 if full3d else 2
        )
        field *= np.float32(sigma)
        # Pull-back coordinates: output voxel -> input position (rotation about the centre).
        yc = (np.arange(h, dtype=np.float32) - (h - 1) / 2)[:, None]
        xc = (np.arange(w, dtype=np.float32) - (w - 1) / 2)[None, :]
        c, s = np.float32(np.cos(theta) / zoom), np.float32(np.sin(theta) / zoom)
        cy = field[0]
        cy += c * yc - s * xc + np.float32((h - 1) / 2)
        cx = field[1]
        cx += s * yc + c * xc + np.float32((w - 1) / 2)
        reflect_coordinates(cy, h)
        reflect_coordinates(cx, w)
        cz = None
        if full3d:
            cz = field[2]
            cz += np.arange(d, dtype=np.float32)[:, None, None]
            reflect_coordinates(cz, d)
        return {"cz": cz, "cy": cy, "cx": cx}

    @staticmethod
    def _nearest_index(params: dict, shape: tuple[int, int, int]) -> np.ndarray:
        d, h, w = shape
        iy = np.rint(params["cy"]).astype(np.intp)
        ix = np.rint(params["cx"]).astype(np.intp)
        if params["cz"] is None:
            iz = (np.arange(d, dtype=np.intp) * h)[:, None, None]
        else:
            iz = np.rint(params["cz"]).astype(np.intp) * h
        iy += iz
        iy *= w
        iy += ix
        return iy

    @staticmethod
    def _linear(image: np.ndarray, params: dict) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        c, d, h, w = image.shape
        gy = params["cy"] * np.float32(2.0 / (h - 1)) - 1
        gx = params["cx"] * np.float32(2.0 / (w - 1)) - 1
        src = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        if params["cz"] is None:  # in-plane only: sections are a batch of 2-D images
            grid = torch.from_numpy(np.stack([gx, gy], axis=-1))
            out = F.grid_sample(
                src.permute(1, 0, 2, 3),
                grid,
                mode="bilinear",
                padding_mode="border",
                align_corners=True,
            )
            return out.permute(1, 0, 2, 3).numpy()
        gz = params["cz"] * np.float32(2.0 / (d - 1)) - 1
        grid = torch.from_numpy(np.stack([gx, gy, gz], axis=-1))[None]
        out = F.grid_sample(
            src[None], grid, mode="bilinear", padding_mode="border", align_corners=True
        )
        return out[0].numpy()

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        shape = params["cy"].shape
        flat = None
        if self._label_keys(sample) or self.image_order == 0:
            flat = self._nearest_index(params, shape)
        for key in self._image_keys(sample):
            img = sample[key]
            if self.image_order == 1:
                out[key] = self._linear(img, params)
            else:
                out[key] = img.reshape(img.shape[0], -1)[:, flat]
        for key in self._label_keys(sample):
            out[key] = sample[key].reshape(-1)[flat]
        return out
