"""Dense prediction heads shared by every model of the package.

All heads read the same decoder features ``(B, F, *spatial)`` and predict at that resolution:

* ``semantic``: ``num_classes`` logits (no softmax/sigmoid applied),
* ``instance``: ``emb_dim`` embedding channels (not normalised),
* ``geometry``: ``S + S*S + 4`` raw channels (``S`` = spatial dims): ``[0:S]`` direction,
  ``[S:S+S*S]`` structure tensor (row-major, axis order z, y, x), ``[S+S*S:]`` RGBA
  reconstruction,
* ``affinity``: one logit per affinity offset (voxel ``v`` and ``v + offset`` in the same
  instance; see :mod:`neurons.models.affinity`).

Activations are left to the losses / decoders.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._layers import act_layer, affine_norm, conv, inplace_act, norm_layer
from .affinity import default_affinity_offsets
from .errors import ModelConfigError

__all__ = ["geometry_channels", "DenseHead", "DenseHeads", "OUTPUT_KEYS"]

#: Keys of the dict every model returns, in order.
OUTPUT_KEYS = ("semantic", "instance", "geometry", "affinity")


def geometry_channels(spatial_dims: int) -> int:
    """Number of geometry channels ``S + S*S + 4`` (3-D: 16, 2-D: 10).

    Examples
    --------
    >>> geometry_channels(3), geometry_channels(2)
    (16, 10)
    """
    if spatial_dims not in (2, 3):
        raise ModelConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims + spatial_dims * spatial_dims + 4


class DenseHead(nn.Sequential):
    """``conv(k) F->H (no bias) -> norm -> act -> conv1x1 H->out (bias)``.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels, hidden_channels, out_channels : int
        Channel widths.
    kernel_size : int
        Kernel of the first convolution (3 by default; 1 makes the head point-wise).
    norm, act : MONAI layer specs
        Normalisation and activation.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        norm: Any = "instance",
        act: Any = "relu",
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelConfigError(
                f"head_kernel_size must be a positive odd int, got {kernel_size}"
            )
        super().__init__(
            conv(spatial_dims, in_channels, hidden_channels, kernel_size, bias=False),
            norm_layer(affine_norm(norm, spatial_dims), spatial_dims, hidden_channels),
            act_layer(inplace_act(act)),
            conv(spatial_dims, hidden_channels, out_channels, 1, bias=True),
        )


class DenseHeads(nn.Module):
    """The parallel heads (``semantic``, ``instance``, ``geometry``, ``affinity``) on shared features.

    ``affinity_channels`` is the number of affinity offsets (one logit each; default: the
    length of :func:`~neurons.models.default_affinity_offsets` for ``spatial_dims``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        hidden_channels: int,
        num_classes: int,
        emb_dim: int,
        kernel_size: int = 3,
        norm: Any = "instance",
        act: Any = "relu",
        affinity_channels: int | None = None,
    ) -> None:
        super().__init__()
        if affinity_channels is None:
            affinity_channels = len(default_affinity_offsets(spatial_dims))
        outs = {
            "semantic": num_classes,
            "instance": emb_dim,
            "geometry": geometry_channels(spatial_dims),
            "affinity": affinity_channels,
        }
        self.heads = nn.ModuleDict(
            {
                key: DenseHead(
                    spatial_dims, in_channels, hidden_channels, n, kernel_size, norm, act
                )
                for key, n in outs.items()
            }
        )

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Apply every head to ``features`` and return ``{key: (B, C_key, *spatial)}``."""
        return {key: head(features) for key, head in self.heads.items()}
