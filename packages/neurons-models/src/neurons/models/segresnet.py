"""SegResNet: MONAI's ``SegResNet`` encoder-decoder with the package's dense heads.

Same output dict and prompt interface as :class:`~neurons.models.VistaModel`, so models are
interchangeable in training and inference. It has a single decoder: point prompts are added to
the bottleneck and to every decoder level of that decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import DenseSegmentationModel, _positive_int
from .errors import ModelBuildError

__all__ = ["SegResNet"]


class SegResNet(DenseSegmentationModel):
    """MONAI ``SegResNet`` backbone (2-D or 3-D) + semantic / instance / geometry heads.

    Parameters
    ----------
    spatial_dims : int
        2 or 3 (default 3).
    in_channels, num_classes, emb_dim : int
        As in :class:`~neurons.models.VistaModel`.
    init_filters : int
        Width at full resolution (doubles per level).
    blocks_down, blocks_up : sequence of int
        Residual blocks per encoder / decoder level; ``len(blocks_up) == len(blocks_down) - 1``.
    feature_size : int
        Channels of the shared features (MONAI's final 1x1 convolution output).
    head_channels : int, optional
        Hidden width of the heads (default ``feature_size``).
    head_kernel_size : int
        First-convolution kernel of each head.
    norm, act : MONAI layer specs
        Default ``("group", {"num_groups": 8})`` (MONAI's SegResNet default) and ``"relu"``.
    dropout_prob : float, optional
        Dropout after the first convolution.
    upsample_mode : str
        ``"deconv"`` (default: deterministic), ``"nontrainable"`` or ``"pixelshuffle"``.
    prompt_sigma : float
        Gaussian sigma of point prompts in input voxels.
    affinity_offsets : sequence of S-tuples of int, optional
        Offsets of the ``affinity`` head (default :func:`~neurons.models.default_affinity_offsets`).
    pad_mode : str
        Padding to ``shape_factor()``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 16,
        emb_dim: int = 16,
        init_filters: int = 32,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        blocks_up: Sequence[int] | None = None,
        feature_size: int = 64,
        head_channels: int | None = None,
        head_kernel_size: int = 3,
        norm: Any = ("group", {"num_groups": 8}),
        act: Any = "relu",
        dropout_prob: float | None = None,
        upsample_mode: str = "deconv",
        prompt_sigma: float = 2.0,
        pad_mode: str = "replicate",
        affinity_offsets: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=num_classes,
            emb_dim=emb_dim,
            feature_size=feature_size,
            head_channels=feature_size if head_channels is None else head_channels,
            head_kernel_size=head_kernel_size,
            norm=norm,
            act=act,
            prompt_sigma=prompt_sigma,
            pad_mode=pad_mode,
            affinity_offsets=affinity_offsets,
        )
        blocks_down, blocks_up = self._check_blocks(blocks_down, blocks_up)
        self.init_filters = _positive_int("init_filters", init_filters)
        self.blocks_down = blocks_down
        try:
            from monai.networks.nets import SegResNet as MonaiSegResNet

            self.backbone = MonaiSegResNet(
                spatial_dims=spatial_dims,
                init_filters=self.init_filters,
                in_channels=self.in_channels,
                out_channels=self.feature_size,
                dropout_prob=dropout_prob,
                act=act,
                norm=norm,
                blocks_down=blocks_down,
                blocks_up=blocks_up,
                upsample_mode=upsample_mode,
            )
        except (ImportError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ModelBuildError(f"cannot build MONAI SegResNet: {exc}") from exc
        self._finish_build()

    def shape_factor(self) -> tuple[int, ...]:
        """Per-axis divisor: ``2 ** (len(blocks_down) - 1)``."""
        return (2 ** (len(self.blocks_down) - 1),) * self.spatial_dims

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        bottleneck, down = self.backbone.encode(x)  # down: fine to coarse, last == bottleneck
        return bottleneck, down[-2::-1]

    def _decode(
        self,
        bottleneck: torch.Tensor,
        skips: list[torch.Tensor],
        cond: list[torch.Tensor] | None,
        prompted: bool,
    ) -> torch.Tensor:
        net = self.backbone
        stages = zip(net.up_samples, net.up_layers, strict=True)
        return net.conv_final(self._run_decoder(bottleneck, skips, cond, stages))
