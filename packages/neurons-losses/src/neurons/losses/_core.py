"""Shared machinery: exceptions, segment (per-instance) reductions, pairwise distances.

Everything here is vectorised over instances: a batch of label maps is flattened to one
global *segment index* (one segment per (sample, id) pair, or per (sample, class, id) when
instances are split by semantic class), and per-instance statistics are segment reductions
(``index_add_`` / ``scatter_reduce``).  No Python loop runs over instances.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "LossError",
    "LossConfigError",
    "LossInputError",
    "LossInputWarning",
    "check_prediction",
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


class LossInputWarning(RuntimeWarning):
    """A prediction holds NaN/inf values: the loss is computed (and is not finite) so mixed-precision
    loss scaling can skip the step; ``warnings.simplefilter("error", LossInputWarning)`` makes it
    an error."""


def check_prediction(x: Tensor, name: str) -> Tensor:
    """Validate a prediction ``(B, C, [D,] H, W)``: float, non-empty; warn on NaN/inf values.

    Raises
    ------
    LossInputError
        Not a float tensor of 4 or 5 dimensions, or an empty batch / channel / spatial axis.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() not in (4, 5):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise LossInputError(f"{name}: expected a float tensor (B, C, [D,] H, W), got {shape}")
    if x.numel() == 0:
        what = "empty batch" if x.shape[0] == 0 else "an empty channel or spatial axis"
        raise LossInputError(
            f"{name}: {what} (shape {tuple(x.shape)}); expected at least one sample with "
            "non-empty (C, [D,] H, W)"
        )
    if not bool(torch.isfinite(x).all()):
        n = int((~torch.isfinite(x)).sum())
        warnings.warn(
            f"{name}: {n} of {x.numel()} values are NaN/inf, so the loss is not finite (a diverged "
            "network or NaN input data)",
            LossInputWarning,
            stacklevel=3,
        )
    return x


def check_labels(
    labels: Tensor, name: str, spatial: tuple[int, ...] | None = None, batch: int | None = None
) -> Tensor:
    """Validate an integer label map ``(B, *spatial)`` (a ``(B, 1, *spatial)`` map is squeezed).

    ``batch``, when given, is the prediction's batch size: labels of another batch size (which
    would otherwise broadcast silently) raise :class:`LossInputError`, as does an empty batch.
    """
    if not isinstance(labels, Tensor):
        raise LossInputError(f"{name}: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() == 0 or labels.shape[0] == 0:
        raise LossInputError(
            f"{name}: empty batch (shape {tuple(labels.shape)}); expected (B, *spatial) with B >= 1"
        )
    if batch is not None and labels.shape[0] != batch:
        raise LossInputError(
            f"{name}: batch size {labels.shape[0]} (shape {tuple(labels.shape)}) does not match "
            f"the prediction's batch size {batch}"
        )
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


def _compact_values(flat: Tensor, limit: int) -> tuple[Tensor | None, Tensor, int]:
    """Codes ``inv`` in ``[0, n)`` for the integer values of ``flat`` (only values > 0 matter).

    Returns ``(uniq, inv, n)`` with ``flat == uniq[inv]`` wherever ``flat > 0``.  When
    ``max(flat) < limit`` the values are their own codes (``uniq`` None, ``n = max + 1``; no
    sort, negatives clamp to 0); otherwise ``uniq`` holds the sorted distinct values
    (``torch.unique``, exact for any int64 up to ``2**63 - 1``).
    """
    mx = int(flat.max().item()) if flat.numel() else 0
    if 0 <= mx < limit:
        return None, flat.clamp_min(0), mx + 1
    uniq, inv = torch.unique(flat, return_inverse=True)
    return uniq, inv, uniq.numel()


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
    batch = torch.arange(b, device=device).unsqueeze(1)
    # compact ids (exact for int64), then combine with the sample index without overflow;
    # small non-negative ids (the usual case) serve as their own codes, no sort needed
    if classes is None:
        group_key = batch.expand_as(flat)
        n_groups_dense = b
        cls_uniq = torch.zeros(1, dtype=torch.long, device=device)
    else:
        cflat = classes.reshape(b, -1).long()
        cfg = cflat > 0
        fg = fg & cfg
        cls_uniq, cinv, ncls = _compact_values(cflat, 1 << 16)
        if cls_uniq is None:
            cls_uniq = torch.arange(ncls, device=device)
        group_key = batch * ncls + cinv
        n_groups_dense = b * ncls
    uniq, inv, nu = _compact_values(flat, (4 * flat.numel() + (1 << 16)) // n_groups_dense)
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
    ids = ukey % nu if uniq is None else uniq[ukey % nu]
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


def _channel_rows(x: Tensor) -> Tensor:
    """``(B, C, *spatial) -> (B, C, N)`` (a view for contiguous input)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def segment_means(x: Tensor, seg: Segments, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-segment (weighted) means of a channel-first ``x (B, C, *spatial)``.

    Parameters
    ----------
    x : Tensor
        ``(B, C, *spatial)`` values, voxels aligned with ``seg.index`` (``B*N`` entries).
    seg : Segments
    weights : Tensor, optional
        ``(B*N,)`` positive voxel weights.

    Returns
    -------
    mu : Tensor
        ``(K+1, C)`` means (row ``K`` is the background slot).
    wsum : Tensor
        ``(K+1,)`` voxel count (or weight sum) per segment.

    Notes
    -----
    The reduction runs channel-first (``index_add`` along the voxel axis of each ``(C, N)``
    sample), so no ``(B*N, C)`` transposed copy of ``x`` is made; differentiable.
    """
    k1 = seg.num + 1
    xr = _channel_rows(x)
    b, c, n = xr.shape
    idx = seg.index.reshape(b, n)
    if weights is None:
        wsum = torch.bincount(seg.index, minlength=k1).to(x.dtype)
    else:
        wsum = x.new_zeros(k1).index_add_(0, seg.index, weights)
        xr = xr * weights.reshape(b, 1, n)
    sums = x.new_zeros(c, k1)
    for i in range(b):  # over samples, not instances
        sums = sums.index_add(1, idx[i], xr[i])
    return (sums / wsum.clamp_min(1e-12)).T, wsum


class _CentreDistance(torch.autograd.Function):
    """Segment centres and every voxel's distance to its own centre, channel-first, fused.

    ``forward(x (B, E, N), idx (B, N), wsum (K+1,), w (B, N) | None) -> (mu (E, K+1), d (B, N))``
    with ``mu_k = sum_{i in k} w_i x_i / wsum_k`` and ``d_i = |x_i - mu_{idx_i}|``.  The
    backward is written out: ``grad x_i = c_i r_i + w_i / wsum_k (g_mu_k - sum_{j in k} c_j r_j)``
    with ``r = x - mu``, ``c = g_d / d`` (0 where ``d = 0``: the zero subgradient, no NaN).
    It allocates two ``(B, E, N)`` buffers in all instead of the half-dozen of the autograd graph.
    """

    @staticmethod
    def forward(ctx, x: Tensor, idx: Tensor, wsum: Tensor, w: Tensor | None):  # type: ignore[override]
        b, e, n = x.shape
        sums = x.new_zeros(e, wsum.numel())
        for i in range(b):  # over samples, not instances
            sums.index_add_(1, idx[i], x[i] if w is None else x[i] * w[i])
        mu = sums / wsum.clamp_min(1e-12)
        r = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        for i in range(b):
            torch.index_select(mu, 1, idx[i], out=r[i])
        torch.sub(x, r, out=r)
        d = r[:, 0] * r[:, 0]
        for c in range(1, e):  # channel loop: no (B, E, N) temporary
            d.addcmul_(r[:, c], r[:, c])
        d.sqrt_()
        ctx.save_for_backward(r, d, idx, wsum, w)
        return mu, d

    @staticmethod
    def backward(ctx, g_mu: Tensor | None, g_d: Tensor | None):  # type: ignore[override]
        r, d, idx, wsum, w = ctx.saved_tensors
        b, e, n = r.shape
        if g_d is None:
            g_d = torch.zeros_like(d)
        c = torch.where(d > 0, g_d / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(d))
        gx = r * c.unsqueeze(1)
        s = r.new_zeros(e, wsum.numel())
        for i in range(b):
            s.index_add_(1, idx[i], gx[i])
        gm = -s if g_mu is None else g_mu - s
        gm = gm / wsum.clamp_min(1e-12)
        buf = r.new_empty(e, n)
        for i in range(b):
            torch.index_select(gm, 1, idx[i], out=buf)
            if w is not None:
                buf.mul_(w[i])
            gx[i].add_(buf)
        return gx, None, None, None


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
        ``(B, E, *spatial)`` (or ``(B, E, N)``) channel-first embeddings, voxels aligned with
        ``seg.index``; no transposed copy is made.
    seg : Segments
    delta_v, delta_d : float
        Pull margin and push half-margin (push margin ``2 * delta_d`` unless ``push_margin``).
    weights : Tensor, optional
        ``(B*N,)`` positive voxel weights: weighted centres and weighted-mean pull per instance.

    Returns
    -------
    dict
        ``pull``, ``push``, ``norm`` scalars and ``mu`` ``(K, E)`` instance centres.
    """
    xr = _channel_rows(emb)
    bsz, _, n = xr.shape
    k = seg.num
    if weights is None:
        wsum = torch.bincount(seg.index, minlength=k + 1).to(xr.dtype)
    else:
        wsum = xr.new_zeros(k + 1).index_add_(0, seg.index, weights)
    w2 = None if weights is None else weights.reshape(bsz, n)
    mu_t, dist = _CentreDistance.apply(xr, seg.index.reshape(bsz, n), wsum, w2)
    h = torch.relu(dist.reshape(-1) - delta_v).pow(2)
    if weights is not None:
        h = h * weights
    pull_k = xr.new_zeros(k + 1).index_add_(0, seg.index, h)[:k] / wsum[:k].clamp_min(1e-12)
    mu = mu_t.T[:k]
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
