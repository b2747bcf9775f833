"""SNEMI3D (Kasthuri et al. 2015): AC4 training stack, AC3 test stack, 6x6x30 nm."""

from __future__ import annotations

from pathlib import Path

from ..labels import BACKGROUND, NEURON, foreground_to_unified
from ..volume import ArraySource, LabeledVolume
from .base import EMDataset, pick_key

__all__ = ["SNEMI3DDataset"]

_H5 = (".h5", ".hdf5", ".hdf")
_TIF = (".tif", ".tiff")

# (volume name, image stems, label stems) in search order: the official challenge release
# (train-input.tif / train-labels.tif / test-input.tif from brainiac2.mit.edu) first, then the
# AC4/AC3 naming of the community HDF5/TIFF repackaging (HDF5 dataset "main").
_LAYOUT = {
    "train": ("AC4", ("train-input", "AC4_inputs"), ("train-labels", "AC4_labels")),
    "test": ("AC3", ("test-input", "AC3_inputs"), ("test-labels", "AC3_labels")),
}


class SNEMI3DDataset(EMDataset):
    """SNEMI3D reader.

    Files (first match wins, for ``train`` / ``test``)::

        train-input.tif|tiff   train-labels.tif|tiff        (official release)
        AC4_inputs.h5|hdf5|tif  AC4_labels.h5|hdf5|tif      (HDF5 key "main" or the only dataset)
        test-input.tif          test-labels.tif (optional)
        AC3_inputs.*            AC3_labels.* (optional)

    Both stacks are ``(100, 1024, 1024)`` uint8 images; labels are neuron ids (0 = membrane).

    Examples
    --------
    >>> vols = SNEMI3DDataset("data/snemi3d").volumes("train")  # doctest: +SKIP
    """

    name = "snemi3d"
    download_script = "download_snemi3d.py"
    voxel_size = (30.0, 6.0, 6.0)

    def _candidates(self, stems: tuple[str, ...]) -> list[str]:
        return [s + ext for s in stems for ext in _TIF + _H5]

    def _source(self, path: Path) -> ArraySource:
        if path.suffix.lower() in _H5:
            return ArraySource.from_file(path, pick_key(path, ("main", "volumes/raw", "raw",
                                                               "volumes/labels/neuron_ids",
                                                               "labels", "label", "data")))
        return ArraySource.from_file(path)

    def _find(self, split: str) -> list[LabeledVolume]:
        vol_name, img_stems, lab_stems = _LAYOUT[split]
        img_names = self._candidates(img_stems)
        lab_names = self._candidates(lab_stems)
        img = self.first_existing(img_names)
        if img is None:
            raise self.missing(f"{split} image stack ({vol_name})", [self.root / n for n in img_names])
        lab = self.first_existing(lab_names)
        if lab is None and split == "train":
            raise self.missing(f"training labels ({vol_name})", [self.root / n for n in lab_names])
        labels = {"segmentation": self._source(lab)} if lab is not None else {}
        return [
            LabeledVolume(
                name=f"snemi3d/{vol_name}",
                dataset=self.name,
                image=self._source(img),
                labels=labels,
                converter=foreground_to_unified,
                annotated=(BACKGROUND, NEURON),
                voxel_size=self.voxel_size,
            )
        ]
