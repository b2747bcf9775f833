"""ISBI 2012 EM segmentation challenge: 30 ssTEM sections of 512x512, 4x4x50 nm."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ShapeMismatchError
from ..labels import BACKGROUND, NEURON, interior_to_unified
from ..volume import ArraySource, LabeledVolume, identity_labels
from .base import EMDataset, natural_key

__all__ = ["ISBI2012Dataset"]


def _read_png_stack(folder: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(folder.glob("*.png"), key=natural_key)
    planes = []
    for f in files:
        with Image.open(f) as im:
            planes.append(np.asarray(im.convert("L") if im.mode not in ("L", "I;16") else im))
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise ShapeMismatchError(f"{folder}: sections have different shapes {sorted(shapes)}")
    return np.stack(planes)


class ISBI2012Dataset(EMDataset):
    """ISBI 2012 reader; the whole stack is small and is held in memory.

    Layouts (first match wins)::

        train-volume.tif + train-labels.tif        (official multi-page TIFFs), test-volume.tif
        train/image/NN.png + train/label/NN.png    (per-section PNGs), test/image/NN.png
        image/NN.png + label/NN.png                (root = the train folder itself)

    Labels: 255 = cell interior, 0 = membrane. Instances are the connected components of the
    interior within each section (ids unique across the stack).
    """

    name = "isbi2012"
    download_script = "download_isbi2012.py"
    voxel_size = (50.0, 4.0, 4.0)

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray | None, list[Path]]:
        from neurons.io import read_volume

        tif_img = "train-volume.tif" if split == "train" else "test-volume.tif"
        tif_lab = "train-labels.tif" if split == "train" else "test-labels.tif"
        sub = "train" if split == "train" else "test"
        searched = [self.root / tif_img]
        if (self.root / tif_img).exists():
            img = np.asarray(read_volume(str(self.root / tif_img)))
            lab_path = self.root / tif_lab
            lab = np.asarray(read_volume(str(lab_path))) if lab_path.exists() else None
            return img, lab, searched
        bases = [self.root / sub, self.root] if split == "train" else [self.root / sub]
        for base in bases:
            searched.append(base / "image" / "*.png")
            if (base / "image").is_dir() and any((base / "image").glob("*.png")):
                img = _read_png_stack(base / "image")
                lab = _read_png_stack(base / "label") if (base / "label").is_dir() else None
                return img, lab, searched
        return np.empty(0), None, searched

    def _find(self, split: str) -> list[LabeledVolume]:
        img, lab, searched = self._load(split)
        if img.size == 0:
            raise self.missing(f"{split} stack", searched)
        if img.ndim == 2:
            img = img[None]
        labels = {}
        annotated: tuple[int, ...] = ()
        if lab is not None:
            lab = lab[None] if lab.ndim == 2 else lab
            if lab.shape != img.shape:
                raise ShapeMismatchError(
                    f"isbi2012 {split}: labels have shape {lab.shape}, images {img.shape}"
                )
            instance, semantic = interior_to_unified(lab, per_section=True)
            labels = {
                "instance": ArraySource(instance, description=f"{self.root} labels (components)"),
                "semantic": ArraySource(semantic, description=f"{self.root} labels (interior)"),
            }
            annotated = (BACKGROUND, NEURON)
        return [
            LabeledVolume(
                name=f"isbi2012/{split}",
                dataset=self.name,
                image=ArraySource(img, description=f"{self.root} {split} images"),
                labels=labels,
                converter=identity_labels,
                annotated=annotated,
                voxel_size=self.voxel_size,
            )
        ]
