"""Point prompts sampled from ground truth, and the targets of a prompted (proofread) forward.

In ``proofread`` training the model sees positive points inside one object (``instance`` mode:
one ground-truth instance; ``class`` mode: one semantic class) and negative points outside it,
and is supervised to segment **only that object**: :func:`prompted_targets` keeps the prompted
instance(s) and turns everything else into background (ignored voxels stay ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["PointPrompts", "prompted_targets", "sample_point_prompts"]


@dataclass
class PointPrompts:
    """Prompts for a batch.

    Attributes
    ----------
    point_coords : Tensor
        ``(B, N, S)`` float voxel coordinates in ``(z, y, x)`` (3D) / ``(y, x)`` (2D) order.
    point_labels : Tensor
        ``(B, N)`` long: 1 positive, 0 negative, -1 padding (no point).
    target_mask : Tensor
        ``(B, *spatial)`` bool: the prompted object (empty where a sample has no foreground).
    target_semantic : Tensor
        ``(B,)`` long: semantic class of the prompted object (0 when none).
    target_instance : Tensor
        ``(B,)`` long: prompted instance id (0 in ``class`` mode or when none).
    """

    point_coords: torch.Tensor
    point_labels: torch.Tensor
    target_mask: torch.Tensor
    target_semantic: torch.Tensor
    target_instance: torch.Tensor


def _draw(mask: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` flat indices drawn uniformly (with replacement) from the True voxels of ``mask``."""
    weights = mask.reshape(-1).to(torch.float32)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def sample_point_prompts(
    semantic: torch.Tensor,
    instance: torch.Tensor,
    num_pos: int = 5,
    num_neg: int = 5,
    mode: str = "instance",
    *,
    ignore_index: int = 255,
    generator: torch.Generator | None = None,
) -> PointPrompts:
    """Sample positive/negative point prompts from ground-truth labels.

    Parameters
    ----------
    semantic : Tensor
        ``(B, *spatial)`` integer semantic labels (``ignore_index`` = unknown).
    instance : Tensor
        ``(B, *spatial)`` integer instance ids, 0 = background.
    num_pos, num_neg : int
        Points per sample inside / outside the prompted object (drawn with replacement).
    mode : {"instance", "class"}
        Prompt one random instance, or one random semantic class > 0, per sample.
    ignore_index : int
        Semantic value of unknown voxels (never sampled, never part of an object).
    generator : torch.Generator, optional
        Source of randomness (default: torch's global generator).

    Returns
    -------
    PointPrompts
        Points on the labels' device. A sample without foreground gets only padding points
        (label -1) and an empty target mask.

    Examples
    --------
    >>> ins = torch.zeros(1, 8, 8, dtype=torch.long); ins[0, 2:5, 2:5] = 7
    >>> p = sample_point_prompts((ins > 0).long(), ins, 2, 2)
    >>> p.point_coords.shape, int(p.target_instance[0])
    (torch.Size([1, 4, 2]), 7)
    """
    if semantic.shape != instance.shape:
        raise ValueError(
            f"semantic {tuple(semantic.shape)} and instance {tuple(instance.shape)} differ in shape"
        )
    if mode not in ("instance", "class"):
        raise ValueError(f"mode={mode!r}: expected 'instance' or 'class'")
    if semantic.ndim not in (3, 4):
        raise ValueError(f"labels must be (B, H, W) or (B, D, H, W), got {tuple(semantic.shape)}")
    device = instance.device
    b = instance.shape[0]
    spatial = tuple(instance.shape[1:])
    s = len(spatial)
    n = num_pos + num_neg
    coords = torch.zeros(b, n, s, dtype=torch.float32, device=device)
    labels = torch.full((b, n), -1, dtype=torch.long, device=device)
    target_mask = torch.zeros_like(instance, dtype=torch.bool)
    t_sem = torch.zeros(b, dtype=torch.long, device=device)
    t_ins = torch.zeros(b, dtype=torch.long, device=device)
    gen_device = generator.device if generator is not None else None
    for i in range(b):  # loop over the batch only (a handful of samples)
        sem_i, ins_i = semantic[i], instance[i]
        valid = sem_i != ignore_index
        if mode == "instance":
            ids = torch.unique(ins_i[(ins_i > 0) & valid])
            if ids.numel() == 0:
                continue
            pick = torch.randint(ids.numel(), (1,), generator=generator, device=gen_device)
            chosen = ids[pick.to(ids.device)]
            pos = (ins_i == chosen) & valid
            counts = torch.bincount(sem_i[pos].clamp(0, ignore_index), minlength=2)
            t_sem[i] = counts.argmax()
            t_ins[i] = chosen[0]
        else:
            classes = torch.unique(sem_i[valid & (sem_i > 0)])
            if classes.numel() == 0:
                continue
            pick = torch.randint(classes.numel(), (1,), generator=generator, device=gen_device)
            chosen = classes[pick.to(classes.device)]
            pos = (sem_i == chosen) & valid
            t_sem[i] = chosen[0]
        neg = valid & ~pos
        target_mask[i] = pos
        flat = []
        lab = []
        if num_pos:
            flat.append(_draw(pos, num_pos, generator).to(device))
            lab.append(torch.ones(num_pos, dtype=torch.long, device=device))
        if num_neg and bool(neg.any()):
            flat.append(_draw(neg, num_neg, generator).to(device))
            lab.append(torch.zeros(num_neg, dtype=torch.long, device=device))
        idx = torch.cat(flat)
        zyx = torch.stack(torch.unravel_index(idx, spatial), dim=-1).to(torch.float32)
        coords[i, : idx.numel()] = zyx
        labels[i, : idx.numel()] = torch.cat(lab)
    return PointPrompts(coords, labels, target_mask, t_sem, t_ins)


def prompted_targets(
    targets: Mapping[str, torch.Tensor],
    prompts: PointPrompts,
    *,
    ignore_index: int = 255,
) -> dict[str, torch.Tensor]:
    """Targets for a prompted forward: only the prompted object is foreground.

    Parameters
    ----------
    targets : mapping
        Full targets with ``"semantic"`` and ``"instance"`` ``(B, *spatial)``; other keys
        (``"semantic_ids"``, ``"image"``) are passed through.
    prompts : PointPrompts
        From :func:`sample_point_prompts`.
    ignore_index : int
        Ignored semantic voxels stay ignored.

    Returns
    -------
    dict
        ``"semantic"``: the object's classes inside ``target_mask``, 0 elsewhere, ignore kept;
        ``"instance"``: the object's instance ids inside the mask (renumbered to 1 in
        ``instance`` mode), 0 elsewhere.
    """
    out = dict(targets)
    mask = prompts.target_mask
    sem = targets["semantic"]
    ins = targets["instance"]
    new_sem = torch.where(mask, sem, torch.zeros_like(sem))
    out["semantic"] = torch.where(sem == ignore_index, sem, new_sem)
    single = (prompts.target_instance > 0).view(-1, *([1] * (ins.ndim - 1)))
    kept = torch.where(mask, ins, torch.zeros_like(ins))
    out["instance"] = torch.where(single & mask, torch.ones_like(ins), kept)
    return out
