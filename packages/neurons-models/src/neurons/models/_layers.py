"""Small dimension-generic layer helpers built on MONAI's layer factories.

MONAI is imported inside the functions: ``import monai`` loads every optional package that
happens to be installed (scikit-image, tensorboard, ...) and takes seconds, so
``import neurons.models`` stays light and MONAI loads when the first model is built.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["norm_name", "affine_norm", "inplace_act", "conv", "norm_layer", "act_layer"]


def norm_name(norm: Any) -> str:
    """Lower-case layer name of a MONAI normalisation spec (``"instance"``, ``"group"``, ...)."""
    from monai.networks.layers.factories import split_args

    return str(split_args(norm)[0]).lower()


def affine_norm(norm: Any, spatial_dims: int) -> tuple[str, dict]:
    """Normalisation spec with trainable affine parameters where the layer supports them."""
    from monai.networks.layers.factories import Norm, split_args
    from monai.utils import has_option

    name, args = split_args(norm)
    args = dict(args)
    if has_option(Norm[name, spatial_dims], "affine"):
        args.setdefault("affine", True)
    return name, args


def inplace_act(act: Any) -> tuple[str, dict]:
    """Activation spec that runs in place where the layer supports it."""
    from monai.networks.layers.factories import Act, split_args
    from monai.utils import has_option

    name, args = split_args(act)
    args = dict(args)
    if has_option(Act[name], "inplace"):
        args.setdefault("inplace", True)
    return name, args


def conv(
    spatial_dims: int, in_ch: int, out_ch: int, kernel_size: int = 3, bias: bool = True
) -> nn.Module:
    """``Conv{2,3}d`` with 'same' padding for odd ``kernel_size``."""
    from monai.networks.layers.factories import Conv

    return Conv[Conv.CONV, spatial_dims](
        in_ch, out_ch, kernel_size=kernel_size, padding=kernel_size // 2, bias=bias
    )


def norm_layer(norm: Any, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer from a MONAI spec (``"instance"``, ``("group", {...})``, ...)."""
    from monai.networks.layers.utils import get_norm_layer

    return get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=channels)


def act_layer(act: Any) -> nn.Module:
    """Activation layer from a MONAI spec."""
    from monai.networks.layers.utils import get_act_layer

    return get_act_layer(act)
