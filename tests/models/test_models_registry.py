"""Registry, presets, parameter counts, construction and input errors."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import SegResNet as MonaiSegResNet
from monai.networks.nets import SegResNetDS2

from neurons.models import (
    PRESETS,
    ModelBuildError,
    ModelConfigError,
    ModelInputError,
    SegResNet,
    UnknownModelError,
    Vista2D,
    Vista3D,
    build_model,
    list_models,
    list_presets,
)

# Documented in packages/neurons-models/README.md (presets table).
DOCUMENTED_PARAMS = {
    ("vista3d", "tiny"): 154_115,
    ("vista3d", "small"): 5_692_379,
    ("vista3d", "base"): 22_722_427,
    ("vista3d", "large"): 217_620_779,
    ("vista2d", "tiny"): 52_802,
    ("vista2d", "small"): 1_904_594,
    ("vista2d", "base"): 7_589_746,
    ("vista2d", "large"): 72_579_794,
    ("segresnet3d", "tiny"): 108_835,
    ("segresnet3d", "small"): 4_874_379,
    ("segresnet3d", "base"): 19_451_099,
    ("segresnet2d", "tiny"): 38_498,
    ("segresnet2d", "small"): 1_645_698,
    ("segresnet2d", "base"): 6_554_834,
}


def _n(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _heads_and_prompts(S, F, H, k, classes, emb, levels):
    """Hand count of the four heads and the prompt encoder (weights + biases + norm affine)."""
    n_aff = 11 if S == 3 else 8  # default affinity offsets
    outs = (classes, emb, S + S * S + 4, n_aff)
    heads = sum(F * H * k**S + 2 * H + H * out + out for out in outs)
    prompts = sum(2 * c * 3**S + (classes + 1) * c for c in levels)
    return heads + prompts


@pytest.mark.parametrize("name", ["vista3d", "vista2d", "segresnet3d", "segresnet2d"])
@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_parameter_counts_from_components(name, preset):
    with torch.device("meta"):
        m = build_model(name, preset=preset)
        S = m.spatial_dims
        defaults = {"blocks_up": None, "head_channels": None, "head_kernel_size": 3}
        cfg = {**defaults, **PRESETS[name][preset]}
        F, f0, bd = cfg["feature_size"], cfg["init_filters"], cfg["blocks_down"]
        if name.startswith("vista"):
            ref = SegResNetDS2(
                spatial_dims=S,
                init_filters=f0,
                out_channels=F,
                norm="instance",
                blocks_down=bd,
                blocks_up=cfg["blocks_up"],
            )
        else:
            ref = MonaiSegResNet(
                spatial_dims=S,
                init_filters=f0,
                out_channels=F,
                blocks_down=bd,
                blocks_up=cfg["blocks_up"] or (1,) * (len(bd) - 1),
                upsample_mode="deconv",
            )
    levels = [f0 * 2**i for i in range(len(bd))]
    H = cfg["head_channels"] or F
    expected = _n(ref) + _heads_and_prompts(S, F, H, cfg["head_kernel_size"], 16, 16, levels)
    assert _n(m) == expected
    assert _n(m) == DOCUMENTED_PARAMS[(name, preset)]


@pytest.mark.parametrize("name", ["vista3d", "vista2d"])
def test_large_preset_matches_documented_count(name):
    with torch.device("meta"):
        m = build_model(name, preset="large")
    assert _n(m) == DOCUMENTED_PARAMS[(name, "large")]


@pytest.mark.slow
def test_tiny_forward_backward_is_fast(make_model):
    # Wall-clock test: ~0.3 s on 2 idle cores; marked slow because shared CI machines make
    # timings meaningless. scripts/bench_models.py reports the numbers.
    import os
    import time

    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        pytest.skip(f"machine overloaded (load average {load:.1f}): wall-clock time meaningless")

    m = make_model("vista3d")
    x = torch.rand(1, 1, 32, 64, 64)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        sum(v.mean() for v in m(x).values()).backward()
        times.append(time.perf_counter() - t)
    assert min(times) < 1.0


def test_registry_names_and_types(make_model):
    assert {"vista3d", "vista2d", "segresnet"} <= set(list_models())
    assert list_presets("vista3d") == ["base", "large", "small", "tiny"]
    assert isinstance(make_model("vista3d"), Vista3D)
    assert isinstance(make_model("vista2d"), Vista2D)
    m = make_model("segresnet", spatial_dims=2)
    assert isinstance(m, SegResNet) and m.spatial_dims == 2
    assert make_model("VISTA3D").spatial_dims == 3  # case-insensitive


def test_registry_errors():
    with pytest.raises(UnknownModelError, match="known models: .*segresnet.*vista2d, vista3d"):
        build_model("vista4d")
    with pytest.raises(KeyError):
        build_model("unet")
    with pytest.raises(ModelConfigError, match="known presets: base, large, small, tiny"):
        build_model("vista3d", preset="huge")
    with pytest.raises(ModelConfigError, match=r"unknown argument\(s\) \['num_clases'\]"):
        build_model("vista3d", preset="tiny", num_clases=5)
    with pytest.raises(ModelConfigError, match="Vista3D is 3-D"):
        build_model("vista3d", preset="tiny", spatial_dims=2)
    with pytest.raises(ModelConfigError, match="fixes spatial_dims=2"):
        build_model("segresnet2d", preset="tiny", spatial_dims=3)
    with pytest.raises(ModelConfigError, match="blocks_up needs"):
        build_model("vista3d", preset="tiny", blocks_up=(1, 1, 1))
    with pytest.raises(ModelConfigError, match="resolution must have 3"):
        build_model("vista3d", preset="tiny", resolution=(4, 4))


def test_backbone_failure_raises_not_falls_back():
    with pytest.raises(ModelBuildError, match="SegResNetDS2"):
        build_model("vista3d", preset="tiny", norm="no-such-norm")
    with pytest.raises(ModelBuildError, match="SegResNet"):
        build_model("segresnet", preset="tiny", act="no-such-act")


def test_config_rebuilds_same_architecture():
    m = build_model("vista2d", preset="tiny", num_classes=5, blocks_down=[0, 1, 1])
    assert m.config == {
        "name": "vista2d",
        "preset": "tiny",
        "num_classes": 5,
        "blocks_down": (0, 1, 1),
    }
    m2 = build_model(**m.config)
    assert [p.shape for p in m.parameters()] == [p.shape for p in m2.parameters()]


def test_bad_input_errors(make_model, make_image):
    m3 = make_model("vista3d")
    m2 = make_model("segresnet2d")
    with pytest.raises(ModelInputError, match=r"expected image of rank 5 .*got rank 4"):
        m3(torch.rand(1, 1, 16, 16))
    with pytest.raises(ModelInputError, match=r"expected image of rank 4 .*got rank 5"):
        m2(torch.rand(1, 1, 4, 16, 16))
    with pytest.raises(ModelInputError, match=r"expected 1 input channel\(s\).*got 3"):
        m2(torch.rand(1, 3, 16, 16))
    with pytest.raises(ModelInputError, match="floating-point"):
        m2(torch.zeros(1, 1, 16, 16, dtype=torch.long))
    with pytest.raises(ModelInputError, match="torch.Tensor"):
        m2(make_image(2).numpy())
    with pytest.raises(ModelInputError, match="single voxel"):
        m3(torch.rand(1, 1, 2, 3, 4))  # pads to 4^3 -> one bottleneck voxel with instance norm
    assert math.prod(m3.shape_factor()) == 64
