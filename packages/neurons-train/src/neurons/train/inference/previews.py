"""PNG previews of a segmentation for people: raw, prediction and ground-truth overlays.

One section (the middle z plane of a 3-D volume unless told otherwise) is read from each
volume — lazily, so previews of huge volumes cost one plane — and written next to the output as
``<stem>.preview-raw.png``, ``-pred.png`` (instance colours over raw, boundaries dark),
``-semantic.png``, ``-gt.png`` and ``-panel.png`` (all side by side).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from skimage.segmentation import find_boundaries

from neurons.io import split_key
from neurons.train.visualize import grey, id_colours, semantic_colours

from .errors import InferenceError

__all__ = ["overlay", "preview_paths", "write_previews"]


def overlay(
    raw: np.ndarray, colours: np.ndarray, labels: np.ndarray, alpha: float = 0.45
) -> np.ndarray:
    """Blend ``colours`` over greyscale ``raw`` where ``labels > 0``; object borders darkened.

    Examples
    --------
    >>> overlay(np.zeros((2, 2)), np.full((2, 2, 3), 200, np.uint8), np.ones((2, 2))).shape
    (2, 2, 3)
    """
    base = grey(raw).astype(np.float32)
    fg = (np.asarray(labels) > 0)[..., None]
    out = np.where(fg, (1 - alpha) * base + alpha * colours.astype(np.float32), base)
    edges = find_boundaries(np.asarray(labels), mode="inner") & (np.asarray(labels) > 0)
    out[edges] *= 0.35
    return np.clip(out, 0, 255).astype(np.uint8)


def _plane(volume: Any, axis_index: int | None) -> np.ndarray:
    if volume.ndim == 2:
        return np.asarray(volume[:, :])
    if volume.ndim != 3:
        raise InferenceError(f"previews need a 2-D or 3-D volume, got shape {tuple(volume.shape)}")
    z = volume.shape[0] // 2 if axis_index is None else int(axis_index)
    if not 0 <= z < volume.shape[0]:
        raise InferenceError(f"preview plane {z} outside volume of depth {volume.shape[0]}")
    return np.asarray(volume[z])


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.png"
    Image.fromarray(rgb).save(tmp)
    os.replace(tmp, path)


def preview_paths(output: str | os.PathLike) -> dict[str, Path]:
    """Where :func:`write_previews` puts its PNGs for an output path (``file.h5:key`` allowed),
    plus the ``scores`` JSON path used when ground truth is given.

    Examples
    --------
    >>> preview_paths("/tmp/seg.h5")["pred"].name
    'seg.preview-pred.png'
    """
    path, _ = split_key(output)
    stem = path.name
    for suffix in (
        ".h5",
        ".hdf5",
        ".hdf",
        ".zarr",
        ".tif",
        ".tiff",
        ".npy",
        ".nrrd",
        ".nii.gz",
        ".nii",
    ):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    out = {
        k: path.parent / f"{stem}.preview-{k}.png"
        for k in ("raw", "pred", "semantic", "gt", "panel")
    }
    out["scores"] = path.parent / f"{stem}.scores.json"
    return out


def write_previews(
    output: str | os.PathLike,
    raw: Any,
    instance: Any,
    semantic: Any | None = None,
    gt: Any | None = None,
    *,
    plane: int | None = None,
) -> dict[str, Path]:
    """Write PNG previews of one plane next to ``output``.

    Parameters
    ----------
    output : path
        The segmentation file the previews belong to.
    raw, instance, semantic, gt : array-like or neurons.io Volume
        Same spatial shape; only one plane of each is read. ``semantic``/``gt`` are optional.
    plane : int, optional
        z index for 3-D volumes (default: the middle).

    Returns
    -------
    dict of str to Path
        The written files by kind (``raw``, ``pred``, ``semantic``, ``gt``, ``panel``).

    Examples
    --------
    >>> write_previews("/tmp/x.h5", np.zeros((4, 8)), np.ones((4, 8), np.uint64))["pred"].exists()
    True
    """
    paths = preview_paths(output)
    paths["raw"].parent.mkdir(parents=True, exist_ok=True)
    if tuple(raw.shape) != tuple(instance.shape):
        raise InferenceError(
            f"raw shape {tuple(raw.shape)} and prediction shape {tuple(instance.shape)} differ"
        )
    r = _plane(raw, plane)
    ins = _plane(instance, plane)
    images = {"raw": grey(r), "pred": overlay(r, id_colours(ins), ins)}
    if semantic is not None:
        sem = _plane(semantic, plane)
        images["semantic"] = overlay(r, semantic_colours(sem), sem)
    if gt is not None:
        if tuple(gt.shape) != tuple(raw.shape):
            raise InferenceError(
                f"ground-truth shape {tuple(gt.shape)} differs from raw shape {tuple(raw.shape)}"
            )
        g = _plane(gt, plane)
        images["gt"] = overlay(r, id_colours(g), g)
    sep = np.full((r.shape[0], 4, 3), 255, np.uint8)
    order = [k for k in ("raw", "pred", "semantic", "gt") if k in images]
    images["panel"] = np.concatenate([x for k in order for x in (images[k], sep)][:-1], axis=1)
    written = {}
    for k, img in images.items():
        _save_png(paths[k], img)
        written[k] = paths[k]
    return written
