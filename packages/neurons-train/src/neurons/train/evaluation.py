"""Validation-time instance decoding and scoring (small patches, deterministic).

Two decoders, both deterministic:

* ``components``: argmax of the semantic logits, then connected components of each object
  class group (neuron; cleft; mitochondrion with its boundary) separately; small components
  removed.
* ``embedding``: mean-shift of a fixed subsample of foreground embeddings (Gaussian kernel,
  bandwidth δv), modes merged by connected components of the "closer than bandwidth/2" graph,
  every foreground voxel assigned to its nearest mode. No ``K x E x N`` tensors.

The scalable decoders for whole volumes live in :mod:`neurons.train.inference`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "OBJECT_CLASSES",
    "decode_components",
    "decode_embedding",
    "remove_small",
    "score_patch",
]

#: unified classes that form instances (neuron, synaptic cleft, mitochondrion + its boundary)
OBJECT_CLASSES = (1, 2, 3, 4)
#: classes decoded together into one kind of instance
INSTANCE_GROUPS: tuple[tuple[int, ...], ...] = ((1,), (2,), (3, 4))


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set segments smaller than ``min_size`` voxels to 0 and renumber to ``1..K``.

    ``labels`` must hold small non-negative ids (as produced by the decoders here).
    """
    labels = np.asarray(labels)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    new_ids = np.zeros(sizes.shape[0], dtype=np.int64)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1)
    return new_ids[labels]


def decode_components(
    semantic_pred: np.ndarray,
    *,
    classes: Sequence[int | Sequence[int]] = INSTANCE_GROUPS,
    min_size: int = 10,
) -> np.ndarray:
    """Instances as connected components of each predicted object class (group).

    Parameters
    ----------
    semantic_pred : ndarray
        Predicted class per voxel, 2D or 3D.
    classes : sequence of int or of sequences of int
        Classes (or groups of classes decoded together) whose components become instances;
        every other class is background.
    min_size : int
        Components smaller than this are removed.

    Returns
    -------
    ndarray of int64
        Instance ids ``1..K``, 0 background.

    Examples
    --------
    >>> decode_components(np.array([[1, 1, 0, 1, 3, 4]]), min_size=1).tolist()
    [[1, 1, 0, 2, 3, 3]]
    """
    sem = np.asarray(semantic_pred)
    out = np.zeros(sem.shape, dtype=np.int64)
    offset = 0
    for c in classes:  # a handful of classes, never instances
        group = [c] if isinstance(c, int | np.integer) else list(c)
        lab, n = ndimage.label(np.isin(sem, group))
        if n:
            out[lab > 0] = lab[lab > 0] + offset
            offset += n
    return remove_small(out, min_size)


@torch.no_grad()
def decode_embedding(
    embedding: torch.Tensor,
    foreground: torch.Tensor,
    *,
    bandwidth: float = 0.5,
    max_instances: int = 512,
    min_size: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Cluster foreground embeddings into instances (deterministic mean shift).

    Validation uses the same clustering as inference
    (:func:`neurons.train.inference.decode.cluster_embeddings`), so the numbers logged during
    training describe what ``neurons-infer`` will produce.

    Parameters
    ----------
    embedding : Tensor ``(E, *spatial)``
    foreground : Tensor ``spatial`` bool
    bandwidth : float
        Kernel bandwidth in embedding units (use the loss's ``delta_v``).
    max_instances : int
        Upper bound on the modes searched (seeds per round).
    min_size : int
        Instances smaller than this are removed.
    seed : int
        Seed of the subsample (fixed: validation is deterministic).

    Returns
    -------
    ndarray of int64 ``spatial``
    """
    from neurons.train.inference.decode import cluster_embeddings

    fg = foreground.to(torch.bool).cpu().numpy()
    labels = cluster_embeddings(
        embedding.float(), fg, bandwidth=bandwidth, max_seeds=max_instances, seed=seed,
        device=embedding.device,
    )
    return remove_small(labels.astype(np.int64, copy=False), min_size)


def score_patch(
    gt_instance: np.ndarray,
    pred_instance: np.ndarray,
    gt_semantic: np.ndarray,
    pred_semantic: np.ndarray,
    *,
    ignore_index: int = 255,
    annotated: Sequence[int] | None = None,
) -> dict[str, float]:
    """Instance and semantic scores of one patch, all from :mod:`neurons.metrics`.

    Voxels whose ground-truth semantic label is ``ignore_index`` are excluded. Instance scores
    follow the connectomics convention of :mod:`neurons.metrics`: ground-truth background
    (instance 0) is ignored, predicted background counts as its own segment.

    Parameters
    ----------
    gt_instance, pred_instance : ndarray
        Instance ids (0 background).
    gt_semantic, pred_semantic : ndarray
        Semantic classes (unified label space).
    ignore_index : int
        Unknown ground truth.
    annotated : sequence of int, optional
        Object classes the source annotates (Dice/IoU are averaged over those present);
        default :data:`OBJECT_CLASSES`.

    Returns
    -------
    dict
        ``ari``, ``ami``, ``voi_split`` = H(pred|gt), ``voi_merge`` = H(gt|pred), ``voi``,
        ``arand`` (adapted Rand error, CREMI convention), ``dice`` / ``iou`` (mean over the
        annotated object classes present, background excluded) and ``sem_acc``. Keys whose
        score is undefined for this patch (no ground-truth object) are left out.
    """
    from neurons.metrics import (
        adapted_rand_error,
        adjusted_mutual_info,
        adjusted_rand_index,
        contingency_table,
        dice,
        iou,
        variation_of_information,
    )

    gt_i = np.asarray(gt_instance)
    pr_i = np.asarray(pred_instance)
    gt_s = np.asarray(gt_semantic)
    pr_s = np.asarray(pred_semantic)
    valid = gt_s != ignore_index
    if not valid.all():
        gt_i, pr_i, gt_s, pr_s = gt_i[valid], pr_i[valid], gt_s[valid], pr_s[valid]
    out: dict[str, float] = {}
    if gt_i.size == 0:
        return out
    if (gt_i > 0).any():
        table = contingency_table(gt_i, pr_i)
        out["ari"] = float(adjusted_rand_index(table))
        out["ami"] = float(adjusted_mutual_info(table))
        voi = variation_of_information(table)
        out["voi_split"] = float(voi.split)
        out["voi_merge"] = float(voi.merge)
        out["voi"] = float(voi.total)
        out["arand"] = float(adapted_rand_error(table, convention="cremi").error)
    classes = [int(c) for c in (annotated if annotated is not None else OBJECT_CLASSES) if c > 0]
    present = [c for c in classes if (gt_s == c).any() or (pr_s == c).any()]
    if present:
        out["dice"] = float(dice(gt_s, pr_s, classes=present, ignore_index=None).mean)
        out["iou"] = float(iou(gt_s, pr_s, classes=present, ignore_index=None).mean)
    out["sem_acc"] = float(np.mean(gt_s == pr_s))
    return out
