"""Image panels for experiment trackers: raw, semantic, instance colours, embedding PCA.

Everything here is vectorised NumPy/torch on one 2D slice; instance ids are coloured by
hashing (no table indexed by raw ids, so uint64-scale ids work).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["embedding_pca", "grey", "id_colours", "make_panels", "semantic_colours"]

# unified classes: background, neuron, cleft, mitochondrion, mito boundary, then generic colours
_SEMANTIC_PALETTE = np.array(
    [
        [0, 0, 0],
        [70, 130, 180],
        [220, 20, 60],
        [60, 179, 113],
        [255, 215, 0],
        [148, 103, 189],
        [255, 127, 14],
        [23, 190, 207],
        [188, 189, 34],
        [227, 119, 194],
        [140, 86, 75],
        [127, 127, 127],
        [31, 119, 180],
        [44, 160, 44],
        [214, 39, 40],
        [255, 152, 150],
    ],
    dtype=np.uint8,
)


def grey(image: np.ndarray) -> np.ndarray:
    """Min-max scale a 2D array to an ``(H, W, 3)`` uint8 grey image."""
    a = np.asarray(image, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    g = (a * 255).round().astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def id_colours(ids: np.ndarray) -> np.ndarray:
    """Pseudo-random colour per instance id (0 = black), ``(H, W, 3)`` uint8.

    Examples
    --------
    >>> id_colours(np.array([[0, 5]]))[0, 0].tolist()
    [0, 0, 0]
    """
    x = np.asarray(ids).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = x * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(0xFF) for s in (0, 8, 16)], axis=-1).astype(
        np.uint8
    )
    rgb = (rgb // 2 + 64).astype(np.uint8)  # keep colours away from black
    rgb[x == 0] = 0
    return rgb


def semantic_colours(classes: np.ndarray) -> np.ndarray:
    """Fixed palette for semantic classes (ignore 255 -> white), ``(H, W, 3)`` uint8."""
    c = np.asarray(classes).astype(np.int64)
    out = _SEMANTIC_PALETTE[np.clip(c, 0, len(_SEMANTIC_PALETTE) - 1)]
    out[c == 255] = 255
    return out


def embedding_pca(embedding: torch.Tensor | np.ndarray) -> np.ndarray:
    """First three principal components of an ``(E, H, W)`` embedding as an RGB image.

    Degenerate embeddings (e.g. bf16-quantised outputs with repeated values, where LAPACK's
    ``eigh`` can fail to converge) fall back to the first channels instead of raising: a
    preview must never stop training.
    """
    e = torch.as_tensor(embedding, dtype=torch.float32)
    c = e.shape[0]
    x = e.reshape(c, -1)
    x = x - x.mean(dim=1, keepdim=True)
    x64 = x.double()
    cov = x64 @ x64.T / max(x.shape[1] - 1, 1)
    cov = cov + torch.eye(c, dtype=cov.dtype) * (1e-9 * float(cov.diagonal().abs().max()) + 1e-12)
    try:
        _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        vecs = vecs.float()
    except RuntimeError:  # torch.linalg.LinAlgError: ill-conditioned covariance
        vecs = torch.eye(c).flip(-1)  # "components" = channels 0, 1, 2
    k = min(3, c)
    comps = vecs[:, -k:].flip(-1).T @ x  # (k, N)
    lo = comps.min(dim=1, keepdim=True).values
    hi = comps.max(dim=1, keepdim=True).values
    comps = (comps - lo) / (hi - lo).clamp_min(1e-12)
    if k < 3:
        comps = torch.cat([comps, comps.new_zeros(3 - k, comps.shape[1])])
    img = (comps.T.reshape(*e.shape[1:], 3) * 255).round().to(torch.uint8)
    return img.numpy()


def _slice(a: np.ndarray | torch.Tensor, spatial_dims: int) -> np.ndarray | torch.Tensor:
    """Central z slice of a 3D array (keeps leading channel axes)."""
    if spatial_dims == 3:
        return a[..., a.shape[-3] // 2, :, :]
    return a


def make_panels(
    image: torch.Tensor,
    semantic_logits: torch.Tensor,
    embedding: torch.Tensor,
    gt_instance: np.ndarray,
    pred_instance: np.ndarray,
    gt_semantic: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Panels for one sample (central slice in 3D).

    Parameters
    ----------
    image : Tensor ``(C, *spatial)``
    semantic_logits : Tensor ``(K, *spatial)``
    embedding : Tensor ``(E, *spatial)``
    gt_instance, pred_instance : ndarray ``spatial``
    gt_semantic : ndarray ``spatial``, optional

    Returns
    -------
    dict
        name -> ``(H, W, 3)`` uint8 image: ``raw``, ``semantic``, ``semantic_gt``,
        ``instance_gt``, ``instance_pred``, ``embedding_pca``.
    """
    s = image.ndim - 1
    panels = {
        "raw": grey(_slice(image[0], s).float().cpu().numpy()),
        "semantic": semantic_colours(_slice(semantic_logits.argmax(0), s).cpu().numpy()),
        "instance_gt": id_colours(_slice(np.asarray(gt_instance), s)),
        "instance_pred": id_colours(_slice(np.asarray(pred_instance), s)),
        "embedding_pca": embedding_pca(_slice(embedding.float().cpu(), s)),
    }
    if gt_semantic is not None:
        panels["semantic_gt"] = semantic_colours(_slice(np.asarray(gt_semantic), s))
    return panels
