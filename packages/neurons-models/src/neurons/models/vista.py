"""Vista2D / Vista3D: VISTA3D's two-branch SegResNetDS2 image encoder with dense heads.

MONAI's ``VISTA3D(image_encoder, class_head, point_head)`` pairs a ``SegResNetDS2`` encoder
(one shared encoder, two decoders: ``up_layers`` for the point branch, ``up_layers_auto`` for the
automatic branch) with a class head and a SAM-style point head that each emit one binary mask per
prompt. Connectomics needs dense multi-output predictions for every voxel, so this module keeps
the real MONAI ``SegResNetDS2`` (built with ``spatial_dims`` 2 or 3, optionally anisotropic via
``resolution``) and replaces the two mask heads by:

* automatic mode (no prompt): encoder -> ``up_layers_auto`` -> dense heads,
* proofreading mode (prompt given): encoder -> ``up_layers`` with :class:`PointPromptEncoder`
  conditioning added at the bottleneck and after every skip connection -> the same dense heads.

MONAI's ``PointMappingSAM`` / ``ClassMappingClassify`` are not used: they hard-code 3-D layers,
assume one image per batch and return one mask per prompt, which cannot provide the 2-D variant
or the semantic / instance / geometry outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import DenseSegmentationModel, _positive_int
from .errors import ModelBuildError, ModelConfigError

__all__ = ["VistaModel", "Vista3D", "Vista2D"]


def _segresnetds2(**kwargs: Any):
    try:
        from monai.networks.nets import SegResNetDS2
    except ImportError as exc:  # pragma: no cover - depends on the installed MONAI
        import monai

        raise ModelBuildError(
            f"MONAI {monai.__version__} has no SegResNetDS2 (VISTA3D's image encoder); "
            "install monai>=1.4"
        ) from exc
    try:
        return SegResNetDS2(**kwargs)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ModelBuildError(f"cannot build MONAI SegResNetDS2 with {kwargs}: {exc}") from exc


class VistaModel(DenseSegmentationModel):
    """VISTA-style network for 2-D or 3-D EM (one implementation, ``spatial_dims`` 2 or 3).

    Parameters
    ----------
    spatial_dims : int
        2 (Vista2D) or 3 (Vista3D).
    in_channels : int
        Image channels.
    num_classes : int
        Semantic logit channels (default 16).
    emb_dim : int
        Instance embedding channels (default 16).
    init_filters : int
        Encoder width at full resolution (doubles per level).
    blocks_down : sequence of int
        Residual blocks per encoder level (``len - 1`` downsamplings).
    blocks_up : sequence of int, optional
        Residual blocks per decoder level, coarse to fine (default one per level).
    feature_size : int
        Channels of the shared decoder features.
    head_channels : int, optional
        Hidden width of the heads (default ``feature_size``).
    head_kernel_size : int
        First-convolution kernel of each head.
    norm, act : MONAI layer specs
        Default ``"instance"`` (as VISTA3D) and ``"relu"``.
    resolution : sequence of float, optional
        Voxel size ``(z, y, x)`` (or ``(y, x)``); anisotropic data then gets in-plane-only
        downsampling until roughly isotropic (MONAI ``SegResNetDS`` behaviour).
    upsample_mode : str
        ``"deconv"`` (default, deterministic), ``"nontrainable"`` or ``"pixelshuffle"``.
    prompt_sigma : float
        Gaussian sigma of point prompts in input voxels.
    affinity_offsets : sequence of S-tuples of int, optional
        Offsets of the ``affinity`` head (default :func:`~neurons.models.default_affinity_offsets`).
    pad_mode : str
        Padding to ``shape_factor()`` (see :mod:`neurons.models.padding`).
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
        norm: Any = "instance",
        act: Any = "relu",
        resolution: Sequence[float] | None = None,
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
        if resolution is not None:
            resolution = tuple(float(r) for r in resolution)
            if len(resolution) != spatial_dims:
                raise ModelConfigError(
                    f"resolution must have {spatial_dims} entries (voxel size), got {resolution}"
                )
        self.init_filters = _positive_int("init_filters", init_filters)
        self.blocks_down = blocks_down
        self.backbone = _segresnetds2(
            spatial_dims=spatial_dims,
            init_filters=self.init_filters,
            in_channels=self.in_channels,
            out_channels=self.feature_size,
            act=act,
            norm=norm,
            blocks_down=blocks_down,
            blocks_up=blocks_up,
            dsdepth=1,
            upsample_mode=upsample_mode,
            resolution=resolution,
        )
        self._finish_build()

    def shape_factor(self) -> tuple[int, ...]:
        """Per-axis divisor of the encoder (``2 ** (len(blocks_down) - 1)`` when isotropic)."""
        return tuple(int(f) for f in self.backbone.shape_factor())

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        levels = self.backbone.encoder(x)  # fine to coarse
        return levels[-1], levels[-2::-1]

    def _decode(
        self,
        bottleneck: torch.Tensor,
        skips: list[torch.Tensor],
        cond: list[torch.Tensor] | None,
        prompted: bool,
    ) -> torch.Tensor:
        layers = self.backbone.up_layers if prompted else self.backbone.up_layers_auto
        stages = [(level["upsample"], level["blocks"]) for level in layers]
        return layers[-1]["head"](self._run_decoder(bottleneck, skips, cond, stages))


class Vista3D(VistaModel):
    """:class:`VistaModel` with ``spatial_dims=3`` (input ``(B, C, D, H, W)``)."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.pop("spatial_dims", 3) != 3:
            raise ModelConfigError("Vista3D is 3-D: use Vista2D (or VistaModel) for spatial_dims=2")
        super().__init__(spatial_dims=3, **kwargs)


class Vista2D(VistaModel):
    """:class:`VistaModel` with ``spatial_dims=2`` (input ``(B, C, H, W)``)."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.pop("spatial_dims", 2) != 2:
            raise ModelConfigError("Vista2D is 2-D: use Vista3D (or VistaModel) for spatial_dims=3")
        super().__init__(spatial_dims=2, **kwargs)
