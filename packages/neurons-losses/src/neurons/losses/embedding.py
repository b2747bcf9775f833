"""Embedding losses: centroid (discriminative) and skeleton (offset) embeddings."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import targets as T
from ._core import (
    LossConfigError,
    LossInputError,
    as_float,
    check_labels,
    check_prediction,
    discriminative_terms,
    full_precision,
    push_term,
    reduce_groups,
    segment_instances,
    segment_means,
)

__all__ = ["CentroidEmbeddingLoss", "SkeletonEmbeddingLoss", "regression", "masked_mean"]

_KINDS = {"mse": "mse", "l2": "mse", "l1": "l1", "mae": "l1", "smooth_l1": "smooth_l1",
          "huber": "smooth_l1"}


def _kind(name: str, what: str) -> str:
    key = str(name).lower().replace("-", "_")
    if key not in _KINDS:
        raise LossConfigError(f"{what}={name!r}: expected one of {sorted(_KINDS)}")
    return _KINDS[key]


def regression(pred: Tensor, target: Tensor, kind: str, beta: float = 1.0) -> Tensor:
    """Elementwise ``mse`` / ``l1`` / ``smooth_l1`` (no reduction)."""
    if kind == "mse":
        return (pred - target).pow(2)
    if kind == "l1":
        return (pred - target).abs()
    return F.smooth_l1_loss(pred, target, reduction="none", beta=beta)


def masked_mean(elem: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``elem (B, C, *sp)`` over masked voxels and channels per sample, then over the
    samples whose mask is not empty (0 when all are empty; the graph is kept)."""
    b, c = elem.shape[:2]
    m = mask.to(elem.dtype).reshape(b, 1, -1)
    per = (elem.reshape(b, c, -1) * m).sum((1, 2))
    n = m.sum((1, 2)) * c
    ok = (n > 0).to(elem.dtype)
    return (per / n.clamp_min(1) * ok).sum() / ok.sum().clamp_min(1)


def _check_pred(x: Tensor, name: str) -> Tensor:
    return check_prediction(x, name)


class CentroidEmbeddingLoss(nn.Module):
    """Discriminative embedding loss (De Brabandere et al. 2017), vectorised over instances.

    ``L = w_pull * mean_k mean_{i in k} relu(|e_i - mu_k| - delta_v)^2
    + w_push * mean_{k != l} relu(2 delta_d - |mu_k - mu_l|)^2 + w_norm * mean_k |mu_k|``,
    each term averaged per sample over its instances, then over samples with instances.
    Optional bias-free projection heads decode geometry from the embedding: ``proj_dir`` E->S
    (unit direction to the centroid or nearest skeleton voxel), ``proj_cov`` E->S*S (EDT
    structure tensor), both regressed with MSE on foreground voxels, and ``proj_raw`` E->4
    (``sigmoid`` vs ``[img, img, img, fg]`` on every voxel).

    Parameters
    ----------
    delta_v, delta_d : float
        Pull margin (0.5) and push half-margin (1.5).
    w_pull, w_push, w_norm : float
        Term weights (1, 1, 0.001).
    embedding_dim : int, optional
        E; required when a projection weight is > 0.
    spatial_dims : {2, 3}
        S for the projection heads.
    w_dir, w_cov, w_raw : float
        Projection-head weights (0 = head disabled).
    dir_target : {"centroid", "skeleton"}

    Examples
    --------
    >>> loss = CentroidEmbeddingLoss()
    >>> out = loss(torch.randn(2, 8, 16, 16), torch.randint(0, 4, (2, 16, 16)))
    >>> sorted(out)
    ['loss', 'norm', 'pull', 'push']
    """

    def __init__(
        self,
        delta_v: float = 0.5,
        delta_d: float = 1.5,
        w_pull: float = 1.0,
        w_push: float = 1.0,
        w_norm: float = 0.001,
        *,
        embedding_dim: int | None = None,
        spatial_dims: int = 3,
        w_dir: float = 0.0,
        w_cov: float = 0.0,
        w_raw: float = 0.0,
        dir_target: str = "centroid",
    ) -> None:
        super().__init__()
        if dir_target not in ("centroid", "skeleton"):
            raise LossConfigError(f"dir_target={dir_target!r}: expected 'centroid' or 'skeleton'")
        if spatial_dims not in (2, 3):
            raise LossConfigError(f"spatial_dims={spatial_dims!r}: expected 2 or 3")
        if delta_v < 0 or delta_d < 0:
            raise LossConfigError(f"delta_v={delta_v}, delta_d={delta_d}: expected >= 0")
        self.delta_v, self.delta_d = float(delta_v), float(delta_d)
        self.w_pull, self.w_push, self.w_norm = float(w_pull), float(w_push), float(w_norm)
        self.w_dir, self.w_cov, self.w_raw = float(w_dir), float(w_cov), float(w_raw)
        self.dir_target, self.spatial_dims = dir_target, spatial_dims
        need = self.w_dir > 0 or self.w_cov > 0 or self.w_raw > 0
        if need and embedding_dim is None:
            raise LossConfigError("embedding_dim is required when w_dir, w_cov or w_raw > 0")
        s = spatial_dims
        self.proj_dir = nn.Linear(embedding_dim, s, bias=False) if self.w_dir > 0 else None
        self.proj_cov = nn.Linear(embedding_dim, s * s, bias=False) if self.w_cov > 0 else None
        self.proj_raw = nn.Linear(embedding_dim, 4, bias=False) if self.w_raw > 0 else None

    def forward(
        self,
        embedding: Tensor,
        labels: Tensor,
        image: Tensor | None = None,
        targets: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Compute the loss.

        Parameters
        ----------
        embedding : Tensor
            ``(B, E, *spatial)``.
        labels : Tensor
            ``(B, *spatial)`` (or ``(B, 1, *spatial)``) instance ids, 0 = background.
        image : Tensor, optional
            ``(B, 1, *spatial)`` in [0, 1], for the ``raw`` head.
        targets : mapping, optional
            Precomputed ``direction`` / ``structure`` (see :func:`targets.geometry_targets`).

        Returns
        -------
        dict
            ``loss``, ``pull``, ``push``, ``norm`` (+ ``dir``, ``cov``, ``raw`` when enabled).
        """
        _check_pred(embedding, "embedding")
        labels = check_labels(labels, "labels", tuple(embedding.shape[2:]), embedding.shape[0])
        with full_precision(embedding.device):
            emb = as_float(embedding)
            seg = segment_instances(labels)
            terms = discriminative_terms(emb, seg, delta_v=self.delta_v, delta_d=self.delta_d)
            out = {k: terms[k] for k in ("pull", "push", "norm")}
            loss = self.w_pull * out["pull"] + self.w_push * out["push"] + self.w_norm * out["norm"]
            heads = {"dir": self.proj_dir, "cov": self.proj_cov, "raw": self.proj_raw}
            if any(h is not None for h in heads.values()):
                s = labels.dim() - 1
                if s != self.spatial_dims:
                    raise LossInputError(
                        f"labels: {s}-D patches but spatial_dims={self.spatial_dims}"
                    )
                tg = dict(targets or {})
                missing_dir = self.proj_dir is not None and "direction" not in tg
                missing_cov = self.proj_cov is not None and "structure" not in tg
                if missing_dir or missing_cov:
                    tg.update(T.geometry_targets(labels, dir_target=self.dir_target,
                                                 direction=missing_dir, structure=missing_cov))
                fg = labels > 0
                w = {"dir": self.w_dir, "cov": self.w_cov, "raw": self.w_raw}
                for name, head in heads.items():
                    if head is None:
                        continue
                    pred = head(emb.movedim(1, -1)).movedim(-1, 1)
                    if name == "raw":
                        if image is None:
                            raise LossInputError("image is required when w_raw > 0")
                        tgt = T.geometry_targets(labels, image, direction=False,
                                                 structure=False)["raw"]
                        val = masked_mean((torch.sigmoid(pred) - tgt).pow(2), torch.ones_like(fg))
                    else:
                        tgt = tg["direction" if name == "dir" else "structure"].to(pred.dtype)
                        val = masked_mean((pred - tgt).pow(2), fg)
                    out[name] = val
                    loss = loss + w[name] * val
            out["loss"] = loss
        return {"loss": out.pop("loss"), **out}


def _sample_own(field: Tensor, labels: Tensor, pos: Tensor) -> Tensor:
    """Multilinear interpolation of ``field (B, *sp)`` at ``pos (B, S, *sp)`` (voxel coords,
    array order, align-corners convention), where corner voxels of another label than the
    sampling voxel's own, or outside the patch, contribute 0.  Differentiable in ``pos``."""
    b, spatial = labels.shape[0], labels.shape[1:]
    s = len(spatial)
    n = math.prod(spatial)
    p = pos.movedim(1, -1).reshape(-1, s)
    base = torch.floor(p.detach())
    frac = p - base
    base = base.long()
    own = labels.reshape(-1)
    boff = (torch.arange(b, device=labels.device) * n).repeat_interleave(n)
    ff = field.reshape(-1)
    dims = torch.tensor(spatial, device=labels.device)
    strides = torch.tensor([math.prod(spatial[a + 1:]) for a in range(s)], device=labels.device)
    out = torch.zeros_like(frac[:, 0])
    for corner in itertools.product((0, 1), repeat=s):  # 2^S corners, vectorised over voxels
        c = torch.tensor(corner, device=labels.device)
        idx = base + c
        inside = ((idx >= 0) & (idx < dims)).all(1)
        flat = boff + (idx.clamp_min(0).minimum(dims - 1) * strides).sum(1)
        ok = inside & (own[flat] == own)
        wgt = torch.where(c.bool(), frac, 1 - frac).prod(1)
        out = out + wgt * torch.where(ok, ff[flat], torch.zeros_like(wgt))
    return out.reshape(b, *spatial)


class SkeletonEmbeddingLoss(nn.Module):
    """Offset-field loss pulling every voxel onto its instance's skeleton.

    With ``e_i = x_i + o_i`` (voxel coordinates, array order) and foreground ``FG``:
    ``pull = sum_FG |e_i - s_i|^2 / |FG|`` (``s_i`` nearest same-instance skeleton voxel);
    ``penalty = sum_FG (1 - cos(o_i, grad D_i)) / |FG|``; ``benefit = sum_FG (1 - Dn(e_i)) / |FG|``
    with ``Dn`` the normalised EDT sampled multilinearly *from the voxel's own instance only*
    (a neighbour's ridge earns nothing); ``push`` = per sample mean over instance pairs of
    ``relu(delta_push - |mu_k - mu_l|)^2`` (``mu`` = mean of ``e`` per instance), averaged over
    samples with instances.  ``loss = w_pull pull + w_push push + w_penalty penalty
    + w_benefit benefit``.

    Examples
    --------
    >>> loss = SkeletonEmbeddingLoss()
    >>> out = loss(torch.zeros(1, 2, 12, 12, requires_grad=True), torch.randint(0, 3, (1, 12, 12)))
    >>> sorted(out)
    ['benefit', 'loss', 'penalty', 'pull', 'push']
    """

    def __init__(
        self,
        delta_push: float = 20.0,
        w_pull: float = 1.0,
        w_push: float = 1.0,
        w_penalty: float = 1.0,
        w_benefit: float = 5.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.delta_push = float(delta_push)
        self.w_pull, self.w_push = float(w_pull), float(w_push)
        self.w_penalty, self.w_benefit = float(w_penalty), float(w_benefit)
        self.eps = float(eps)

    def forward(
        self,
        offsets: Tensor,
        labels: Tensor,
        targets: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Compute the loss.

        Parameters
        ----------
        offsets : Tensor
            ``(B, S, *spatial)`` predicted offsets (array axis order, voxels).
        labels : Tensor
            ``(B, *spatial)`` instance ids.
        targets : mapping, optional
            ``nearest``, ``edt_norm``, ``edt_grad`` from :func:`targets.skeleton_targets`;
            each missing one is computed here (``nearest`` from a supplied ``skeleton`` when
            given), supplied ones are used as they are.

        Returns
        -------
        dict
            ``loss``, ``pull``, ``push``, ``penalty``, ``benefit``.
        """
        _check_pred(offsets, "offsets")
        labels = check_labels(labels, "labels", tuple(offsets.shape[2:]), offsets.shape[0])
        s = labels.dim() - 1
        if offsets.shape[1] != s:
            raise LossInputError(
                f"offsets: {offsets.shape[1]} channels for {s}-D labels; expected {s}"
            )
        tg = T.skeleton_targets(labels, given=targets)  # supplied targets are kept as they are
        with full_precision(offsets.device):
            off = as_float(offsets)
            grid = T._coords(labels.shape[1:], labels.device, off.dtype).T
            grid = grid.reshape(1, s, *labels.shape[1:])
            e = grid + off
            fg = labels > 0
            nfg = fg.sum().clamp_min(1).to(off.dtype)
            fgf = fg.unsqueeze(1).to(off.dtype)
            pull = ((e - tg["nearest"].to(off.dtype)).pow(2) * fgf).sum() / nfg
            ou = off / torch.linalg.vector_norm(off, dim=1, keepdim=True).clamp_min(self.eps)
            g = tg["edt_grad"].to(off.dtype)
            gu = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(self.eps)
            penalty = ((1 - (ou * gu).sum(1)) * fg).sum() / nfg
            dn = _sample_own(tg["edt_norm"].to(off.dtype), labels, e)
            benefit = ((1 - dn) * fg).sum() / nfg
            seg = segment_instances(labels)
            mu, _ = segment_means(e, seg)
            push = reduce_groups(push_term(mu[: seg.num], seg, self.delta_push), seg) + off.sum() * 0
            loss = (self.w_pull * pull + self.w_push * push + self.w_penalty * penalty
                    + self.w_benefit * benefit)
        return {"loss": loss, "pull": pull, "push": push, "penalty": penalty, "benefit": benefit}
