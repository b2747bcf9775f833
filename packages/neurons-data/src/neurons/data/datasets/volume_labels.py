"""Label rules of user volumes: instance ids, binary masks or semantic maps -> unified labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..labels import BACKGROUND, IGNORE_INDEX, MITOCHONDRION, MITOCHONDRION_BOUNDARY, NEURON

__all__ = ["LabelRule"]


def _components(fg: np.ndarray, connectivity: str) -> np.ndarray:
    structure = ndimage.generate_binary_structure(3, 1)
    if connectivity == "2d":
        structure[0] = False
        structure[2] = False
    ids, _ = ndimage.label(fg, structure=structure)
    return ids.astype(np.int64, copy=False)


@dataclass(frozen=True)
class LabelRule:
    """Picklable converter ``(label[, valid]) -> (instance ids, unified semantic uint8)``.

    ``instances``: label > 0 is ``label_class`` and the label is the instance id.
    ``mask``: label != 0 is ``label_class``; instances are its connected components.
    ``semantic``: label values are mapped by ``class_map`` (unlisted values -> background);
    instances are the connected components of each class (mitochondrion boundary voxels join the
    nearest mitochondrion). ``ignore_label`` voxels and voxels where ``valid == 0`` get semantic
    255 and instance 0.
    """

    kind: str
    label_class: int = NEURON
    class_map: tuple[tuple[int, int], ...] = ()
    ignore_label: int | None = None
    connectivity: str = "3d"

    @property
    def annotated(self) -> tuple[int, ...]:
        """Unified classes these labels annotate."""
        if self.kind == "semantic":
            return tuple(sorted({BACKGROUND, *(c for _, c in self.class_map)}))
        return (BACKGROUND, self.label_class)

    def __call__(
        self, label: np.ndarray, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        label = np.asarray(label)
        ignored = np.zeros(label.shape, bool) if self.ignore_label is None else label == self.ignore_label
        if valid is not None:
            ignored |= np.asarray(valid) == 0
        if self.kind == "instances":
            fg = (label != 0) & ~ignored
            instance = np.where(fg, label, np.zeros((), label.dtype))
            semantic = np.where(fg, np.uint8(self.label_class), np.uint8(BACKGROUND))
        elif self.kind == "mask":
            fg = (label != 0) & ~ignored
            instance = _components(fg, self.connectivity)
            semantic = np.where(fg, np.uint8(self.label_class), np.uint8(BACKGROUND))
        else:
            instance, semantic = self._semantic(label, ignored)
        semantic = semantic.astype(np.uint8, copy=False)
        semantic[ignored] = IGNORE_INDEX
        return instance, semantic

    def _semantic(self, label: np.ndarray, ignored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.array([v for v, _ in self.class_map], dtype=label.dtype)
        classes = np.array([c for _, c in self.class_map], dtype=np.uint8)
        pos = np.clip(np.searchsorted(values, label), 0, len(values) - 1)
        hit = values[pos] == label
        semantic = np.where(hit & ~ignored, classes[pos], np.uint8(BACKGROUND))
        instance = np.zeros(label.shape, np.int64)
        offset = 0
        for c in sorted(set(classes.tolist()) - {BACKGROUND, MITOCHONDRION_BOUNDARY}):
            ids = _components(semantic == c, self.connectivity)
            instance += np.where(ids > 0, ids + offset, 0)
            offset += int(ids.max(initial=0))
        rim = semantic == MITOCHONDRION_BOUNDARY
        mito = semantic == MITOCHONDRION
        if rim.any() and mito.any():
            idx = ndimage.distance_transform_edt(~mito, return_distances=False, return_indices=True)
            instance[rim] = instance[tuple(idx)][rim]
        return instance, semantic
