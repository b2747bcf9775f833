"""Shared machinery: exceptions, segment (per-instance) reductions, pairwise distances.

Everything here is vectorised over instances: a batch of label maps is flattened to one
global *segment index* (one segment per (sample, id) pair, or per (sample, class, id) when
instances are split by semantic class), and per-instance statistics are segment reductions
(``index_add_`` / ``scatter_reduce``).  No Python loop runs over instances.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "LossError",
    "LossConfigError",
    "LossInputError",
    "Segments",
    "segment_instances",
    "pairwise_distance",
    "discriminative_terms",
]


class LossError(ValueError):
    """Base class of every error raised by :mod:`neurons.losses`."""


class LossConfigError(LossError):
    """A loss was constructed with an invalid option (name, value and allowed values given)."""


class LossInputError(LossError):
    """A loss or target function received a tensor of the wrong shape, dtype or content."""


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Disable autocast so losses are computed in float32 (or float64) under AMP."""
    dev = device.type if device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    with torch.autocast(device_type=dev, enabled=False):
        yield


def as_float(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_labels(labels: Tensor, name: str, spatial: tuple[int, ...] | None = None) -> Tensor:
    """Validate an integer label map ``(B, *spatial)`` (a ``(B, 1, *spatial)`` map is squeezed)."""
    if not isinstance(labels, Tensor):
        raise LossInputError(f"{name}: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise LossInputError(
            f"{name}: expected an integer label tensor, got dtype {labels.dtype} "
            "(ids must never be cast through float)"
        )
    if spatial is not None:
        if labels.dim() == len(spatial) + 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if tuple(labels.shape[1:]) != tuple(spatial):
            raise LossInputError(
                f"{name}: shape {tuple(labels.shape)} does not match the prediction's spatial "
                f"shape {tuple(spatial)}; expected (B, *spatial) or (B, 1, *spatial)"
            )
    elif labels.dim() not in (3, 4):
        raise LossInputError(
            f"{name}: expected (B, H, W) or (B, D, H, W) labels, got shape {tuple(labels.shape)}"
        )
    return labels.long() if labels.dtype != torch.int64 else labels


@dataclass
class Segments:
    """Instances of a batch as contiguous segments ``0 .. num-1``.

    Attributes
    ----------
    index : Tensor
        ``(B*N,)`` long: the segment of every voxel; background/ignored voxels get ``num``
        (one spare slot, so reductions need no boolean compaction).
    num : int
        Number of segments K over the batch.
    group : Tensor
        ``(K,)`` group of each segment (the sample, or the (sample, class) pair).
    num_groups : int
        Number of groups (B without classes).
    group_class : Tensor
        ``(num_groups,)`` class of each group (zeros without classes).
    counts : Tensor
        ``(K,)`` voxel count of each segment (float).
    rank : Tensor
        ``(K,)`` position of each segment inside its group.
    kmax : int
        Largest number of segments in one group.
    ids : Tensor
        ``(K,)`` the original instance id of each segment.
    """

    index: Tensor
    num: int
    group: Tensor
    num_groups: int
    group_class: Tensor
    counts: Tensor
    rank: Tensor
    kmax: int
    ids: Tensor


def segment_instances(labels: Tensor, classes: Tensor | None = None) -> Segments:
    """Flatten a batch of instance maps into global segments.

    Parameters
    ----------
    labels : Tensor
        ``(B, *spatial)`` integer ids (any value up to ``2**63 - 1``, non-contiguous allowed);
        ``<= 0`` is background / ignored.
    classes : Tensor, optional
        ``(B, *spatial)`` class map; when given, instances are split by class and grouped per
        (sample, class); voxels of class ``<= 0`` are excluded.  Pass a map with ignored voxels
        already set to 0.

    Returns
    -------
    Segments

    Examples
    --------
    >>> seg = segment_instances(torch.tensor([[0, 7, 7, 2**62]]))
    >>> seg.num, seg.index.tolist()
    (2, [2, 0, 0, 1])
    """
    b = labels.shape[0]
    flat = labels.reshape(b, -1)
    fg = flat > 0
    device = labels.device
    # compact ids first (exact for int64), then combine with the sample index without overflow
    uniq, inv = torch.unique(flat, return_inverse=True)
    nu = uniq.numel()
    batch = torch.arange(b, device=device).unsqueeze(1)
    if classes is None:
        group_key = batch.expand_as(flat)
        n_groups_dense = b
        cls_uniq = torch.zeros(1, dtype=torch.long, device=device)
        cinv = torch.zeros_like(flat)
    else:
        cflat = classes.reshape(b, -1).long()
        fg = fg & (cflat > 0)
        cls_uniq, cinv = torch.unique(cflat, return_inverse=True)
        group_key = batch * cls_uniq.numel() + cinv
        n_groups_dense = b * cls_uniq.numel()
    big = n_groups_dense * nu
    key = torch.where(fg, group_key * nu + inv, torch.full_like(inv, big)).reshape(-1)
    # the key space is small (<= groups x distinct ids): compact it with a count, not a sort
    present = torch.bincount(key, minlength=big + 1)[:big] > 0
    ukey = torch.nonzero(present).squeeze(1)
    k = ukey.numel()
    remap = torch.full((big + 1,), k, dtype=torch.long, device=device)
    remap[ukey] = torch.arange(k, device=device)
    seg = remap[key]
    dense_group = torch.div(ukey, nu, rounding_mode="floor")
    ids = uniq[ukey % nu]
    # compact the groups that actually hold segments
    ugroup, group = torch.unique(dense_group, return_inverse=True)
    if classes is None:
        group_class = torch.zeros_like(ugroup)
    else:
        group_class = cls_uniq[ugroup % cls_uniq.numel()]
    g = ugroup.numel()
    counts = torch.bincount(seg, minlength=k + 1)[:k].to(torch.float32)
    per_group = torch.bincount(group, minlength=g)
    first = torch.cumsum(per_group, 0) - per_group
    rank = torch.arange(k, device=device) - first[group]
    kmax = int(per_group.max().item()) if g else 0
    return Segments(seg, k, group, g, group_class, counts, rank, kmax, ids)


class _PairwiseDistance(torch.autograd.Function):
    """Euclidean distances between rows of ``(G, K, E)`` via the Gram matrix.

    The backward pass is written out (``W = (g + g^T) / d``, ``grad = rowsum(W) * x - W x``) so
    coincident points get the zero subgradient instead of NaN, at O(K^2) memory instead of the
    O(K^2 E) of explicit differences.  Computed in float64 (K x E is small) to avoid the
    cancellation of ``|a|^2 + |b|^2 - 2ab``.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        xd = x.double()
        sq = (xd * xd).sum(-1)
        d2 = sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * (xd @ xd.transpose(-1, -2))
        d = d2.clamp_min_(0.0).sqrt_()
        d.diagonal(dim1=-2, dim2=-1).zero_()
        ctx.save_for_backward(xd, d)
        ctx.in_dtype = x.dtype
        return d.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        xd, d = ctx.saved_tensors
        g = grad.double()
        g = g + g.transpose(-1, -2)
        w = torch.where(d > 0, g / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(d))
        out = w.sum(-1, keepdim=True) * xd - w @ xd
        return out.to(ctx.in_dtype)


def pairwise_distance(x: Tensor) -> Tensor:
    """``(..., K, E) -> (..., K, K)`` Euclidean distances with a NaN-free gradient."""
    return _PairwiseDistance.apply(x)


def _group_mean(values: Tensor, group: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Mean of per-segment values within each group; returns (means, segment counts)."""
    cnt = torch.bincount(group, minlength=num_groups).to(values.dtype)
    s = values.new_zeros(num_groups).index_add_(0, group, values)
    return s / cnt.clamp_min(1), cnt


def reduce_groups(per_group: Tensor, seg: Segments) -> Tensor:
    """Mean over groups, first within each class then over classes (plain mean without classes)."""
    if seg.num_groups == 0:
        return per_group.sum() * 0.0
    ucls, cidx = torch.unique(seg.group_class, return_inverse=True)
    nc = ucls.numel()
    per_class, _ = _group_mean(per_group, cidx, nc)
    return per_class.mean()


def segment_means(x: Tensor, seg: Segments, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-segment (weighted) means of rows of ``x (M, E)``; returns ``(mu (K+1, E), wsum (K+1,))``."""
    k1 = seg.num + 1
    if weights is None:
        wsum = torch.bincount(seg.index, minlength=k1).to(x.dtype)
        sums = x.new_zeros(k1, x.shape[1]).index_add_(0, seg.index, x)
    else:
        wsum = x.new_zeros(k1).index_add_(0, seg.index, weights)
        sums = x.new_zeros(k1, x.shape[1]).index_add_(0, seg.index, x * weights.unsqueeze(1))
    return sums / wsum.clamp_min(1e-12).unsqueeze(1), wsum


def push_term(mu: Tensor, seg: Segments, margin: float) -> Tensor:
    """Per-group ``mean_{k != l} relu(margin - |mu_k - mu_l|)^2`` (0 for groups with < 2 instances)."""
    g, kmax = seg.num_groups, seg.kmax
    if g == 0 or kmax < 2:
        return mu.new_zeros(g) + mu.sum() * 0.0
    padded = mu.new_zeros(g, kmax, mu.shape[1])
    padded = padded.index_put((seg.group, seg.rank), mu)
    valid = torch.zeros(g, kmax, dtype=torch.bool, device=mu.device)
    valid[seg.group, seg.rank] = True
    d = pairwise_distance(padded)
    pair = valid.unsqueeze(2) & valid.unsqueeze(1)
    pair &= ~torch.eye(kmax, dtype=torch.bool, device=mu.device)
    h = torch.relu(margin - d).pow(2) * pair
    n = valid.sum(1).to(mu.dtype)
    return h.sum((1, 2)) / (n * (n - 1)).clamp_min(1)


def discriminative_terms(
    emb: Tensor,
    seg: Segments,
    *,
    delta_v: float,
    delta_d: float,
    weights: Tensor | None = None,
    push_margin: float | None = None,
) -> dict[str, Tensor]:
    """Pull / push / norm terms of the discriminative loss, all instances at once.

    Parameters
    ----------
    emb : Tensor
        ``(M, E)`` per-voxel embeddings, rows aligned with ``seg.index``.
    seg : Segments
    delta_v, delta_d : float
        Pull margin and push half-margin (push margin ``2 * delta_d`` unless ``push_margin``).
    weights : Tensor, optional
        ``(M,)`` positive voxel weights: weighted centres and weighted-mean pull per instance.

    Returns
    -------
    dict
        ``pull``, ``push``, ``norm`` scalars and ``mu`` ``(K, E)`` instance centres.
    """
    mu_all, wsum = segment_means(emb, seg, weights)
    # index_select's backward is an index_add (fast); advanced indexing's is an accumulating
    # index_put, ~3x slower on CPU at 1M rows
    dist = torch.linalg.vector_norm(emb - mu_all.index_select(0, seg.index), dim=1)
    h = torch.relu(dist - delta_v).pow(2)
    if weights is not None:
        h = h * weights
    k = seg.num
    pull_k = emb.new_zeros(k + 1).index_add_(0, seg.index, h)[:k] / wsum[:k].clamp_min(1e-12)
    mu = mu_all[:k]
    pull_g, _ = _group_mean(pull_k, seg.group, seg.num_groups)
    norm_g, _ = _group_mean(torch.linalg.vector_norm(mu, dim=1), seg.group, seg.num_groups)
    margin = 2.0 * delta_d if push_margin is None else push_margin
    push_g = push_term(mu, seg, margin)
    zero = emb.sum() * 0.0  # keeps the graph (zero gradients) when there are no instances
    return {
        "pull": reduce_groups(pull_g, seg) + zero,
        "push": reduce_groups(push_g, seg) + zero,
        "norm": reduce_groups(norm_g, seg) + zero,
        "mu": mu,
    }
