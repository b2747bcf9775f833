"""Decode model outputs into instances in the unified label space.

Two decoders, both per semantic class (0 background, 1 neuron, 2 cleft, 3 mitochondrion,
4 mitochondrion boundary — voxels of class 4 belong to the mitochondrion instances):

* :func:`cluster_embeddings` — mean-shift with a flat kernel of radius ``bandwidth`` (δv of the
  discriminative loss) on a subsample of the foreground embeddings, seeded in rounds until every
  voxel lies within ``bandwidth`` of a mode, then nearest-mode assignment of all voxels in
  chunks. Memory is O(chunk × modes), never modes × channels × voxels.
* :func:`seeded_watershed` — foreground probability (or any "interior" map) → seeds from high
  confidence cores or distance-transform maxima → scikit-image watershed on ``1 - p``.

Both split clusters into spatially connected pieces and remove objects smaller than
``min_size``; :func:`decode_instances` applies them per class and returns one uint64 instance
map whose ids are unique across classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from skimage import measure, segmentation

from .errors import DecodeError

__all__ = [
    "INSTANCE_CLASSES",
    "DecodeConfig",
    "cluster_embeddings",
    "decode_instances",
    "label_components",
    "relabel_sequential",
    "remove_small_objects",
    "seeded_watershed",
    "semantic_argmax",
]

NUM_CLASSES = 5
#: instance class -> semantic values whose voxels make up its instances
INSTANCE_CLASSES: dict[int, tuple[int, ...]] = {1: (1,), 2: (2,), 3: (3, 4)}


def relabel_sequential(
    labels: np.ndarray, dtype: np.dtype | type = np.uint64
) -> tuple[np.ndarray, int]:
    """Map the non-zero ids of ``labels`` to ``1..K`` (order of first id value), 0 stays 0.

    Works for any integer ids up to uint64 without a table indexed by raw ids.

    Returns
    -------
    (numpy.ndarray, int)
        Relabelled array of ``dtype`` and the number of objects ``K``.

    Examples
    --------
    >>> relabel_sequential(np.array([0, 7, 2**60, 7]))[0].tolist()
    [0, 1, 2, 1]
    """
    ids, inv = np.unique(labels, return_inverse=True)
    has_bg = ids.size > 0 and ids[0] == 0
    new = np.arange(ids.size, dtype=np.uint64) + (0 if has_bg else 1)
    out = new[inv.reshape(labels.shape)].astype(dtype, copy=False)
    return out, int(ids.size - (1 if has_bg else 0))


def remove_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set objects with fewer than ``min_size`` voxels to 0 (ids are kept, not compacted).

    Examples
    --------
    >>> remove_small_objects(np.array([1, 1, 2, 0]), 2).tolist()
    [1, 1, 0, 0]
    """
    if min_size <= 1 or labels.size == 0:
        return labels
    ids, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = (counts >= min_size) & (ids != 0)
    out = labels.copy()
    out[~keep[inv.reshape(labels.shape)]] = 0
    return out


def label_components(labels: np.ndarray, connectivity: int = 1) -> tuple[np.ndarray, int]:
    """Split every id of ``labels`` into its spatially connected pieces, ids ``1..K`` (int64).

    ``connectivity`` 1 = faces (4/6-neighbourhood) … ndim = full.

    Examples
    --------
    >>> label_components(np.array([[1, 0, 1]]))[1]
    2
    """
    out, n = measure.label(labels, background=0, connectivity=connectivity, return_num=True)
    return out.astype(np.int64, copy=False), int(n)


def semantic_argmax(probs: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Unified semantic map (uint8) from class probabilities ``(C, *spatial)``.

    Channels beyond the unified classes (the model may have more) are ignored.

    Examples
    --------
    >>> semantic_argmax(np.array([[0.2], [0.8]])).tolist()
    [1]
    """
    if probs.ndim < 2:
        raise DecodeError(f"semantic probabilities must be (C, *spatial), got shape {probs.shape}")
    return np.argmax(probs[:num_classes], axis=0).astype(np.uint8)


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


def seeded_watershed(
    foreground: np.ndarray,
    *,
    threshold: float = 0.5,
    seed_threshold: float | None = 0.9,
    seed_distance: float | None = None,
    sigma: float = 0.0,
    mask: np.ndarray | bool | None = True,
    sampling: Sequence[float] | None = None,
    compactness: float = 0.0,
) -> np.ndarray:
    """Seeded watershed of an interior map (probability that a voxel is inside an object).

    Parameters
    ----------
    foreground : array (*spatial)
        Interior probability / intensity in [0, 1] (high inside objects, low on boundaries).
    threshold : float
        Voxels with ``foreground > threshold`` may be labelled (when ``mask is True``).
    seed_threshold : float or None
        Seeds = connected components of ``foreground > seed_threshold``.
    seed_distance : float or None
        Alternative seeding (used when ``seed_threshold`` is None): seeds are the cores of the
        ``foreground > threshold`` mask whose distance to its border is at least
        ``seed_distance`` (in ``sampling`` units).
    sigma : float
        Gaussian smoothing of ``foreground`` (voxels) before seeding and flooding.
    mask : bool, array or None
        ``True``: restrict to ``foreground > threshold``; an array: that mask; ``None`` /
        ``False``: flood everything (dense segmentation).
    sampling : sequence of float, optional
        Voxel size for the distance transform (anisotropic volumes).
    compactness : float
        Passed to :func:`skimage.segmentation.watershed`.

    Returns
    -------
    numpy.ndarray
        int64 labels ``1..K``, 0 outside the mask.

    Examples
    --------
    >>> p = np.zeros((5, 9)); p[1:4, 1:4] = 1; p[1:4, 5:8] = 1
    >>> int(seeded_watershed(p).max())
    2
    """
    fg = np.asarray(foreground, dtype=np.float32)
    if sigma > 0:
        fg = ndimage.gaussian_filter(fg, sigma)
    if mask is True:
        region = fg > threshold
    elif mask is None or mask is False:
        region = None
    else:
        region = np.asarray(mask, dtype=bool)
        if region.shape != fg.shape:
            raise DecodeError(
                f"mask shape {region.shape} does not match foreground shape {fg.shape}"
            )
    if seed_threshold is not None:
        seeds_mask = fg > seed_threshold
    else:
        core = fg > threshold
        dist = ndimage.distance_transform_edt(core, sampling=sampling)
        seeds_mask = dist >= (seed_distance if seed_distance is not None else 2.0)
    if region is not None:
        seeds_mask &= region
    markers, _ = label_components(seeds_mask, connectivity=fg.ndim)
    if markers.max() == 0:
        return np.zeros(fg.shape, dtype=np.int64)
    out = segmentation.watershed(1.0 - fg, markers=markers, mask=region, compactness=compactness)
    return out.astype(np.int64, copy=False)


@dataclass
class DecodeConfig:
    """Parameters of :func:`decode_instances`.

    ``method``: ``"embedding"`` (mean-shift of the instance embedding), ``"watershed"``
    (seeded watershed of the class probability) or ``"auto"`` (embedding when the outputs have
    one). ``planewise`` decodes each z plane of a 3-D volume on its own (2-D models on stacks).
    ``classes`` maps each instance class to the semantic values forming its instances.
    ``min_size`` removes smaller objects (0 disables). ``bandwidth`` etc. go to
    :func:`cluster_embeddings`, ``threshold``/``seed_threshold``/``seed_distance``/``sigma``
    to :func:`seeded_watershed`.
    """

    method: str = "auto"
    classes: Mapping[int, tuple[int, ...]] = field(default_factory=lambda: dict(INSTANCE_CLASSES))
    min_size: int = 0
    connectivity: int = 1
    bandwidth: float = 0.5
    max_samples: int = 10000
    max_seeds: int = 128
    seed: int = 0
    threshold: float = 0.5
    seed_threshold: float | None = 0.9
    seed_distance: float | None = None
    sigma: float = 0.0
    dense: bool = False
    sampling: Sequence[float] | None = None
    planewise: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("auto", "embedding", "watershed"):
            raise DecodeError(
                f"decode method must be auto|embedding|watershed, got {self.method!r}"
            )


def decode_instances(
    outputs: Mapping[str, np.ndarray], config: DecodeConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Instances and semantic classes from blended model outputs.

    Parameters
    ----------
    outputs : mapping
        ``"semantic"``: class probabilities ``(C, *spatial)`` (required); ``"instance"``:
        embedding ``(E, *spatial)`` (for the embedding decoder).
    config : DecodeConfig, optional

    Returns
    -------
    (instance, semantic)
        ``instance``: uint64 ids ``1..K``, unique across classes, 0 = background;
        ``semantic``: uint8 unified classes (0..4).

    Examples
    --------
    >>> probs = np.zeros((2, 4, 4), np.float32); probs[0] = 1; probs[:, 1:3, 1:3] = [[[0]], [[1]]]
    >>> ins, sem = decode_instances({"semantic": probs}, DecodeConfig(method="watershed"))
    >>> int(ins.max()), int(sem.sum())
    (1, 4)
    """
    cfg = config or DecodeConfig()
    if cfg.planewise:
        return _decode_planewise(outputs, cfg)
    if "semantic" not in outputs:
        raise DecodeError(f"outputs need a 'semantic' entry, got keys {sorted(outputs)}")
    probs = np.asarray(outputs["semantic"])
    semantic = semantic_argmax(probs)
    method = cfg.method
    if method == "auto":
        method = "embedding" if "instance" in outputs else "watershed"
    if method == "embedding" and "instance" not in outputs:
        raise DecodeError("decode method 'embedding' needs an 'instance' embedding output")
    instance = np.zeros(semantic.shape, dtype=np.uint64)
    next_id = 0
    for cls, members in sorted(cfg.classes.items()):
        mask = np.isin(semantic, np.asarray(members, dtype=np.uint8))
        if not mask.any():
            continue
        if method == "embedding":
            lab = cluster_embeddings(
                outputs["instance"],
                mask,
                bandwidth=cfg.bandwidth,
                max_samples=cfg.max_samples,
                max_seeds=cfg.max_seeds,
                seed=cfg.seed,
            )
        else:
            # class probability renormalised over the unified classes (a model may have more
            # channels; sigmoid outputs need not sum to one)
            chans = [m for m in members if m < probs.shape[0]]
            fg = probs[chans].sum(0) / np.maximum(probs[:NUM_CLASSES].sum(0), 1e-6)
            lab = seeded_watershed(
                fg,
                threshold=cfg.threshold,
                seed_threshold=cfg.seed_threshold,
                seed_distance=cfg.seed_distance,
                sigma=cfg.sigma,
                mask=None if (cfg.dense and cls == 1) else mask,
                sampling=cfg.sampling,
            )
            if cfg.dense and cls == 1:  # neurons fill everything but other classes' voxels
                lab[
                    np.isin(semantic, [m for c, ms in cfg.classes.items() if c != 1 for m in ms])
                ] = 0
        lab, n = label_components(lab, cfg.connectivity)
        if cfg.min_size > 1:
            lab = remove_small_objects(lab, cfg.min_size)
        lab, n = relabel_sequential(lab)
        sel = lab > 0
        instance[sel] = lab[sel] + np.uint64(next_id)
        next_id += n
    return instance, semantic


def _decode_planewise(
    outputs: Mapping[str, np.ndarray], cfg: DecodeConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Decode each z plane separately; ids stay unique across planes."""
    sub = DecodeConfig(**{**cfg.__dict__, "planewise": False})
    first = np.asarray(outputs["semantic"])
    if first.ndim != 4:
        raise DecodeError(f"planewise decoding needs (C, Z, Y, X) outputs, got shape {first.shape}")
    instance = np.zeros(first.shape[1:], dtype=np.uint64)
    semantic = np.zeros(first.shape[1:], dtype=np.uint8)
    next_id = np.uint64(0)
    for z in range(first.shape[1]):
        ins, sem = decode_instances({k: np.asarray(v)[:, z] for k, v in outputs.items()}, sub)
        instance[z] = np.where(ins > 0, ins + next_id, np.uint64(0))
        semantic[z] = sem
        next_id += ins.max(initial=np.uint64(0))
    return instance, semantic
