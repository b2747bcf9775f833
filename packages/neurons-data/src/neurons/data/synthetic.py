"""Synthetic EM-like volumes with exact labels: the embedded default for demos and tests.

The generator mimics anisotropic serial-section EM of neuropil (default voxel size
40 x 8 x 8 nm):

* **Neurites** are cells of a 2-D Voronoi tessellation whose centres drift smoothly from section
  to section, so every object is a tube elongated along z; the tessellation is domain-warped
  with a smooth random field so boundaries are curved rather than polygonal.
* **Membranes** are dark bands (``membrane_width`` pixels) between neighbouring cells; they are
  background (instance 0, semantic 0).
* **Mitochondria** are dark ellipsoids (elongated along their host neurite, i.e. along z) inside
  a fraction of the neurites, with a darker rim. They get their own instance ids (above every
  neurite id) and semantic classes 3 (interior) and 4 (boundary rim), carved out of the host.
* **Image formation**: per-cell grey level, fine cytoplasm texture and vesicle-like dots, in-plane
  Gaussian blur, per-section brightness jitter, Gaussian noise, quantised to uint8.

Everything is vectorised (per-section 2-D distance transforms and gathers); a 32 x 256 x 256
volume takes a fraction of a second. The output depends only on the arguments (``seed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from neurons.data.errors import DataError
from neurons.data.transforms.base import smooth_random_field

__all__ = ["SyntheticVolumeError", "make_synthetic_volume"]

NEURON, MITOCHONDRION, MITOCHONDRION_BOUNDARY = 1, 3, 4


class SyntheticVolumeError(DataError, ValueError):
    """Invalid arguments for :func:`make_synthetic_volume`."""


def _nearest_marker(markers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per section: value of the nearest non-zero marker and the in-plane distance to it."""
    values = np.zeros(markers.shape, dtype=markers.dtype)
    dist = np.zeros(markers.shape, dtype=np.float32)
    for z in range(markers.shape[0]):  # one 2-D EDT per section (not per voxel)
        if not markers[z].any():
            dist[z] = np.inf
            continue
        d, (iy, ix) = ndimage.distance_transform_edt(markers[z] == 0, return_indices=True)
        values[z] = markers[z][iy, ix]
        dist[z] = d
    return values, dist


def _rasterise(
    shape: tuple[int, int, int], z: np.ndarray, y: np.ndarray, x: np.ndarray, value: np.ndarray
) -> np.ndarray:
    """Marker volume with ``value`` at the rounded in-bounds positions (later writes win)."""
    markers = np.zeros(shape, dtype=np.int32)
    iy, ix = np.rint(y).astype(np.intp), np.rint(x).astype(np.intp)
    ok = (iy >= 0) & (iy < shape[1]) & (ix >= 0) & (ix < shape[2])
    markers[z[ok], iy[ok], ix[ok]] = value[ok]
    return markers


def _boundary(labels: np.ndarray) -> np.ndarray:
    """In-plane 4-neighbourhood label changes, marked on both sides (2 px wide)."""
    b = np.zeros(labels.shape, dtype=bool)
    dy = labels[:, 1:, :] != labels[:, :-1, :]
    dx = labels[:, :, 1:] != labels[:, :, :-1]
    b[:, 1:, :] |= dy
    b[:, :-1, :] |= dy
    b[:, :, 1:] |= dx
    b[:, :, :-1] |= dx
    return b


def make_synthetic_volume(
    shape: Sequence[int] = (32, 256, 256),
    *,
    seed: int = 0,
    voxel_size: Sequence[float] = (40.0, 8.0, 8.0),
    cell_diameter: float = 32.0,
    drift: float = 0.6,
    warp: float = 6.0,
    membrane_width: int = 2,
    mito_fraction: float = 1.0,
    mito_radius: tuple[float, float] = (4.0, 8.0),
    mito_length: tuple[float, float] = (4.0, 16.0),
    noise_std: float = 0.06,
    blur_sigma: float = 0.8,
) -> dict[str, Any]:
    """Generate an EM-like volume with neurites, membranes and mitochondria, and its labels.

    Parameters
    ----------
    shape : sequence of int
        ``(Z, Y, X)``; a 2-tuple ``(Y, X)`` gives a single 2-D section.
    seed : int
        Seed; the output is a pure function of the arguments.
    voxel_size : sequence of float
        ``(z, y, x)`` in nm, returned as metadata (anisotropic EM by default).
    cell_diameter : float
        Mean in-plane neurite diameter in pixels.
    drift : float
        Typical in-plane movement of a neurite centre per section, in pixels (larger = more
        oblique neurites).
    warp : float
        Amplitude of the smooth domain warp in pixels (curvature of the membranes).
    membrane_width : int
        Membrane thickness in pixels (>= 1).
    mito_fraction : float
        Expected number of mitochondria per neurite.
    mito_radius : (float, float)
        Range of the mitochondrion in-plane radius, pixels.
    mito_length : (float, float)
        Range of the mitochondrion length along z, sections.
    noise_std : float
        Standard deviation of the additive noise (intensities in [0, 1]).
    blur_sigma : float
        In-plane Gaussian blur of the image formation, pixels.

    Returns
    -------
    dict
        ``raw`` uint8 ``(Z, Y, X)``; ``instance`` uint32 ids (0 = membrane/background, neurites
        ``1..N``, mitochondria ``> N``); ``semantic`` uint8 unified classes (0 background,
        1 neuron, 3 mitochondrion, 4 mitochondrion boundary); ``voxel_size`` ``(z, y, x)`` nm
        tuple. 2-D shapes give 2-D arrays.

    Examples
    --------
    >>> vol = make_synthetic_volume((32, 256, 256), seed=0)
    >>> vol["raw"].shape, vol["instance"].dtype
    ((32, 256, 256), dtype('uint32'))
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1 or min(shape[-2:]) < 8:
        raise SyntheticVolumeError(
            f"shape must be (Z, Y, X) or (Y, X) with Z >= 1 and Y, X >= 8, got {shape}"
        )
    if len(tuple(voxel_size)) != 3:
        raise SyntheticVolumeError(f"voxel_size must be (z, y, x) in nm, got {tuple(voxel_size)}")
    if (
        cell_diameter < 4
        or membrane_width < 1
        or mito_fraction < 0
        or noise_std < 0
        or blur_sigma < 0
    ):
        raise SyntheticVolumeError(
            "expected cell_diameter >= 4, membrane_width >= 1, mito_fraction >= 0, noise_std >= 0, "
            f"blur_sigma >= 0; got {cell_diameter}, {membrane_width}, {mito_fraction}, {noise_std}, "
            f"{blur_sigma}"
        )
    two_d = len(shape) == 2
    nz, ny, nx = (1, *shape) if two_d else shape
    rng = np.random.default_rng(seed)
    f32 = np.float32

    # --- neurite centre trajectories (N cells, drifting smoothly along z) -----------------
    margin = int(np.ceil(cell_diameter + 3 * warp + 2))
    py, px = ny + 2 * margin, nx + 2 * margin
    n_cells = max(2, int(round(py * px / (np.pi * cell_diameter**2 / 4))))
    zs = np.arange(nz, dtype=np.float64)
    start = rng.uniform((0, 0), (py, px), (n_cells, 2))
    velocity = rng.normal(0.0, drift, (n_cells, 2))
    amp = rng.uniform(0.0, 2.0 * drift * 4, (n_cells, 2))
    period = rng.uniform(12.0, 40.0, (n_cells, 1))
    phase = rng.uniform(0.0, 2 * np.pi, (n_cells, 2))
    t = zs[None, :, None] - (nz - 1) / 2  # (1, Z, 1)
    centres = (
        start[:, None, :]
        + velocity[:, None, :] * t
        + amp[:, None, :] * np.sin(2 * np.pi * t / period[:, :, None] + phase[:, None, :])
    )  # (N, Z, 2) in padded coordinates
    ids = np.broadcast_to(np.arange(1, n_cells + 1)[:, None], (n_cells, nz))
    zz = np.broadcast_to(np.arange(nz)[None, :], (n_cells, nz))
    cells, _ = _nearest_marker(
        _rasterise(
            (nz, py, px), zz.ravel(), centres[..., 0].ravel(), centres[..., 1].ravel(), ids.ravel()
        )
    )

    # --- mitochondria: ellipsoids following their host's centre ---------------------------
    n_mito = int(rng.poisson(mito_fraction * n_cells))
    host = rng.integers(1, n_cells + 1, n_mito)
    z0 = rng.uniform(-0.3 * nz, 1.3 * nz, n_mito) if nz > 1 else np.zeros(n_mito)
    half_len = rng.uniform(*mito_length, n_mito) / 2 if nz > 1 else np.full(n_mito, np.inf)
    radius = rng.uniform(*mito_radius, n_mito)
    offset = rng.normal(0.0, 0.08 * cell_diameter, (n_mito, 2))
    rel = (zs[None, :] - z0[:, None]) / half_len[:, None]  # (M, Z)
    r_z = radius[:, None] * np.sqrt(np.clip(1.0 - rel**2, 0.0, None))  # in-plane radius per section
    present = r_z > 0.75
    mz = np.broadcast_to(np.arange(nz)[None, :], (n_mito, nz))[present]
    mpos = (centres[host - 1] + offset[:, None, :])[present]  # (K, 2)
    mito_idx = np.broadcast_to(np.arange(1, n_mito + 1)[:, None], (n_mito, nz))[present]
    mito_near, mito_dist = _nearest_marker(
        _rasterise((nz, py, px), mz, mpos[:, 0], mpos[:, 1], mito_idx.astype(np.int32))
    )
    r_table = np.zeros((n_mito + 1, nz), dtype=f32)  # radius by (mitochondrion index, section)
    r_table[1:] = r_z
    inside = mito_dist < r_table[mito_near, np.arange(nz)[:, None, None]]
    mito = np.where(inside, mito_near, 0).astype(np.int32)

    # --- domain warp: gather both maps at smoothly displaced positions --------------------
    disp = smooth_random_field(rng, (nz, ny, nx), (6.0, 20.0, 20.0), 2)
    disp *= f32(warp)
    gy = np.rint(disp[0] + (np.arange(ny, dtype=f32)[:, None] + margin)).astype(np.intp)
    gx = np.rint(disp[1] + (np.arange(nx, dtype=f32)[None, :] + margin)).astype(np.intp)
    flat = (np.arange(nz, dtype=np.intp)[:, None, None] * py + gy) * px + gx
    neurite = cells.reshape(-1)[flat]
    mito = mito.reshape(-1)[flat]

    # --- membranes and labels --------------------------------------------------------------
    membrane = _boundary(neurite)
    if membrane_width == 1:
        membrane &= np.pad(
            (neurite[:, 1:, :] != neurite[:, :-1, :]), ((0, 0), (1, 0), (0, 0))
        ) | np.pad((neurite[:, :, 1:] != neurite[:, :, :-1]), ((0, 0), (0, 0), (1, 0)))
    elif membrane_width > 2:
        membrane = ndimage.binary_dilation(
            membrane, structure=np.ones((1, 3, 3), bool), iterations=(membrane_width - 1) // 2
        )
    # a mitochondrion stays inside its host, clear of the membrane
    mito_host = np.concatenate([[0], host]).astype(np.int32)
    mito[
        (mito_host[mito] != neurite) | ndimage.binary_dilation(membrane, np.ones((1, 3, 3), bool))
    ] = 0
    mito_mask = mito > 0
    mito_rim = mito_mask & ~ndimage.binary_erosion(mito_mask, np.ones((1, 3, 3), bool))

    instance = np.where(membrane, 0, neurite).astype(np.uint32)
    instance = np.where(mito > 0, mito.astype(np.uint32) + np.uint32(n_cells), instance)
    # renumber compactly: neurites 1..N', mitochondria N'+1..; ids are generator-owned (small)
    present_ids = np.flatnonzero(np.bincount(instance.ravel(), minlength=n_cells + n_mito + 1))
    lut = np.zeros(n_cells + n_mito + 1, dtype=np.uint32)
    lut[present_ids] = np.arange(present_ids.size, dtype=np.uint32) + (present_ids[0] != 0)
    instance = lut[instance]

    semantic = np.zeros(instance.shape, dtype=np.uint8)
    semantic[instance > 0] = NEURON
    semantic[mito > 0] = MITOCHONDRION
    semantic[mito_rim] = MITOCHONDRION_BOUNDARY

    # --- image formation -------------------------------------------------------------------
    cell_grey = rng.normal(0.66, 0.05, n_cells + 1).astype(f32)
    raw = cell_grey[neurite]
    texture = smooth_random_field(rng, (nz, ny, nx), (1.0, 3.0, 3.0), 1)[0]
    raw += f32(0.04) * texture
    vesicles = (rng.random((nz, ny, nx), dtype=f32) < 0.004).astype(f32)
    raw -= f32(0.9) * ndimage.gaussian_filter(vesicles, (0, 1.2, 1.2))
    raw[mito_mask] = f32(0.40) + f32(0.05) * texture[mito_mask]
    raw[mito_rim] = f32(0.20)
    raw[membrane] = f32(0.16) + f32(0.05) * texture[membrane]
    if blur_sigma > 0:
        raw = ndimage.gaussian_filter(raw, (0, blur_sigma, blur_sigma))
    raw += rng.normal(0.0, 0.02, (nz, 1, 1)).astype(f32)  # section brightness jitter
    if noise_std > 0:
        raw += f32(noise_std) * rng.standard_normal(raw.shape, dtype=f32)
    raw = np.clip(np.rint(raw * 255), 0, 255).astype(np.uint8)

    out = {"raw": raw, "instance": instance, "semantic": semantic}
    if two_d:
        out = {k: v[0] for k, v in out.items()}
    out["voxel_size"] = tuple(float(v) for v in voxel_size)
    return out
