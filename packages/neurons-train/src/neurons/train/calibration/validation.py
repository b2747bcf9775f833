"""The validation split of a training config, predicted once for calibration.

Only the held-out regions the datamodule builds for validation are read (never the test
volumes). Each region is cropped to a voxel budget around its centre, predicted with the
inference sliding window of the checkpoint, and kept as one :class:`ValidationSample`; 2-D
models give one sample per section (decoded and scored section by section, like the
ISBI 2012 evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import CalibrationError

__all__ = ["ValidationSample", "predict_validation", "validation_regions"]


@dataclass
class ValidationSample:
    """Model outputs and ground truth of one held-out region (or section).

    Attributes
    ----------
    name : str
        Where it comes from (``"synthetic/vol1 z=0:32"``).
    outputs : dict of str to numpy.ndarray
        Activated model outputs without batch axis, ``(K, *spatial)``.
    gt : numpy.ndarray
        Ground-truth instance ids ``(*spatial)``, 0 = background.
    """

    name: str
    outputs: dict[str, np.ndarray]
    gt: np.ndarray

    @property
    def voxels(self) -> int:
        return int(self.gt.size)


def validation_regions(datamodule: Any) -> list[Any]:
    """The held-out :class:`neurons.data.splits.Region` objects of a datamodule (set up for fit).

    Works for the single-dataset datamodules and for ``CombineDataModule`` (its children's).
    """
    children = getattr(datamodule, "children", None)
    if isinstance(children, Mapping):
        return [r for dm in children.values() for r in validation_regions(dm)]
    if getattr(datamodule, "val_set", None) is None and hasattr(datamodule, "setup"):
        datamodule.setup("fit")
    return list(getattr(datamodule, "val_regions", []) or [])


def _centre_crop(shape: Sequence[int], budget: int, min_z: int) -> tuple[slice, ...]:
    """Centred box of ``shape`` with at most ``budget`` voxels (y/x shrink first, then z)."""
    z, y, x = (int(s) for s in shape)
    if z * y * x <= budget:
        return (slice(0, z), slice(0, y), slice(0, x))
    zz = min(z, max(min_z, 1))
    side = int(np.sqrt(max(budget // zz, 1)))
    yy, xx = min(y, side), min(x, side)
    zz = min(z, max(zz, budget // max(yy * xx, 1)))
    return tuple(
        slice((s - c) // 2, (s - c) // 2 + c) for s, c in zip((z, y, x), (zz, yy, xx), strict=True)
    )


def predict_validation(
    model: Any,
    cfg: Mapping[str, Any],
    *,
    datamodule: Any = None,
    max_voxels: int = 2_000_000,
    device: str = "cpu",
) -> list[ValidationSample]:
    """Predict the validation split of ``cfg``'s data with ``model`` (sliding window).

    Parameters
    ----------
    model : torch.nn.Module
        The trained network (eval mode is set here).
    cfg : mapping
        The training config stored in the checkpoint (its ``data`` section names the split).
    datamodule : LightningDataModule, optional
        Reuse a datamodule already built from ``cfg`` (e.g. at the end of training).
    max_voxels : int
        Budget of validation voxels, shared evenly by the regions (each is centre-cropped).
    device : str
        Where the network runs.

    Returns
    -------
    list of ValidationSample

    Raises
    ------
    CalibrationError
        The config's data has no validation split.
    """
    import torch

    from neurons.train.inference import settings_from_config

    if datamodule is None:
        from neurons.train.builders import build_datamodule_from_cfg

        datamodule = build_datamodule_from_cfg(cfg, setup_stage="fit")
    regions = validation_regions(datamodule)
    if not regions:
        raise CalibrationError(
            f"data.name={cfg.get('data', {}).get('name')!r} has no validation split to calibrate on"
        )
    sdims = int(getattr(model, "spatial_dims", 0) or len(cfg["data"]["patch_size"]))
    sw = settings_from_config(cfg, spatial_dims=sdims).window
    # Region.read returns intensities already scaled to [0, 1] the way training sees them
    sw = replace(sw, intensity_range=(0.0, 1.0), device=device, batch_size=max(sw.batch_size, 1))
    per_region = max(int(max_voxels) // len(regions), 1)
    model = model.to(device).eval()
    samples: list[ValidationSample] = []
    with torch.inference_mode():
        for region in regions:
            box = _centre_crop(region.shape, per_region, min_z=1 if sdims == 2 else sw.window[0])
            data = region.read([b.start for b in box], [b.stop - b.start for b in box])
            image = np.asarray(data["image"], dtype=np.float32)
            gt = np.asarray(data["instance"])
            where = f"{getattr(region.volume, 'name', region)} z={region.z0 + box[0].start}"
            if sdims == 3:
                out = _predict(model, image, sw)
                samples.append(ValidationSample(f"{where}:{region.z0 + box[0].stop}", out, gt))
                continue
            for k in range(image.shape[0]):
                out = _predict(model, image[k], sw)
                samples.append(ValidationSample(f"{where}+{k}", out, gt[k]))
    return samples


def _predict(model: Any, image: np.ndarray, sw: Any) -> dict[str, np.ndarray]:
    from neurons.train.inference import predict_volume

    return predict_volume(model, image, sw)
