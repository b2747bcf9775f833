"""Point prompts for proofreading: validation, Gaussian heatmaps and the prompt encoder.

A prompt for sample ``b`` is a set of points ``point_coords[b] (N, S)`` in **input voxel
coordinates** (axis order ``z, y, x``; ``y, x`` in 2-D; floats allowed) with labels
``point_labels[b] (N,)``: ``1`` positive (inside the target object), ``0`` negative (not part of
it), ``-1`` padding (ignored, lets samples carry different numbers of points). The *target
instance* is the object the positive points lie in: per-patch instance ids are arbitrary
renumberings, so an id embedding could not mean anything; the positions carry that information.
An optional ``prompt_class (B,)`` gives the target semantic class (``-1`` = unspecified).

:class:`PointPromptEncoder` turns a prompt into one additive conditioning tensor per decoder
level: positive / negative points are splatted as Gaussian heatmaps (two channels, computed
separably, so memory is ``O(B * N * sum(shape))`` plus the output), projected by a small
convolution to the level's channel count, plus a learned embedding of the target class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._layers import conv
from .errors import ModelConfigError, PromptError

__all__ = ["PromptBatch", "validate_prompts", "point_heatmaps", "PointPromptEncoder"]

_AXES = "uvw"  # einsum letters for spatial axes


class PromptBatch:
    """Validated prompt tensors (coords float32 (B, N, S), labels int64 (B, N), cls int64 (B,))."""

    __slots__ = ("coords", "labels", "prompt_class")

    def __init__(self, coords: torch.Tensor, labels: torch.Tensor, prompt_class: torch.Tensor):
        self.coords = coords
        self.labels = labels
        self.prompt_class = prompt_class


def validate_prompts(
    point_coords: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    prompt_class: torch.Tensor | None,
    *,
    batch_size: int,
    spatial_shape: Sequence[int],
    num_classes: int,
    device: torch.device,
) -> PromptBatch | None:
    """Check prompt tensors against the image and normalise them.

    Parameters
    ----------
    point_coords : Tensor (B, N, S) or None
        Voxel coordinates (z, y, x) in the *input* frame; each valid point must satisfy
        ``-0.5 <= c < size - 0.5`` per axis (inside the image).
    point_labels : Tensor (B, N) or None
        1 positive, 0 negative, -1 padding. ``None`` with coordinates means "all positive".
    prompt_class : Tensor (B,) / (B, 1) or None
        Target class in ``[0, num_classes)`` or -1 (unspecified).
    batch_size, spatial_shape, num_classes, device
        What the image and the model expect.

    Returns
    -------
    PromptBatch or None
        ``None`` when no prompt at all was given.
    """
    if point_coords is None and point_labels is None and prompt_class is None:
        return None
    S = len(spatial_shape)
    if point_coords is None and point_labels is not None:
        raise PromptError("point_labels was given without point_coords")
    if point_coords is None:
        coords = torch.zeros(batch_size, 0, S, device=device)
        labels = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
    else:
        if not isinstance(point_coords, torch.Tensor):
            raise PromptError(
                f"point_coords must be a torch.Tensor, got {type(point_coords).__name__}"
            )
        if (
            point_coords.ndim != 3
            or point_coords.shape[0] != batch_size
            or point_coords.shape[2] != S
        ):
            raise PromptError(
                f"point_coords must have shape (B={batch_size}, N, S={S}) (coordinates in "
                f"{'z, y, x' if S == 3 else 'y, x'} order), got {tuple(point_coords.shape)}"
            )
        coords = point_coords.to(device=device, dtype=torch.float32)
        if point_labels is None:
            labels = torch.ones(coords.shape[:2], dtype=torch.long, device=device)
        else:
            if not isinstance(point_labels, torch.Tensor) or point_labels.shape != coords.shape[:2]:
                got = (
                    tuple(point_labels.shape)
                    if isinstance(point_labels, torch.Tensor)
                    else type(point_labels)
                )
                raise PromptError(
                    f"point_labels must have shape {tuple(coords.shape[:2])}, got {got}"
                )
            if point_labels.is_floating_point() or point_labels.is_complex():
                raise PromptError(
                    f"point_labels must be an integer tensor, got dtype {point_labels.dtype}"
                )
            labels = point_labels.to(device=device, dtype=torch.long)
            bad = (labels < -1) | (labels > 1)
            if bool(bad.any()):
                raise PromptError(
                    f"point_labels must be 1 (positive), 0 (negative) or -1 (padding), got values "
                    f"{torch.unique(labels[bad]).tolist()}"
                )
        valid = labels >= 0
        if bool(valid.any()):
            c = coords[valid]
            if not bool(torch.isfinite(c).all()):
                raise PromptError("point_coords of non-padding points must be finite")
            upper = torch.tensor([s - 0.5 for s in spatial_shape], device=device)
            outside = ((c < -0.5) | (c >= upper)).any(dim=1)
            if bool(outside.any()):
                raise PromptError(
                    f"point prompts outside the image of spatial shape {tuple(spatial_shape)} "
                    f"(valid range per axis [-0.5, size - 0.5)): {c[outside][:5].tolist()}; mark "
                    "points outside the patch with label -1"
                )
    if prompt_class is None:
        cls = torch.full((batch_size,), -1, dtype=torch.long, device=device)
    else:
        if not isinstance(prompt_class, torch.Tensor):
            prompt_class = torch.as_tensor(prompt_class)
        if prompt_class.is_floating_point():
            raise PromptError(
                f"prompt_class must be an integer tensor, got dtype {prompt_class.dtype}"
            )
        cls = prompt_class.to(device=device, dtype=torch.long).reshape(-1)
        if cls.numel() != batch_size:
            raise PromptError(
                f"prompt_class must have shape (B={batch_size},), got {tuple(prompt_class.shape)}"
            )
        if bool(((cls < -1) | (cls >= num_classes)).any()):
            raise PromptError(
                f"prompt_class values must be in [0, {num_classes}) or -1, got {cls.tolist()}"
            )
    return PromptBatch(coords, labels, cls)


def point_heatmaps(
    coords: torch.Tensor,
    labels: torch.Tensor,
    shape: Sequence[int],
    sigma: float | Sequence[float],
    scale: Sequence[float] | None = None,
) -> torch.Tensor:
    """Gaussian heatmaps of positive and negative points.

    Channel 0 sums ``exp(-|x - p|^2 / (2 sigma^2))`` over positive points, channel 1 over negative
    points (padding points are ignored); both are clamped to ``[0, 1]``. The Gaussian is
    separable, so the map is one einsum over per-axis 1-D profiles, never a ``(N, *shape)`` array.

    Parameters
    ----------
    coords : Tensor (B, N, S)
        Point coordinates in the frame of the full-resolution grid.
    labels : Tensor (B, N)
        1 positive, 0 negative, -1 padding.
    shape : sequence of int
        Spatial shape of the output grid.
    sigma : float or sequence of float
        Standard deviation in full-resolution voxels (per axis or shared).
    scale : sequence of float, optional
        Output-grid voxels per full-resolution voxel, per axis (``level_size / full_size``);
        coordinates map as ``(c + 0.5) * scale - 0.5`` and sigma as ``max(sigma * scale, 0.5)``.

    Returns
    -------
    Tensor (B, 2, *shape), float32.
    """
    S = len(shape)
    scale = [1.0] * S if scale is None else [float(s) for s in scale]
    sig = [float(sigma)] * S if isinstance(sigma, int | float) else [float(s) for s in sigma]
    weights = torch.stack([labels == 1, labels == 0], dim=1).to(torch.float32)  # (B, 2, N)
    profiles = []
    for d in range(S):
        grid = torch.arange(shape[d], device=coords.device, dtype=torch.float32)
        c = (coords[..., d].to(torch.float32) + 0.5) * scale[d] - 0.5  # (B, N)
        s = max(sig[d] * scale[d], 0.5)
        profiles.append(torch.exp(-((grid - c[..., None]) ** 2) / (2.0 * s * s)))  # (B, N, n_d)
    axes = _AXES[:S]
    expr = "bkn," + ",".join(f"bn{a}" for a in axes) + f"->bk{axes}"
    return torch.einsum(expr, weights, *profiles).clamp_(max=1.0)


class PointPromptEncoder(nn.Module):
    """Encode point + class prompts into additive conditioning for each decoder level.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    level_channels : sequence of int
        Channel count of every conditioned feature map (bottleneck first, finest last).
    num_classes : int
        Number of semantic classes; the class embedding has one extra "unspecified" row.
    sigma : float
        Gaussian standard deviation of a point, in input voxels (clamped to >= 0.5 voxel of
        each level's grid).
    kernel_size : int
        Kernel of the heatmap projection convolution.
    """

    def __init__(
        self,
        spatial_dims: int,
        level_channels: Sequence[int],
        num_classes: int,
        sigma: float = 2.0,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if not sigma > 0:
            raise ModelConfigError(f"prompt_sigma must be > 0, got {sigma!r}")
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.sigma = float(sigma)
        self.level_channels = tuple(int(c) for c in level_channels)
        self.point_proj = nn.ModuleList(
            conv(spatial_dims, 2, c, kernel_size, bias=False) for c in self.level_channels
        )
        self.class_embed = nn.ModuleList(
            nn.Embedding(num_classes + 1, c) for c in self.level_channels
        )

    def forward(
        self,
        prompts: PromptBatch,
        level_shapes: Sequence[Sequence[int]],
        full_shape: Sequence[int],
    ) -> list[torch.Tensor]:
        """Return one tensor ``(B, C_l, *level_shapes[l])`` per level.

        Parameters
        ----------
        prompts : PromptBatch
            Output of :func:`validate_prompts`.
        level_shapes : sequence of shapes
            Spatial shape of each conditioned feature map, same order as ``level_channels``.
        full_shape : sequence of int
            Spatial shape of the (padded) network input, the frame of ``prompts.coords``.
        """
        if len(level_shapes) != len(self.level_channels):
            raise ModelConfigError(
                f"expected {len(self.level_channels)} level shapes, got {len(level_shapes)}"
            )
        cls = torch.where(prompts.prompt_class < 0, self.num_classes, prompts.prompt_class)
        out = []
        for proj, emb, shape in zip(self.point_proj, self.class_embed, level_shapes, strict=True):
            scale = [n / f for n, f in zip(shape, full_shape, strict=True)]
            heat = point_heatmaps(prompts.coords, prompts.labels, shape, self.sigma, scale)
            cond = proj(heat.to(proj.weight.dtype))  # autocast, if active, recasts inside
            cond = cond + emb(cls).reshape(*cls.shape, -1, *([1] * self.spatial_dims))
            out.append(cond)
        return out
