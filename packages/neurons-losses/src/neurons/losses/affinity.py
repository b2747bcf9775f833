"""Affinity targets and the affinity loss (nearest-neighbour and long-range voxel pairs).

Channel ``k`` at voxel ``v`` describes the pair ``(v, v + offsets[k])``:

* target 1 ("connected") when both voxels carry the same non-zero instance id,
* target 0 ("cut") otherwise — across a boundary between two instances, between an instance and
  background, **and between two background voxels**: background (id 0) is connected to nothing,
  the boundary-style convention of the field (PyTorch Connectomics, torch-em, lsd), so the
  nearest-neighbour channels double as a boundary map and a decoder never merges background
  into one object,
* invalid (masked out of the loss) when ``v + offset`` leaves the patch, or either voxel is
  ignored (``ignore_label`` or ``mask`` False).

Everything is computed on the labels' device with one slice comparison per offset (no loop over
voxels or instances). Ids are only compared for equality, so any integer dtype works, including
uint64 ids above ``2**63`` (compared bit for bit; never cast through float).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._core import LossConfigError, LossInputError, as_float, full_precision

__all__ = ["affinity_targets", "AffinityLoss"]

_Offsets = Sequence[Sequence[int]]


def _check_offsets(offsets: _Offsets | None, ndim: int, where: str) -> tuple[tuple[int, ...], ...]:
    if offsets is None:
        raise LossInputError(f"{where}: no affinity offsets given (a list of {ndim}-tuples)")
    if isinstance(offsets, str | bytes) or not isinstance(offsets, Sequence) or not offsets:
        raise LossInputError(
            f"{where}: offsets = {offsets!r}: expected a non-empty list of {ndim}-tuples of int"
        )
    out = []
    for i, off in enumerate(offsets):
        if isinstance(off, str | bytes) or not isinstance(off, Sequence) or len(off) != ndim:
            raise LossInputError(
                f"{where}: offsets[{i}] = {off!r}: expected {ndim} integers for {ndim}-D labels"
            )
        if any(isinstance(v, bool) or int(v) != v for v in off):
            raise LossInputError(f"{where}: offsets[{i}] = {off!r}: entries must be integers")
        out.append(tuple(int(v) for v in off))
    return tuple(out)


def _as_id_tensor(labels: Tensor, name: str) -> Tensor:
    """Integer ids as a bit-exact int64 view (uint64 ids above 2**63 become negative, equal
    ids stay equal)."""
    if not isinstance(labels, Tensor):
        raise LossInputError(f"{name}: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise LossInputError(
            f"{name}: expected an integer id tensor, got dtype {labels.dtype} "
            "(ids must never be cast through float)"
        )
    if labels.dtype == torch.uint64:
        return labels.view(torch.int64)
    return labels.long()


def _ignore_as_int64(value: int) -> int:
    """An ignore label given as a uint64 value, in the int64 view used for comparisons."""
    v = int(value)
    if v >= 2**63:
        v -= 2**64
    if not -(2**63) <= v < 2**63:
        raise LossInputError(f"ignore_label={value}: outside the int64/uint64 range")
    return v


def _pair_slices(
    offset: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Slices ``(src, dst)`` with ``dst = src + offset`` inside ``shape`` (None: no pair fits)."""
    src, dst = [], []
    for o, n in zip(offset, shape, strict=True):
        if abs(o) >= n:
            return None
        if o >= 0:
            src.append(slice(0, n - o))
            dst.append(slice(o, n))
        else:
            src.append(slice(-o, n))
            dst.append(slice(0, n + o))
    return tuple(src), tuple(dst)


def affinity_targets(
    labels: Tensor,
    offsets: _Offsets,
    ignore_label: int | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Affinity targets and their validity mask from an instance label map.

    Parameters
    ----------
    labels : Tensor ``(B, *spatial)`` or ``(B, 1, *spatial)``
        Integer instance ids (any integer dtype, uint64 included), 0 = background.
    offsets : sequence of S-tuples of int
        Voxel offsets; channel ``k`` at ``v`` is the pair ``(v, v + offsets[k])``.
    ignore_label : int, optional
        Id of unannotated voxels; every pair touching one is invalid (may be a uint64 value
        such as ``2**64 - 1``).
    mask : Tensor ``(B, *spatial)`` bool, optional
        False marks unannotated voxels (e.g. ``semantic == 255``); pairs touching them are
        invalid.

    Returns
    -------
    targets : Tensor ``(B, K, *spatial)`` float32
        1 where both voxels hold the same non-zero id, else 0 (see the module docstring for
        background).
    valid : Tensor ``(B, K, *spatial)`` bool
        True where the pair lies inside the patch and neither voxel is ignored.

    Raises
    ------
    LossInputError
        Float/bool labels, offsets of the wrong length, a mask of another shape.

    Examples
    --------
    >>> ids = torch.tensor([[[1, 1, 2], [0, 0, 2]]])
    >>> t, v = affinity_targets(ids, [(0, -1), (-1, 0)])
    >>> t[0, 0].tolist(), v[0, 0].tolist()
    ([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [[False, True, True], [False, True, True]])
    """
    lab = _as_id_tensor(labels, "affinity_targets: labels")
    first = offsets[0] if isinstance(offsets, Sequence) and len(offsets) else None
    ndim = len(first) if isinstance(first, Sequence) else lab.dim() - 1
    if lab.dim() == ndim + 2 and lab.shape[1] == 1:  # (B, 1, *spatial)
        lab = lab[:, 0]
    if lab.dim() != ndim + 1 or ndim not in (2, 3):
        raise LossInputError(
            f"affinity_targets: labels of shape {tuple(labels.shape)} with {ndim}-D offsets: "
            "expected (B, H, W) or (B, D, H, W) (optionally with a singleton channel axis)"
        )
    spatial = tuple(lab.shape[1:])
    offs = _check_offsets(offsets, ndim, "affinity_targets")
    known = torch.ones_like(lab, dtype=torch.bool)
    if ignore_label is not None:
        known &= lab != _ignore_as_int64(ignore_label)
    if mask is not None:
        m = mask[:, 0] if mask.dim() == lab.dim() + 1 and mask.shape[1] == 1 else mask
        if tuple(m.shape) != tuple(lab.shape):
            raise LossInputError(
                f"affinity_targets: mask of shape {tuple(mask.shape)} does not match labels "
                f"{tuple(lab.shape)}"
            )
        known &= m.to(device=lab.device, dtype=torch.bool)
    fg = lab != 0
    b, k = lab.shape[0], len(offs)
    targets = torch.zeros((b, k, *spatial), dtype=torch.float32, device=lab.device)
    valid = torch.zeros((b, k, *spatial), dtype=torch.bool, device=lab.device)
    for i, off in enumerate(offs):  # one vectorised comparison per offset
        pair = _pair_slices(off, spatial)
        if pair is None:
            continue
        src, dst = ((slice(None), *s) for s in pair)
        same = (lab[src] == lab[dst]) & fg[src]
        targets[(slice(None), i, *pair[0])] = same.to(torch.float32)
        valid[(slice(None), i, *pair[0])] = known[src] & known[dst]
    return targets, valid


class AffinityLoss(nn.Module):
    """Masked, class-balanced BCE + soft Dice on affinity logits.

    Per offset channel ``k`` (pooled over the batch), over the valid pairs ``V_k``:

    * ``bce_k = sum_{V_k} w * BCE(logit, t) / |V_k|`` with class-balancing weights
      ``w = |V_k| / (n_classes_present * n_class)`` (``balance=True``): connected and cut
      pairs contribute equally however rare the boundaries are; a channel with one class only
      gets weight 1. ``balance=False``: plain mean.
    * ``dice_k``: soft Dice of ``p = sigmoid(logit)`` against ``t`` for the connected class
      **and** of ``1 - p`` against ``1 - t`` for the cut class, ``1 - (2 I + eps) / (P + T +
      eps)``, averaged over the (channel, class) pairs present in the target.

    ``bce`` is the mean of ``bce_k`` over channels with a valid pair;
    ``loss = weight_bce * bce + weight_dice * dice``. Pairs leaving the patch and pairs touching
    an ignored voxel never contribute (see :func:`affinity_targets`).

    Parameters
    ----------
    offsets : sequence of S-tuples of int, optional
        The model's affinity offsets (may instead be given to :meth:`forward`).
    weight_bce, weight_dice : float
        Term weights (>= 0).
    balance : bool
        Class-balanced BCE (default True).
    ignore_label : int, optional
        Instance id meaning "unannotated".
    eps : float
        Dice smoothing.

    Examples
    --------
    >>> loss = AffinityLoss([(0, -1), (-1, 0)])
    >>> out = loss(torch.randn(2, 2, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    >>> sorted(out)
    ['bce', 'dice', 'loss']
    """

    def __init__(
        self,
        offsets: _Offsets | None = None,
        weight_bce: float = 1.0,
        weight_dice: float = 1.0,
        balance: bool = True,
        ignore_label: int | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if weight_bce < 0 or weight_dice < 0:
            raise LossConfigError(
                f"weight_bce={weight_bce}, weight_dice={weight_dice}: expected >= 0"
            )
        self.offsets = None if offsets is None else tuple(tuple(int(v) for v in o) for o in offsets)
        self.weight_bce, self.weight_dice = float(weight_bce), float(weight_dice)
        self.balance = bool(balance)
        self.ignore_label = ignore_label
        self.eps = float(eps)

    def forward(
        self,
        logits: Tensor,
        labels: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        offsets: _Offsets | None = None,
        targets: Tensor | None = None,
        valid: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Loss of ``logits (B, K, *spatial)`` against ``labels`` (or precomputed targets).

        ``targets``/``valid`` (from :func:`affinity_targets`) replace ``labels``; ``mask``
        marks annotated voxels; ``offsets`` overrides the constructor's.
        """
        if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() not in (
            4,
            5,
        ):
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise LossInputError(f"affinity logits: expected a float tensor (B, K, [D,] H, W), got "
                                 f"{shape}")
        spatial = tuple(logits.shape[2:])
        if targets is None:
            if labels is None:
                raise LossInputError("AffinityLoss: give labels or targets")
            offs = _check_offsets(offsets if offsets is not None else self.offsets, len(spatial),
                                  "AffinityLoss")
            if len(offs) != logits.shape[1]:
                raise LossInputError(
                    f"AffinityLoss: logits have {logits.shape[1]} channels but {len(offs)} "
                    f"offsets were given ({list(offs)}); the model's affinity_offsets must match"
                )
            targets, valid = affinity_targets(labels, offs, self.ignore_label, mask)
        if valid is None:
            valid = torch.ones_like(targets, dtype=torch.bool)
        if tuple(targets.shape) != tuple(logits.shape) or tuple(valid.shape) != tuple(logits.shape):
            raise LossInputError(
                f"AffinityLoss: targets {tuple(targets.shape)} / valid {tuple(valid.shape)} do not "
                f"match logits {tuple(logits.shape)}"
            )
        with full_precision(logits.device):
            x = as_float(logits)
            t = targets.to(device=x.device, dtype=x.dtype)
            v = valid.to(device=x.device, dtype=x.dtype)
            dims = [0, *range(2, x.dim())]  # pool batch and space, keep channels
            zero = x.sum() * 0.0
            n_valid = v.sum(dims)
            n_pos = (t * v).sum(dims)
            n_neg = n_valid - n_pos
            has = n_valid > 0
            bce = dice = zero
            if self.weight_bce > 0 and bool(has.any()):
                if self.balance:
                    present = (n_pos > 0).to(x.dtype) + (n_neg > 0).to(x.dtype)
                    scale = n_valid / present.clamp_min(1)
                    w_pos = scale / n_pos.clamp_min(1)
                    w_neg = scale / n_neg.clamp_min(1)
                    shape = (1, -1) + (1,) * len(spatial)
                    w = t * w_pos.view(shape) + (1 - t) * w_neg.view(shape)
                else:
                    w = torch.ones_like(x)
                e = F.binary_cross_entropy_with_logits(x, t, reduction="none")
                per = (e * w * v).sum(dims) / n_valid.clamp_min(1)
                bce = per[has].mean() + zero
            if self.weight_dice > 0:
                p = torch.sigmoid(x) * v
                tv = t * v
                inter_pos = (p * tv).sum(dims)
                inter_neg = ((v - p) * (v - tv)).sum(dims)
                d_pos = (2 * inter_pos + self.eps) / (p.sum(dims) + n_pos + self.eps)
                d_neg = (2 * inter_neg + self.eps) / ((v - p).sum(dims) + n_neg + self.eps)
                d = torch.cat([d_pos, d_neg])
                present = torch.cat([n_pos > 0, n_neg > 0])
                if bool(present.any()):
                    dice = 1 - d[present].mean() + zero
            loss = self.weight_bce * bce + self.weight_dice * dice
        return {"loss": loss, "bce": bce, "dice": dice}
