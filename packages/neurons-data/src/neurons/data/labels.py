"""The unified label space shared by every dataset, and the per-dataset mappings into it.

Unified semantic classes (``semantic`` maps, ``semantic_ids`` flags):

====  =======================  ==========================================================
 id   name                     meaning
====  =======================  ==========================================================
 0    ``background``           membrane / extracellular space / "none of the classes"
 1    ``neuron``               inside a neurite (any neuron instance)
 2    ``synaptic_cleft``       synaptic cleft
 3    ``mitochondrion``        mitochondrion interior
 4    ``mitochondrion_boundary`` mitochondrion boundary (separates touching mitochondria)
 255  ``IGNORE_INDEX``         no annotation here (e.g. CREMI ``uint64(-1)`` "no data")
====  =======================  ==========================================================

A dataset *annotates* a class when its labels say, for every voxel, whether the voxel belongs
to it. ``semantic_ids`` (int64, length 5) has a 1 for each annotated class. A loss must not
penalise predictions of a class a sample does not annotate: a MitoEM2 voxel labelled 0 may well
be inside a neuron. See :data:`DATASET_MAPPINGS` for the rule used for each dataset.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

__all__ = [
    "BACKGROUND",
    "DATASET_MAPPINGS",
    "IGNORE_INDEX",
    "MITOCHONDRION",
    "MITOCHONDRION_BOUNDARY",
    "NEURON",
    "NUM_UNIFIED_CLASSES",
    "SYNAPTIC_CLEFT",
    "UINT64_NO_DATA",
    "UNIFIED_CLASSES",
    "cremi_to_unified",
    "foreground_to_unified",
    "interior_to_unified",
    "mitoem2_to_unified",
    "renumber_instances",
    "semantic_ids_vector",
    "touching_boundaries",
]

UNIFIED_CLASSES: tuple[str, ...] = (
    "background",
    "neuron",
    "synaptic_cleft",
    "mitochondrion",
    "mitochondrion_boundary",
)
NUM_UNIFIED_CLASSES: int = len(UNIFIED_CLASSES)
BACKGROUND, NEURON, SYNAPTIC_CLEFT, MITOCHONDRION, MITOCHONDRION_BOUNDARY = range(5)
IGNORE_INDEX: int = 255
#: CREMI's "no data" marker (``0xFFFFFFFFFFFFFFFF``).
UINT64_NO_DATA: int = np.iinfo(np.uint64).max

#: Human-readable mapping of every dataset into the unified space (also in the README).
DATASET_MAPPINGS: dict[str, str] = {
    "snemi3d": "label > 0 -> 1 neuron (instance = label); label 0 -> 0 background. "
    "Annotates classes 0, 1.",
    "cremi3d": "neuron_ids > 0 -> 1 neuron (instance = neuron id), except the voxels separating "
    "touching neurons -> 0; neuron_ids == uint64(-1) -> 255 ignore (instance 0); clefts with "
    "0 < id < uint64(-1) -> 2 synaptic cleft; mitochondria with 0 < id < uint64(-1) -> 3 "
    "mitochondrion (later rules win; clefts and mitochondria get their own instance ids). "
    "Annotates 0, 1, 2 (+ 3 when the file has volumes/labels/mitochondria).",
    "microns": "segment id > 0 -> 1 neuron (instance = segment id); optional synapse volume > 0 -> 2; "
    "optional mitochondria volume > 0 -> 3. Annotates 0, 1 (+ 2, 3 when those volumes are given).",
    "mitoem2": "label 1 -> 3 mitochondrion, label 2 -> 4 mitochondrion boundary, 0 -> 0; instance = "
    "connected components of label 1, boundary voxels joined to the nearest component. Annotates "
    "0, 3, 4 (neurons are NOT annotated).",
    "isbi2012": "label 255 (cell interior) -> 1 neuron, 0 (membrane) -> 0; instance = connected "
    "components of the interior within each section. Annotates 0, 1.",
    "synthetic": "the generator's semantic map is already unified (neurons, mitochondria and their "
    "rims; no synaptic clefts); instance = generator ids (a mitochondrion's rim shares its id). "
    "Annotates 0, 1, 3 (+ 4 when the generator emits mitochondrion boundaries); not 2.",
}


def semantic_ids_vector(classes: Iterable[int]) -> np.ndarray:
    """Return the int64 ``(NUM_UNIFIED_CLASSES,)`` flag vector for the annotated ``classes``.

    Examples
    --------
    >>> semantic_ids_vector([0, 1]).tolist()
    [1, 1, 0, 0, 0]
    """
    out = np.zeros(NUM_UNIFIED_CLASSES, dtype=np.int64)
    for c in classes:
        c = int(c)
        if not 0 <= c < NUM_UNIFIED_CLASSES:
            raise ValueError(f"unified class id {c} outside 0..{NUM_UNIFIED_CLASSES - 1}")
        out[c] = 1
    return out


def renumber_instances(instance: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber instance ids to contiguous int64 ``1..K`` keeping 0 as background.

    Works for any integer dtype including uint64 ids >= 2**63 (no dense table indexed by ids).

    Parameters
    ----------
    instance : np.ndarray
        Integer id array of any shape.

    Returns
    -------
    renumbered : np.ndarray
        int64 array of the same shape; ids ordered like the sorted input ids.
    count : int
        Number of non-zero instances ``K``.
    """
    instance = np.asarray(instance)
    if instance.dtype.kind not in "iub":
        raise TypeError(f"instance ids must be integers, got dtype {instance.dtype}")
    if instance.size == 0:
        return np.zeros(instance.shape, dtype=np.int64), 0
    uniq, inverse = np.unique(instance.reshape(-1), return_inverse=True)
    inverse = inverse.astype(np.int64, copy=False).reshape(instance.shape)
    if uniq[0] != 0:
        inverse += 1
        return inverse, int(uniq.size)
    return inverse, int(uniq.size - 1)


def touching_boundaries(ids: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Voxels that separate touching objects: for every face-adjacent pair of valid voxels with
    two different ids, the one with the lower coordinate.

    Dense segmentations (CREMI, MICrONS) have no background between neighbouring neurons, so
    without this a semantic "neuron" map is one blob; with these voxels set to background, no two
    voxels of different ids remain face-adjacent, so the connected components of the neuron
    class are exactly the objects (a 1-voxel-thin, one-sided boundary).

    Examples
    --------
    >>> touching_boundaries(np.array([[1, 1, 2, 2, 0, 3]])).astype(int).tolist()
    [[0, 1, 0, 0, 0, 0]]
    """
    ids = np.asarray(ids)
    valid = ids != 0 if valid is None else np.asarray(valid, dtype=bool)
    out = np.zeros(ids.shape, dtype=bool)
    for axis in range(ids.ndim):
        lo = [slice(None)] * ids.ndim
        hi = [slice(None)] * ids.ndim
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        lo_, hi_ = tuple(lo), tuple(hi)
        out[lo_] |= valid[lo_] & valid[hi_] & (ids[lo_] != ids[hi_])
    return out


def _add_objects(
    instance: np.ndarray, semantic: np.ndarray, objects: np.ndarray, mask: np.ndarray, cls: int
) -> np.ndarray:
    """Give the voxels of ``mask`` class ``cls`` and their own instance ids (after the others)."""
    if not mask.any():
        return instance
    uniq, inverse = np.unique(np.asarray(objects)[mask], return_inverse=True)
    top = int(instance.max()) if instance.size else 0
    if top + uniq.size >= int(np.iinfo(instance.dtype).max):  # no room above: renumber first
        instance, top = renumber_instances(instance)
    new = np.asarray(inverse, dtype=instance.dtype).reshape(-1) + instance.dtype.type(top + 1)
    instance[mask] = new
    semantic[mask] = cls
    return instance


def _id_dtype(ids: np.ndarray) -> np.dtype:
    return np.dtype(np.uint64) if ids.dtype.kind in "ub" else np.dtype(np.int64)


def foreground_to_unified(
    segmentation: np.ndarray,
    synapses: np.ndarray | None = None,
    mitochondria: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Map a dense neuron segmentation (SNEMI3D, MICrONS) to ``(instance, semantic)``.

    ``segmentation > 0`` becomes class 1; optional ``synapses > 0`` class 2 and
    ``mitochondria > 0`` class 3 (later rules win). The instance map is the segmentation itself.
    """
    segmentation = np.asarray(segmentation)
    semantic = (segmentation != 0).astype(np.uint8)
    if synapses is not None:
        semantic[np.asarray(synapses) != 0] = SYNAPTIC_CLEFT
    if mitochondria is not None:
        semantic[np.asarray(mitochondria) != 0] = MITOCHONDRION
    return segmentation, semantic


def _valid_cremi(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    valid = ids != 0
    if ids.dtype == np.uint64:
        valid &= ids != np.uint64(UINT64_NO_DATA)
    elif ids.dtype.kind == "i":
        valid &= ids != -1  # uint64(-1) read through a signed dtype
    return valid


def cremi_to_unified(
    neuron_ids: np.ndarray,
    clefts: np.ndarray | None = None,
    mitochondria: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Map CREMI label volumes to ``(instance, semantic)``.

    ``neuron_ids == uint64(-1)`` ("no data") becomes semantic :data:`IGNORE_INDEX` and instance 0.
    CREMI's neuron labels are dense (neurons touch), so the voxels separating two neurons
    (:func:`touching_boundaries`) become background (class 0, instance 0): the neuron class's
    connected components are then the neurons. In ``clefts``/``mitochondria`` both 0 and
    ``uint64(-1)`` mean "not this class" (the official cleft volumes use ``uint64(-1)`` as
    their background); their voxels become class 2 / 3 with their own instance ids (numbered
    after the neurons'), never the neuron's id they overlap.
    """
    neuron_ids = np.asarray(neuron_ids)
    if neuron_ids.dtype == np.uint64:
        no_data = neuron_ids == np.uint64(UINT64_NO_DATA)
    elif neuron_ids.dtype.kind == "i":
        no_data = neuron_ids == -1
    else:
        no_data = np.zeros(neuron_ids.shape, dtype=bool)
    valid = (neuron_ids != 0) & ~no_data
    keep = valid & ~touching_boundaries(neuron_ids, valid)
    semantic = keep.astype(np.uint8)
    instance = np.where(keep, neuron_ids, 0).astype(_id_dtype(neuron_ids), copy=False)
    for objects, cls in ((clefts, SYNAPTIC_CLEFT), (mitochondria, MITOCHONDRION)):
        if objects is not None:
            instance = _add_objects(instance, semantic, objects, _valid_cremi(objects), cls)
    semantic[no_data] = IGNORE_INDEX
    instance[no_data] = 0
    return instance, semantic


def mitoem2_to_unified(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map a MitoEM2 semantic label (0 background, 1 mitochondrion, 2 boundary).

    Instances are the connected components (face connectivity) of class 1; each boundary voxel
    joins the nearest component (Euclidean), so an instance covers the whole mitochondrion.
    Values other than 0/1/2 raise ``ValueError``.
    """
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() > 2):
        raise ValueError(
            f"MitoEM2 labels must be 0/1/2, got values in [{label.min()}, {label.max()}]"
        )
    semantic = np.zeros(label.shape, dtype=np.uint8)
    semantic[label == 1] = MITOCHONDRION
    semantic[label == 2] = MITOCHONDRION_BOUNDARY
    instance, n = ndimage.label(label == 1)
    instance = instance.astype(np.int64, copy=False)
    boundary = label == 2
    if n and boundary.any():
        idx = ndimage.distance_transform_edt(
            instance == 0, return_distances=False, return_indices=True
        )
        nearest = instance[tuple(idx)]
        instance[boundary] = nearest[boundary]
    return instance, semantic


def interior_to_unified(
    interior: np.ndarray, *, per_section: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Map a binary cell-interior label (ISBI 2012: 255 interior, 0 membrane).

    Instances are connected components of the interior (face connectivity), computed within each
    z-section when ``per_section`` (2D connectivity, ids unique across sections), else in 3D.
    """
    fg = np.asarray(interior) != 0
    structure = ndimage.generate_binary_structure(fg.ndim, 1)
    if per_section and fg.ndim == 3:
        structure[0] = False
        structure[2] = False
    instance, _ = ndimage.label(fg, structure=structure)
    return instance.astype(np.int64, copy=False), fg.astype(np.uint8)
