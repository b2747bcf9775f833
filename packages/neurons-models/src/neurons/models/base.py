"""Shared plumbing of every model: input checks, padding, prompts, heads, output dict.

Subclasses provide the backbone through four hooks:

* ``shape_factor()``: divisor per spatial axis the encoder needs,
* ``_level_channels()``: channels of the bottleneck and of each decoder level (coarse to fine),
* ``_encode(x)``: ``(bottleneck, skips)`` with ``skips`` ordered coarse to fine,
* ``_decode(bottleneck, skips, cond, prompted)``: features ``(B, feature_size, *spatial)``,
  adding ``cond[0]`` to the bottleneck and ``cond[i + 1]`` after the ``i``-th skip connection
  when ``cond`` is not ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ._layers import norm_name
from .affinity import check_affinity_offsets
from .errors import ModelBuildError, ModelConfigError, ModelInputError
from .heads import OUTPUT_KEYS, DenseHeads, geometry_channels
from .padding import PAD_MODES, crop_to_shape, pad_to_multiple
from .prompts import PointPromptEncoder, validate_prompts

__all__ = ["DenseSegmentationModel"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(f"{name} must be a positive int, got {value!r}")
    return value


class DenseSegmentationModel(nn.Module):
    """Base class: a dense encoder-decoder with semantic / instance / geometry heads.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : int
        Image channels ``C_in``.
    num_classes : int
        Semantic logit channels (default 16: headroom over the 5 unified classes).
    emb_dim : int
        Instance-embedding channels.
    feature_size : int
        Channels of the shared decoder features the heads read.
    head_channels : int
        Hidden width of each head.
    head_kernel_size : int
        Kernel of each head's first convolution.
    norm, act : MONAI layer specs
        Normalisation / activation used by heads (and the backbone of subclasses).
    prompt_sigma : float
        Gaussian sigma of a point prompt, in input voxels.
    pad_mode : {"replicate", "constant", "circular"}
        How the input is padded to ``shape_factor()`` before the network (cropped back after).
    affinity_offsets : sequence of S-tuples of int, optional
        Voxel offsets of the ``affinity`` head, one logit channel each (default:
        :func:`~neurons.models.default_affinity_offsets`). Stored as ``self.affinity_offsets``.
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        emb_dim: int,
        feature_size: int,
        head_channels: int,
        head_kernel_size: int,
        norm: Any,
        act: Any,
        prompt_sigma: float,
        pad_mode: str,
        affinity_offsets: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ModelConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        #: ``(K, S)`` offsets of the ``affinity`` output channels, in order.
        self.affinity_offsets = check_affinity_offsets(affinity_offsets, spatial_dims)
        if pad_mode not in PAD_MODES:
            raise ModelConfigError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.spatial_dims = spatial_dims
        self.in_channels = _positive_int("in_channels", in_channels)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.emb_dim = _positive_int("emb_dim", emb_dim)
        self.feature_size = _positive_int("feature_size", feature_size)
        self.geometry_channels = geometry_channels(spatial_dims)
        self.pad_mode = pad_mode
        self.norm = norm
        self._head_args = (
            _positive_int("head_channels", head_channels),
            head_kernel_size,
            norm,
            act,
        )
        self._prompt_sigma = prompt_sigma
        #: Built by :meth:`_finish_build` once the subclass has built its backbone.
        self.heads: DenseHeads
        self.prompt_encoder: PointPromptEncoder
        #: Constructor arguments (after preset resolution), filled in by the registry.
        self.config: dict[str, Any] = {}

    # ----------------------------------------------------------------- subclass hooks
    def shape_factor(self) -> tuple[int, ...]:  # pragma: no cover - abstract
        """Per-axis divisor the spatial input size must satisfy (handled by padding)."""
        raise NotImplementedError

    def _level_channels(self) -> list[int]:
        """Channels of the bottleneck and of each decoder level, coarse to fine."""
        n = len(self.blocks_down)
        return [self.init_filters * 2 ** (n - 1 - i) for i in range(n)]

    @staticmethod
    def _check_blocks(
        blocks_down: Sequence[int], blocks_up: Sequence[int] | None
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Validate residual-block counts; ``blocks_up`` defaults to one block per level."""
        down = tuple(int(b) for b in blocks_down)
        if len(down) < 2 or min(down) < 0:
            raise ModelConfigError(
                f"blocks_down needs >= 2 non-negative entries (one downsampling), got {down}"
            )
        up = (1,) * (len(down) - 1) if blocks_up is None else tuple(int(b) for b in blocks_up)
        if len(up) != len(down) - 1 or min(up) < 0:
            raise ModelConfigError(
                f"blocks_up needs len(blocks_down) - 1 = {len(down) - 1} non-negative entries, "
                f"got {up}"
            )
        return down, up

    @staticmethod
    def _run_decoder(
        x: torch.Tensor,
        skips: list[torch.Tensor],
        cond: list[torch.Tensor] | None,
        stages: Iterable[tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]],
    ) -> torch.Tensor:
        """``x = blocks(upsample(x) + skip [+ cond])`` per stage, with ``cond[0]`` on the input."""
        if cond is not None:
            x = x + cond[0]
        for i, (upsample, blocks) in enumerate(stages):
            x = upsample(x) + skips[i]
            if cond is not None:
                x = x + cond[i + 1]
            x = blocks(x)
        return x

    def _encode(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def _decode(
        self,
        bottleneck: torch.Tensor,
        skips: list[torch.Tensor],
        cond: list[torch.Tensor] | None,
        prompted: bool,
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish_build(self) -> None:
        """Build heads and prompt encoder (called by subclasses after their backbone)."""
        hidden, kernel, norm, act = self._head_args
        try:
            self.heads = DenseHeads(
                self.spatial_dims,
                self.feature_size,
                hidden,
                self.num_classes,
                self.emb_dim,
                kernel,
                norm,
                act,
                affinity_channels=len(self.affinity_offsets),
            )
        except (TypeError, ValueError, KeyError) as exc:
            if isinstance(exc, ModelConfigError):
                raise
            raise ModelBuildError(
                f"cannot build heads with norm={norm!r}, act={act!r}: {exc}"
            ) from exc
        self.prompt_encoder = PointPromptEncoder(
            self.spatial_dims, self._level_channels(), self.num_classes, sigma=self._prompt_sigma
        )

    # ----------------------------------------------------------------- checks
    def _check_image(self, image: Any) -> None:
        S = self.spatial_dims
        layout = "(B, C, D, H, W)" if S == 3 else "(B, C, H, W)"
        if not isinstance(image, torch.Tensor):
            raise ModelInputError(
                f"image must be a torch.Tensor {layout}, got {type(image).__name__}"
            )
        if image.ndim != S + 2:
            raise ModelInputError(
                f"{type(self).__name__} is {S}-D: expected image of rank {S + 2} {layout}, got "
                f"rank {image.ndim} with shape {tuple(image.shape)}"
            )
        if image.shape[1] != self.in_channels:
            raise ModelInputError(
                f"expected {self.in_channels} input channel(s) (image.shape[1]), got "
                f"{image.shape[1]} in shape {tuple(image.shape)}"
            )
        if not image.is_floating_point():
            raise ModelInputError(f"image must be a floating-point tensor, got dtype {image.dtype}")
        if image.shape[0] == 0 or any(s == 0 for s in image.shape[2:]):
            raise ModelInputError(f"image has an empty axis: shape {tuple(image.shape)}")

    def _check_bottleneck(self, batch: int, padded: tuple[int, ...]) -> None:
        factor = self.shape_factor()
        cells = math.prod(p // f for p, f in zip(padded, factor, strict=True))
        name = norm_name(self.norm)
        values = cells if name.startswith("instance") else batch * cells
        if self.training and values == 1 and name.startswith(("instance", "batch")):
            raise ModelInputError(
                f"padded input {padded} (batch {batch}) reaches the bottleneck as a single voxel "
                f"(shape factor {factor}); {name} normalisation needs more than one value per "
                f"channel in training mode: use a patch larger than {factor} along an axis"
            )

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        image: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        prompt_class: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict dense outputs for ``image``, optionally conditioned on point prompts.

        Parameters
        ----------
        image : Tensor (B, C_in, [D,] H, W)
            Floating-point batch of any spatial size.
        point_coords : Tensor (B, N, S), optional
            Prompt coordinates in input voxels, (z, y, x) order.
        point_labels : Tensor (B, N), optional
            1 positive, 0 negative, -1 padding (default: all positive).
        prompt_class : Tensor (B,), optional
            Target semantic class of the prompt, -1 = unspecified.

        Returns
        -------
        dict
            ``"semantic"`` (B, num_classes, *spatial) logits, ``"instance"`` (B, emb_dim,
            *spatial) embedding, ``"geometry"`` (B, S + S*S + 4, *spatial), ``"affinity"``
            (B, len(affinity_offsets), *spatial) logits; same spatial size as ``image``.
        """
        self._check_image(image)
        spatial = tuple(image.shape[2:])
        prompts = validate_prompts(
            point_coords,
            point_labels,
            prompt_class,
            batch_size=image.shape[0],
            spatial_shape=spatial,
            num_classes=self.num_classes,
            device=image.device,
        )
        x = pad_to_multiple(image, self.shape_factor(), self.pad_mode)
        padded = tuple(x.shape[2:])
        self._check_bottleneck(image.shape[0], padded)
        bottleneck, skips = self._encode(x)
        cond = None
        if prompts is not None:
            shapes = [tuple(bottleneck.shape[2:])] + [tuple(s.shape[2:]) for s in skips]
            cond = self.prompt_encoder(prompts, shapes, padded)
        features = self._decode(bottleneck, skips, cond, prompts is not None)
        out = self.heads(crop_to_shape(features, spatial))
        # a head may be absent: a model restored from a checkpoint trained before it existed
        return {key: out[key] for key in OUTPUT_KEYS if key in out}

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, in_channels={self.in_channels}, "
            f"num_classes={self.num_classes}, emb_dim={self.emb_dim}, "
            f"feature_size={self.feature_size}, shape_factor={self.shape_factor()}, "
            f"affinity_offsets={len(self.affinity_offsets)}"
        )
