"""Semantic, instance and geometry losses, and the Vista loss that combines them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
    discriminative_terms,
    full_precision,
    segment_instances,
)
from .affinity import AffinityLoss
from .embedding import (
    CentroidEmbeddingLoss,
    SkeletonEmbeddingLoss,
    _check_pred,
    _kind,
    masked_mean,
    regression,
)

__all__ = ["partial_label_mask", "SemanticLoss", "InstanceLoss", "GeometryLoss", "VistaLoss", "Vista2DLoss",
           "Vista3DLoss"]


def partial_label_mask(
    semantic_ids: Tensor | None, b: int, c: int, device: torch.device, mode: str = "softmax"
) -> Tensor:
    """Per-sample channel mask ``(B, C)`` bool of the classes a loss may supervise.

    ``semantic_ids (B, n)`` flags the classes a sample's dataset annotates (channels ``>= n``
    count as annotated: the label space has room for classes no dataset uses yet).  In
    ``"sigmoid"`` mode the background channel is dropped too for a sample that leaves any class
    unannotated: its "background" voxels may belong to such a class (a MitoEM2 voxel labelled 0
    may be inside a neuron), so "not background" is unknown there.

    Examples
    --------
    >>> partial_label_mask(torch.tensor([[1, 0, 0, 1, 1]]), 1, 6, torch.device("cpu")).tolist()
    [[True, False, False, True, True, True]]
    >>> partial_label_mask(torch.tensor([[1, 0, 0, 1, 1]]), 1, 5, torch.device("cpu"), "sigmoid").tolist()
    [[False, False, False, True, True]]
    """
    keep = torch.ones(b, c, device=device, dtype=torch.bool)
    if semantic_ids is None:
        return keep
    sid = torch.as_tensor(semantic_ids, device=device).reshape(b, -1)
    n = min(sid.shape[1], c)
    keep[:, :n] = sid[:, :n] > 0
    if mode == "sigmoid" and n > 1:
        keep[:, 0] = keep[:, 0] & (sid[:, :n] > 0).all(1)
    return keep


class SemanticLoss(nn.Module):
    """Semantic segmentation loss: CE (sigmoid multi-label BCE or softmax CE) + soft Dice/IoU.

    * ``mode="sigmoid"``: integer labels are one-hot encoded to C channels (or a float
      ``(B, C, *sp)`` multi-hot target is used as is); BCE-with-logits averaged over valid
      voxels and annotated channels; ``class_weights`` weight each *channel* (not ``pos_weight``).
    * ``mode="softmax"``: cross entropy with ``class_weights`` (weighted mean, as PyTorch).
    * Soft Dice ``1 - mean (2I + eps)/(P + T + eps)`` and soft IoU ``1 - mean (I + eps)/(P + T - I
      + eps)`` over the (sample, class) pairs whose class is present in the target (absent
      classes would add a constant ~1 with no gradient), ``eps = 1e-5``.
    * Voxels labelled ``ignore_index`` (255) are excluded everywhere.
    * Partial labels: ``semantic_ids (B, n)`` (1 = the sample's dataset annotates class c, see
      :func:`partial_label_mask`).  ``softmax``: the unannotated classes are left out of that
      sample's softmax (CE and Dice renormalise over the annotated classes), so their logits
      get exactly zero gradient and predicting one of them costs nothing.  ``sigmoid``: their
      channels (and the background channel of such a sample) are masked out of BCE and Dice.
      A voxel labelled with an unannotated class is ignored.

    ``loss = weight_ce * ce + weight_dice * dice + weight_iou * iou``.

    Examples
    --------
    >>> out = SemanticLoss(weight_dice=1.0)(torch.randn(2, 5, 8, 8), torch.randint(0, 5, (2, 8, 8)))
    >>> sorted(out)
    ['ce', 'dice', 'iou', 'loss']
    """

    def __init__(
        self,
        mode: str = "sigmoid",
        weight_ce: float = 1.0,
        weight_dice: float = 0.0,
        weight_iou: float = 0.0,
        class_weights: Sequence[float] | Tensor | None = None,
        ignore_index: int = 255,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if mode not in ("sigmoid", "softmax"):
            raise LossConfigError(f"mode={mode!r}: expected 'sigmoid' or 'softmax'")
        self.mode = mode
        self.weight_ce, self.weight_dice, self.weight_iou = map(
            float, (weight_ce, weight_dice, weight_iou)
        )
        self.ignore_index, self.eps = int(ignore_index), float(eps)
        cw = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", cw, persistent=False)

    def forward(
        self, logits: Tensor, labels: Tensor, semantic_ids: Tensor | None = None
    ) -> dict[str, Tensor]:
        """``logits (B, C, *sp)``, ``labels (B, *sp)`` int (or ``(B, C, *sp)`` float multi-hot)."""
        _check_pred(logits, "semantic logits")
        b, c = logits.shape[:2]
        spatial = tuple(logits.shape[2:])
        cw = self.class_weights
        if cw is not None and cw.numel() != c:
            raise LossConfigError(
                f"class_weights has {cw.numel()} entries but the logits have {c} channels"
            )
        with full_precision(logits.device):
            x = as_float(logits)
            if labels.is_floating_point():
                if tuple(labels.shape) != tuple(x.shape):
                    raise LossInputError(
                        f"semantic: float target shape {tuple(labels.shape)} != logits "
                        f"{tuple(x.shape)}"
                    )
                if self.mode == "softmax":
                    raise LossInputError("semantic: softmax mode needs integer labels")
                onehot = labels.to(x.dtype)
                valid = torch.ones((b, *spatial), dtype=torch.bool, device=x.device)
                lab = None
            else:
                lab = check_labels(labels, "semantic", spatial, b)
                valid = lab != self.ignore_index
                bad = valid & ((lab < 0) | (lab >= c))
                if bool(bad.any()):
                    v = int(lab[bad][0])
                    raise LossInputError(
                        f"semantic: label {v} outside [0, {c}) (and not ignore_index="
                        f"{self.ignore_index}) for logits with {c} channels"
                    )
                lab = torch.where(valid, lab, torch.zeros_like(lab))
                onehot = F.one_hot(lab, c).movedim(-1, 1).to(x.dtype)
            cmask = partial_label_mask(semantic_ids, b, c, x.device, self.mode).to(x.dtype)
            shape = (b, c) + (1,) * len(spatial)
            if lab is not None and semantic_ids is not None:
                # a voxel labelled with a class its sample does not annotate carries no label
                known = cmask.gather(1, lab.reshape(b, -1)).reshape(lab.shape) > 0
                if self.mode == "sigmoid":
                    known = known | (lab == 0)  # bg label: its channel may be masked, not the rest
                valid = valid & known
                lab = torch.where(valid, lab, torch.zeros_like(lab))
            vm = valid.unsqueeze(1).to(x.dtype)
            if self.mode == "softmax" and semantic_ids is not None:
                # partial labels: the unannotated classes leave this sample's softmax, so their
                # logits get exactly zero gradient and predicting them costs nothing
                keep = cmask.reshape(shape) > 0
                floor = x.detach().amin() - 1e4  # exp(floor - max) == 0 exactly, and finite
                x = torch.where(keep, x, floor)
            if self.mode == "sigmoid":
                bce = F.binary_cross_entropy_with_logits(x, onehot, reduction="none")
                m = vm * cmask.reshape(shape)
                w = m if cw is None else m * cw.to(x.dtype).reshape(1, c, *(1,) * len(spatial))
                ce = (bce * w).sum() / m.sum().clamp_min(1)
                probs = torch.sigmoid(x)
            else:
                logp = F.log_softmax(x, 1)
                nll = -logp.gather(1, lab.unsqueeze(1)).squeeze(1)  # type: ignore[union-attr]
                wt = valid.to(x.dtype)
                if cw is not None:
                    wt = wt * cw.to(x.dtype)[lab]
                ce = (nll * wt).sum() / wt.sum().clamp_min(1e-12)
                probs = logp.exp()
            zero = x.sum() * 0.0
            dice = iou = zero
            if self.weight_dice > 0 or self.weight_iou > 0:
                p = (probs * vm).reshape(b, c, -1)
                t = (onehot * vm).reshape(b, c, -1)
                inter = (p * t).sum(-1)
                ps, ts = p.sum(-1), t.sum(-1)
                present = ((ts > 0).to(x.dtype) * cmask)
                npres = present.sum().clamp_min(1)
                d = (2 * inter + self.eps) / (ps + ts + self.eps)
                j = (inter + self.eps) / (ps + ts - inter + self.eps)
                anyp = (present.sum() > 0).to(x.dtype)
                dice = (1 - (d * present).sum() / npres) * anyp + zero
                iou = (1 - (j * present).sum() / npres) * anyp + zero
            loss = self.weight_ce * ce + self.weight_dice * dice + self.weight_iou * iou
        return {"loss": loss, "ce": ce, "dice": dice, "iou": iou}


def instance_weights(
    labels: Tensor, weight_edge: float, weight_bone: float, seg=None
) -> Tensor | None:
    """Voxel weights ``(1 + boundary (w_edge - 1)) * (1 + Dnorm (w_bone - 1))`` as ``(B*N,)``.

    ``boundary`` is the morphological gradient of the label map, ``Dnorm`` the per-instance
    normalised EDT.  Returns None when both weights are 1.
    """
    if weight_edge == 1 and weight_bone == 1:
        return None
    seg = segment_instances(labels) if seg is None else seg
    w = torch.ones(labels.shape, device=labels.device)
    if weight_edge != 1:
        w = w * (1 + T.boundary_map(labels, seg).float() * (weight_edge - 1))
    if weight_bone != 1:
        w = w * (1 + T.normalized_edt(labels, seg=seg) * (weight_bone - 1))
    return w.reshape(-1)


class InstanceLoss(nn.Module):
    """Weighted discriminative loss on the instance embedding (boundary and depth weighting).

    Voxel weights ``w = (1 + B (weight_edge - 1)) (1 + Dn (weight_bone - 1))`` (``B`` boundary
    map, ``Dn`` per-instance normalised EDT).  Per instance k: ``mu_k = sum w e / sum w``;
    ``pull_k = sum_{i in k} w_i relu(|e_i - mu_k| - delta_v)^2 / sum_{i in k} w_i`` (a weighted
    mean, so the weights shape but do not rescale the loss); push and norm as in
    :class:`CentroidEmbeddingLoss`.  With ``semantic`` given, instances are split by class
    (classes > 0, ``ignore_index`` dropped): push acts only within a class, terms are averaged
    over the samples holding a class, then over classes — in one vectorised pass.

    Examples
    --------
    >>> out = InstanceLoss()(torch.randn(2, 8, 16, 16), torch.randint(0, 4, (2, 16, 16)))
    >>> sorted(out)
    ['loss', 'norm', 'pull', 'push']
    """

    def __init__(
        self,
        weight_pull: float = 1.0,
        weight_push: float = 1.0,
        weight_norm: float = 0.001,
        weight_edge: float = 10.0,
        weight_bone: float = 10.0,
        delta_v: float = 0.5,
        delta_d: float = 1.5,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if weight_edge < 1 or weight_bone < 1:
            raise LossConfigError(
                f"weight_edge={weight_edge}, weight_bone={weight_bone}: expected >= 1"
            )
        self.weight_pull, self.weight_push, self.weight_norm = map(
            float, (weight_pull, weight_push, weight_norm)
        )
        self.weight_edge, self.weight_bone = float(weight_edge), float(weight_bone)
        self.delta_v, self.delta_d = float(delta_v), float(delta_d)
        self.ignore_index = int(ignore_index)

    def forward(
        self,
        embedding: Tensor,
        labels: Tensor,
        semantic: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``embedding (B, E, *sp)``, ``labels (B, *sp)`` ids, optional ``semantic (B, *sp)``;
        ``weights (B, *sp)``: precomputed :func:`instance_weights` (e.g. by the data pipeline)."""
        _check_pred(embedding, "instance embedding")
        spatial = tuple(embedding.shape[2:])
        labels = check_labels(labels, "instance", spatial, embedding.shape[0])
        classes = None
        if semantic is not None:
            sem = check_labels(semantic, "semantic", spatial, embedding.shape[0])
            classes = torch.where(sem == self.ignore_index, torch.zeros_like(sem), sem)
        with full_precision(embedding.device):
            emb = as_float(embedding)
            seg = segment_instances(labels, classes)
            if weights is not None:
                w = weights.reshape(-1)
            else:
                w = instance_weights(labels, self.weight_edge, self.weight_bone,
                                     seg if classes is None else None)
            terms = discriminative_terms(
                emb, seg, delta_v=self.delta_v, delta_d=self.delta_d,
                weights=None if w is None else w.to(emb.dtype),
            )
            loss = (self.weight_pull * terms["pull"] + self.weight_push * terms["push"]
                    + self.weight_norm * terms["norm"])
        return {"loss": loss, "pull": terms["pull"], "push": terms["push"], "norm": terms["norm"]}


class GeometryLoss(nn.Module):
    """Supervises the geometry head ``(B, S + S*S + 4, *sp)``: direction, structure tensor, RGBA.

    ``dir``: ``[0:S]`` vs the unit direction to the centroid / nearest skeleton voxel;
    ``cov``: ``[S:S+S*S]`` vs the EDT structure tensor; both on foreground voxels, averaged over
    voxels and channels per sample then over samples with foreground.  ``raw``:
    ``sigmoid([S+S*S:])`` vs ``[img, img, img, fg]`` on *every* voxel (so alpha learns the
    foreground; needs ``image`` when ``weight_raw > 0``, else :class:`LossInputError`).
    Each term's ``loss_*`` is ``mse`` | ``l1`` | ``smooth_l1`` (aliases ``l2``, ``mae``,
    ``huber``).  ``loss = weight_dir dir + weight_cov cov + weight_raw raw``.

    Examples
    --------
    >>> geo, lab = torch.randn(1, 2 + 4 + 4, 12, 12), torch.randint(0, 3, (1, 12, 12))
    >>> out = GeometryLoss()(geo, lab, image=torch.rand(1, 1, 12, 12))
    >>> sorted(out)
    ['cov', 'dir', 'loss', 'raw']
    """

    def __init__(
        self,
        dir_target: str = "centroid",
        weight_dir: float = 1.0,
        weight_cov: float = 1.0,
        weight_raw: float = 1.0,
        loss_dir: str = "smooth_l1",
        loss_cov: str = "mse",
        loss_raw: str = "l1",
        smooth_l1_beta: float = 1.0,
        sigma: float = 5.0,
        sampling: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if dir_target not in ("centroid", "skeleton"):
            raise LossConfigError(f"dir_target={dir_target!r}: expected 'centroid' or 'skeleton'")
        self.dir_target = dir_target
        self.sampling = None if sampling is None else tuple(float(v) for v in sampling)
        self.weight_dir, self.weight_cov, self.weight_raw = map(
            float, (weight_dir, weight_cov, weight_raw)
        )
        self.loss_dir = _kind(loss_dir, "loss_dir")
        self.loss_cov = _kind(loss_cov, "loss_cov")
        self.loss_raw = _kind(loss_raw, "loss_raw")
        self.beta, self.sigma = float(smooth_l1_beta), float(sigma)

    def forward(
        self,
        geometry: Tensor,
        labels: Tensor,
        image: Tensor | None = None,
        targets: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Compute the loss; ``targets`` may carry precomputed ``direction`` / ``structure``."""
        _check_pred(geometry, "geometry")
        spatial = tuple(geometry.shape[2:])
        labels = check_labels(labels, "labels", spatial, geometry.shape[0])
        s = len(spatial)
        if geometry.shape[1] != s + s * s + 4:
            raise LossInputError(
                f"geometry: {geometry.shape[1]} channels; expected S + S*S + 4 = {s + s * s + 4} "
                f"for {s}-D input"
            )
        tg = dict(targets or {})
        need_dir = self.weight_dir > 0 and "direction" not in tg
        need_cov = self.weight_cov > 0 and "structure" not in tg
        if need_dir or need_cov:
            sampling = self.sampling[-s:] if self.sampling is not None else None
            tg.update(T.geometry_targets(labels, dir_target=self.dir_target, direction=need_dir,
                                         structure=need_cov, sigma=self.sigma, sampling=sampling))
        with full_precision(geometry.device):
            g = as_float(geometry)
            fg = labels > 0
            zero = g.sum() * 0.0
            out = {"dir": zero, "cov": zero, "raw": zero}
            if self.weight_dir > 0:
                e = regression(g[:, :s], tg["direction"].to(g.dtype), self.loss_dir, self.beta)
                out["dir"] = masked_mean(e, fg)
            if self.weight_cov > 0:
                e = regression(g[:, s:s + s * s], tg["structure"].to(g.dtype), self.loss_cov,
                               self.beta)
                out["cov"] = masked_mean(e, fg)
            if self.weight_raw > 0:
                if image is None:
                    raise LossInputError(
                        f"geometry: weight_raw={self.weight_raw} > 0 needs the raw image "
                        "(B, 1, *spatial) in [0, 1]; pass image=... or set weight_raw=0"
                    )
                raw = T.geometry_targets(labels, image, direction=False, structure=False)["raw"]
                e = regression(torch.sigmoid(g[:, s + s * s:]), raw.to(g.dtype), self.loss_raw,
                               self.beta)
                out["raw"] = masked_mean(e, torch.ones_like(fg))
            loss = (self.weight_dir * out["dir"] + self.weight_cov * out["cov"]
                    + self.weight_raw * out["raw"])
        return {"loss": loss, **out}


#: ``VistaLoss(instance=...)``: the weighted discriminative loss, the predecessor's centroid
#: embedding loss (with its projection heads) or the skeleton offset loss
INSTANCE_LOSSES = ("vista", "centroid", "skeleton")
#: precomputed :func:`targets.skeleton_targets` a batch may carry
SKELETON_KEYS = ("skeleton", "nearest", "edt_norm", "edt_grad")

_ALIASES = {"labels": "instance", "semantic_labels": "semantic", "raw_image": "image"}


class VistaLoss(nn.Module):
    """Total loss of the Vista models: semantic + instance (+ geometry) terms.

    ``forward(outputs, targets)`` with ``outputs`` = the model's dict (``semantic``,
    ``instance``, optional ``geometry``) and ``targets`` = the batch (``semantic``, ``instance``,
    optional ``image``, ``semantic_ids``).  Returns ``loss`` (differentiable total
    ``weight_semantic * loss_sem + weight_instance * loss_ins + weight_geometry * loss_geom``)
    and the terms ``loss_sem``, ``loss_sem/ce``, ``loss_sem/dice``, ``loss_sem/iou``,
    ``loss_ins``, ``loss_ins/pull``, ``loss_ins/push``, ``loss_ins/norm`` and, when geometry is
    enabled (``weight_geometry > 0``; a missing ``geometry`` output then raises
    :class:`LossInputError`), ``loss_geom``, ``loss_geom/dir``, ``loss_geom/cov``,
    ``loss_geom/raw``.  Precomputed geometry targets in the batch (``direction``,
    ``structure``, see :func:`targets.geometry_targets`) are passed to :class:`GeometryLoss`
    instead of being recomputed every step.  Unknown keyword arguments raise ``TypeError`` (typos never pass silently).

    Instance term (``instance``): ``"vista"`` (:class:`InstanceLoss`), ``"centroid"``
    (:class:`~neurons.losses.CentroidEmbeddingLoss` with the bias-free projection heads
    ``proj_dir`` / ``proj_cov`` / ``proj_raw`` decoding direction (``dir_target``), structure
    tensor and RGBA from the embedding, weighted by ``weight_dir`` / ``weight_cov`` /
    ``weight_raw``; needs ``embedding_dim`` and ``spatial_dims``) or ``"skeleton"``
    (:class:`~neurons.losses.SkeletonEmbeddingLoss`: the ``instance`` output is an ``S``-channel
    offset field; ``weight_pull`` / ``weight_push`` weigh its pull / push terms).  Every
    instance id is one segment, whatever the semantic classes of its voxels (a mitochondrion's
    rim and interior are pulled together); ``instance_per_class`` is accepted for old configs
    and has no effect.  Terms are logged as ``loss_ins/<term>``.  ``sampling`` (voxel size,
    array order) makes the geometry targets anisotropic.

    Affinity: with ``weight_affinity > 0`` the model's ``affinity`` logits are supervised by
    :class:`~neurons.losses.AffinityLoss` (targets from the ``instance`` labels for
    ``affinity_offsets``, pairs touching a voxel whose semantic label is ``ignore_index``
    masked out; ``affinity_bce`` / ``affinity_dice`` / ``affinity_balance`` configure it) and
    ``weight_affinity * loss_aff`` joins the total, with the terms ``loss_aff``,
    ``loss_aff/bce``, ``loss_aff/dice``.

    Examples
    --------
    >>> out = {"semantic": torch.randn(1, 16, 8, 8), "instance": torch.randn(1, 16, 8, 8)}
    >>> batch = {"semantic": torch.randint(0, 2, (1, 8, 8)), "instance": torch.randint(0, 3, (1, 8, 8))}
    >>> float(VistaLoss()(out, batch)["loss"]) > 0
    True
    """

    def __init__(
        self,
        weight_semantic: float = 1.0,
        weight_instance: float = 1.0,
        weight_geometry: float = 0.0,
        *,
        semantic_mode: str = "sigmoid",
        weight_ce: float = 1.0,
        weight_dice: float = 0.0,
        weight_iou: float = 0.0,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
        weight_pull: float = 1.0,
        weight_push: float = 1.0,
        weight_norm: float = 0.001,
        weight_edge: float = 10.0,
        weight_bone: float = 10.0,
        delta_v: float = 0.5,
        delta_d: float = 1.5,
        instance_per_class: bool = False,
        instance: str = "vista",
        embedding_dim: int | None = None,
        spatial_dims: int | None = None,
        sampling: Sequence[float] | None = None,
        dir_target: str = "centroid",
        weight_dir: float = 1.0,
        weight_cov: float = 1.0,
        weight_raw: float = 1.0,
        loss_dir: str = "smooth_l1",
        loss_cov: str = "mse",
        loss_raw: str = "l1",
        smooth_l1_beta: float = 1.0,
        sigma: float = 5.0,
        weight_affinity: float = 0.0,
        affinity_offsets: Sequence[Sequence[int]] | None = None,
        affinity_bce: float = 1.0,
        affinity_dice: float = 1.0,
        affinity_balance: bool = True,
    ) -> None:
        super().__init__()
        self.weight_affinity = float(weight_affinity)
        self.affinity = (
            AffinityLoss(affinity_offsets, affinity_bce, affinity_dice, affinity_balance)
            if self.weight_affinity > 0 else None
        )
        self.weight_semantic = float(weight_semantic)
        self.weight_instance = float(weight_instance)
        self.weight_geometry = float(weight_geometry)
        self.instance_per_class = bool(instance_per_class)  # kept for old configs: no effect
        if instance not in INSTANCE_LOSSES:
            raise LossConfigError(f"instance={instance!r}: expected one of {INSTANCE_LOSSES}")
        self.instance_kind = instance
        self.semantic = SemanticLoss(semantic_mode, weight_ce, weight_dice, weight_iou,
                                     class_weights, ignore_index)
        self.instance: nn.Module
        if instance == "centroid":
            self.instance = CentroidEmbeddingLoss(
                delta_v, delta_d, weight_pull, weight_push, weight_norm,
                embedding_dim=embedding_dim, spatial_dims=spatial_dims or 3, w_dir=weight_dir,
                w_cov=weight_cov, w_raw=weight_raw, dir_target=dir_target,
            )
        elif instance == "skeleton":
            self.instance = SkeletonEmbeddingLoss(w_pull=weight_pull, w_push=weight_push)
        else:
            self.instance = InstanceLoss(weight_pull, weight_push, weight_norm, weight_edge,
                                         weight_bone, delta_v, delta_d, ignore_index)
        self.geometry = (
            GeometryLoss(dir_target, weight_dir, weight_cov, weight_raw, loss_dir, loss_cov,
                         loss_raw, smooth_l1_beta, sigma, sampling)
            if self.weight_geometry > 0 else None
        )

    def forward(
        self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """Compute all terms; see the class docstring for the keys."""
        tg = {_ALIASES.get(k, k): v for k, v in targets.items()}
        for key in ("semantic", "instance"):
            if key not in tg:
                raise LossInputError(
                    f"targets: missing key {key!r} (got {sorted(targets)}); expected 'semantic' "
                    "and 'instance' label maps"
                )
        for key in ("semantic", "instance"):
            if key not in outputs:
                raise LossInputError(
                    f"outputs: missing key {key!r} (got {sorted(outputs)}); expected the model's "
                    "'semantic' logits and 'instance' embedding"
                )
        sem = self.semantic(outputs["semantic"], tg["semantic"], tg.get("semantic_ids"))
        ins = self._instance_terms(outputs["instance"], tg)
        total = self.weight_semantic * sem["loss"] + self.weight_instance * ins["loss"]
        out: dict[str, Tensor] = {}
        out["loss_sem"] = sem["loss"]
        for k in ("ce", "dice", "iou"):
            out[f"loss_sem/{k}"] = sem[k]
        out["loss_ins"] = ins["loss"]
        for k, v in ins.items():
            if k != "loss":
                out[f"loss_ins/{k}"] = v
        if self.geometry is not None:
            if outputs.get("geometry") is None:
                raise LossInputError(
                    f"outputs: weight_geometry={self.weight_geometry} > 0 but no 'geometry' "
                    f"prediction (got {sorted(outputs)}); enable the model's geometry head or "
                    "set weight_geometry=0"
                )
            image = tg.get("image")
            pre = {k: tg[k] for k in ("direction", "structure") if tg.get(k) is not None}
            geo = self.geometry(outputs["geometry"], tg["instance"], image, pre or None)
            total = total + self.weight_geometry * geo["loss"]
            out["loss_geom"] = geo["loss"]
            for k in ("dir", "cov", "raw"):
                out[f"loss_geom/{k}"] = geo[k]
        if self.affinity is not None:
            aff = self._affinity_terms(outputs, tg)
            total = total + self.weight_affinity * aff["loss"]
            out["loss_aff"] = aff["loss"]
            for k in ("bce", "dice"):
                out[f"loss_aff/{k}"] = aff[k]
        return {"loss": total, **out}


    def _instance_terms(self, embedding: Tensor, tg: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The selected instance loss; one segment per instance id (whatever its classes)."""
        if self.instance_kind == "vista":
            return self.instance(embedding, tg["instance"], weights=tg.get("instance_weights"))
        if self.instance_kind == "centroid":
            pre = {k: tg[k] for k in ("direction", "structure") if tg.get(k) is not None}
            return self.instance(embedding, tg["instance"], tg.get("image"), pre or None)
        pre = {k: tg[k] for k in SKELETON_KEYS if tg.get(k) is not None}
        return self.instance(embedding, tg["instance"], pre or None)

    def _affinity_terms(
        self, outputs: Mapping[str, Tensor], tg: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """:class:`AffinityLoss` of ``outputs["affinity"]``; ignored semantic voxels masked."""
        assert self.affinity is not None
        if outputs.get("affinity") is None:
            raise LossInputError(
                f"outputs: weight_affinity={self.weight_affinity} > 0 but no 'affinity' "
                f"prediction (got {sorted(outputs)}); use a model with an affinity head or set "
                "weight_affinity=0"
            )
        sem = tg["semantic"]
        mask = None
        if not sem.is_floating_point():
            ignore = self.semantic.ignore_index
            mask = (sem[:, 0] if sem.dim() == outputs["affinity"].dim() else sem) != ignore
        return self.affinity(outputs["affinity"], tg["instance"], mask=mask)


class Vista2DLoss(VistaLoss):
    """:class:`VistaLoss` under the predecessor's 2-D name (the dimension comes from the input)."""


class Vista3DLoss(VistaLoss):
    """:class:`VistaLoss` under the predecessor's 3-D name (the dimension comes from the input)."""
