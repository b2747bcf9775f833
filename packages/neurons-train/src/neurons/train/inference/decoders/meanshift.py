"""Mean-shift clustering of instance embeddings (the predecessor's embedding decoder).

Flat kernel of radius ``bandwidth`` (δv of the discriminative loss) on a subsample of the
foreground embeddings, seeded in rounds until every voxel lies within ``bandwidth`` of a mode,
then nearest-mode assignment of all voxels in chunks. Memory is O(chunk × modes), never
modes × channels × voxels. Kept as the ``"meanshift"`` decoder next to the affinity-based
:mod:`~.embedding` decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import DecodeError

__all__ = ["cluster_embeddings", "meanshift_decoder"]


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (N, K) via ||x||^2 + ||c||^2 - 2 x.c (no N×K×E tensor)."""
    d = (x * x).sum(1, keepdim=True) + (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)
    return d.clamp_min_(0.0)


def _nearest(x: torch.Tensor, modes: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and squared distance to the nearest mode for each row of ``x``.

    Processed in row blocks so that one distance block holds at most ``chunk`` elements.
    """
    rows = max(1, chunk // max(1, modes.shape[0]))
    idx = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], rows):
        d = _sq_dists(x[s : s + rows], modes)
        dist[s : s + rows], idx[s : s + rows] = d.min(1)
    return idx, dist


def _mean_shift(
    points: torch.Tensor, seeds: torch.Tensor, bandwidth: float, iters: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat-kernel mean shift of ``seeds`` over ``points``; returns modes and their support.

    Only modes that still move are updated in each iteration.
    """
    h2 = bandwidth * bandwidth
    modes = seeds.clone()
    support = torch.zeros(modes.shape[0], device=points.device)
    active = torch.arange(modes.shape[0], device=points.device)
    rows = max(1, chunk // max(points.shape[0], 1))
    for _ in range(iters):
        if active.numel() == 0:
            break
        cur = modes[active]
        new = torch.empty_like(cur)
        cnt_all = torch.empty(cur.shape[0], device=points.device)
        for s in range(0, cur.shape[0], rows):
            k = (_sq_dists(cur[s : s + rows], points) <= h2).to(points.dtype)  # (r, S)
            cnt = k.sum(1)
            new[s : s + rows] = torch.where(
                cnt[:, None] > 0, (k @ points) / cnt.clamp_min(1)[:, None], cur[s : s + rows]
            )
            cnt_all[s : s + rows] = cnt
        moved = (new - cur).norm(dim=1) >= 1e-3 * bandwidth
        modes[active] = new
        support[active] = cnt_all
        active = active[moved]
    return modes, support


def _merge_modes(modes: torch.Tensor, support: torch.Tensor, radius: float) -> torch.Tensor:
    """Merge modes closer than ``radius`` (connected components); index of each group's densest."""
    if modes.shape[0] <= 1:
        return torch.arange(modes.shape[0], device=modes.device)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    close = (_sq_dists(modes, modes) < radius * radius).cpu().numpy()
    i, j = np.nonzero(close)
    graph = coo_matrix((np.ones(i.size, dtype=np.int8), (i, j)), shape=close.shape)
    _, comp = connected_components(graph, directed=False)
    sup = support.cpu().numpy()
    order = np.lexsort((-sup, comp))  # by component, densest first
    first = np.ones(order.size, dtype=bool)
    first[1:] = comp[order][1:] != comp[order][:-1]
    return torch.from_numpy(order[first]).to(modes.device)


def cluster_embeddings(
    embedding: np.ndarray | torch.Tensor,
    mask: np.ndarray | None = None,
    *,
    bandwidth: float = 0.5,
    max_samples: int = 10000,
    max_seeds: int = 128,
    max_rounds: int = 6,
    iters: int = 20,
    min_support: int = 1,
    chunk: int = 1 << 22,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Cluster per-voxel embeddings into instances (mean-shift, bandwidth ``bandwidth``).

    Parameters
    ----------
    embedding : array (E, *spatial)
        Instance embedding of each voxel.
    mask : bool array (*spatial), optional
        Voxels to cluster (default: all); others get 0.
    bandwidth : float
        Flat-kernel radius; use the pull margin δv of the discriminative loss. Modes closer
        than ``bandwidth`` are merged.
    max_samples : int
        Foreground voxels used to find modes (uniform subsample, deterministic from ``seed``).
    max_seeds : int
        Seeds per round; rounds add seeds drawn from voxels not yet within ``bandwidth`` of a
        mode, until all are covered or ``max_rounds`` is reached.
    min_support : int
        Modes nearest to fewer sampled voxels than this are dropped (their voxels go to the
        next nearest mode).
    chunk : int
        Work size (elements) of one distance block; bounds memory.

    Returns
    -------
    numpy.ndarray
        int64 ``(*spatial)`` cluster ids ``1..K`` (0 outside ``mask``); not split spatially.

    Examples
    --------
    >>> emb = np.zeros((2, 4, 4), np.float32); emb[0, :, 2:] = 3.0
    >>> np.unique(cluster_embeddings(emb)).tolist()
    [1, 2]
    """
    emb = torch.as_tensor(embedding)
    if emb.ndim < 2:
        raise DecodeError(f"embedding must be (E, *spatial), got shape {tuple(emb.shape)}")
    spatial = tuple(emb.shape[1:])
    if mask is None:
        mask = np.ones(spatial, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != spatial:
        raise DecodeError(
            f"mask shape {mask.shape} does not match embedding spatial shape {spatial}"
        )
    if bandwidth <= 0:
        raise DecodeError(f"bandwidth must be > 0, got {bandwidth}")
    labels = np.zeros(spatial, dtype=np.int64)
    flat_idx = np.flatnonzero(mask)
    if flat_idx.size == 0:
        return labels
    dev = torch.device(device) if device is not None else emb.device
    x = emb.reshape(emb.shape[0], -1)[:, torch.from_numpy(flat_idx)].T.contiguous().float().to(dev)
    n = x.shape[0]
    gen = np.random.default_rng(seed)
    sample = (
        x
        if n <= max_samples
        else x[torch.from_numpy(np.sort(gen.choice(n, max_samples, replace=False))).to(dev)]
    )
    h2 = bandwidth * bandwidth
    modes = torch.empty((0, x.shape[1]), dtype=x.dtype, device=dev)
    support = torch.empty(0, device=dev)
    pool = sample
    for _ in range(max_rounds):
        if pool.shape[0] > max_samples:
            pool = pool[
                torch.from_numpy(np.sort(gen.choice(pool.shape[0], max_samples, replace=False))).to(
                    dev
                )
            ]
        k = min(max_seeds, pool.shape[0])
        pick = torch.from_numpy(np.sort(gen.choice(pool.shape[0], k, replace=False))).to(dev)
        # later rounds look for the density peaks of what is still uncovered
        new, sup = _mean_shift(pool, pool[pick], bandwidth, iters, chunk)
        modes = torch.cat([modes, new])
        support = torch.cat([support, sup])
        keep = _merge_modes(modes, support, bandwidth)
        modes, support = modes[keep], support[keep]
        # cover the *full* foreground, not only the subsample
        _, dist = _nearest(x, modes, chunk)
        uncovered = dist > h2
        if not bool(uncovered.any()):
            break
        pool = x[uncovered]
    if min_support > 1 and modes.shape[0] > 1:
        idx_s, _ = _nearest(sample, modes, chunk)
        cnt = torch.bincount(idx_s, minlength=modes.shape[0])
        keep = cnt >= min_support
        if bool(keep.any()):
            modes = modes[keep]
    idx, _ = _nearest(x, modes, chunk)
    labels.reshape(-1)[flat_idx] = idx.cpu().numpy() + 1
    return labels


def meanshift_decoder(
    outputs: Mapping[str, np.ndarray],
    *,
    offsets: Any = None,  # noqa: ARG001
    regions: np.ndarray | None = None,
    foreground: np.ndarray | None = None,  # noqa: ARG001
    **params: Any,
) -> np.ndarray:
    """Registry adapter: :func:`cluster_embeddings` of ``"instance"`` inside ``regions``."""
    return cluster_embeddings(
        outputs["instance"], None if regions is None else regions > 0, **params
    )
