"""The ``affinity`` output: offsets, shapes, gradient flow, presets and configuration errors."""

from __future__ import annotations

import pytest
import torch

from neurons.models import (
    OUTPUT_KEYS,
    ModelConfigError,
    build_model,
    check_affinity_offsets,
    default_affinity_offsets,
)


def test_default_offsets_hand_values():
    assert default_affinity_offsets(3) == [
        (-1, 0, 0), (0, -1, 0), (0, 0, -1),
        (0, -3, 0), (0, 0, -3), (0, -9, 0), (0, 0, -9), (0, -27, 0), (0, 0, -27),
        (-2, 0, 0), (-3, 0, 0),
    ]
    # 2-D: exactly the in-plane offsets of the 3-D list, without the z entry
    inplane = [o[1:] for o in default_affinity_offsets(3) if o[0] == 0]
    assert default_affinity_offsets(2) == [(-1, 0), (0, -1)] + inplane[2:]
    assert len(default_affinity_offsets(2)) == 8


def test_affinity_is_an_output_key_and_existing_outputs_stay(tiny_model, make_image):
    m = tiny_model
    S = m.spatial_dims
    x = make_image(S, batch=2)
    out = m(x)
    assert tuple(out) == OUTPUT_KEYS == ("semantic", "instance", "geometry", "affinity")
    spatial = tuple(x.shape[2:])
    assert out["affinity"].shape == (2, 11 if S == 3 else 8, *spatial)
    assert out["semantic"].shape == (2, 16, *spatial)
    assert out["geometry"].shape == (2, S + S * S + 4, *spatial)
    assert torch.isfinite(out["affinity"]).all()
    assert m.affinity_offsets == tuple(default_affinity_offsets(S))


@pytest.mark.parametrize("name", ["vista3d", "vista2d", "segresnet3d", "segresnet2d"])
def test_custom_offsets_set_channels_and_gradient_reaches_the_head(name, make_model, make_image):
    S = 3 if name.endswith("3d") else 2
    offsets = [[-1] + [0] * (S - 1), [0] * (S - 1) + [-5], [0] * (S - 1) + [4]]
    m = make_model(name, affinity_offsets=offsets)  # YAML-style nested lists
    assert m.affinity_offsets == tuple(tuple(o) for o in offsets)
    x = make_image(S)
    out = m(x)
    assert out["affinity"].shape == (1, 3, *x.shape[2:])
    out["affinity"].square().mean().backward()
    head = m.heads.heads["affinity"]
    grads = [p.grad for p in head.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    # the loss reached the shared trunk through the affinity head, not the other heads
    assert all(p.grad is None for p in m.heads.heads["semantic"].parameters())
    trunk = [p for n, p in m.named_parameters() if not n.startswith(("heads.", "prompt_encoder."))]
    assert sum(float(p.grad.abs().sum()) for p in trunk if p.grad is not None) > 0


def test_affinity_with_prompts_and_rebuild_from_config(make_model):
    m = make_model("vista2d", affinity_offsets=[(0, -2), (-2, 0)]).eval()
    x = torch.rand(1, 1, 24, 20)
    coords = torch.tensor([[[5.0, 6.0]]])
    with torch.no_grad():
        auto = m(x)["affinity"]
        prompted = m(x, coords)["affinity"]
    assert auto.shape == prompted.shape == (1, 2, 24, 20)
    assert not torch.allclose(auto, prompted)  # the point decoder feeds the same head
    twin = build_model(**m.config)
    assert twin.affinity_offsets == ((0, -2), (-2, 0))
    twin.load_state_dict(m.state_dict())  # same architecture, strict load


@pytest.mark.parametrize("preset", ["small", "base"])
@pytest.mark.parametrize("name", ["vista3d", "vista2d", "segresnet2d"])
def test_presets_carry_the_affinity_head(name, preset):
    with torch.device("meta"):
        m = build_model(name, preset=preset)
    head = m.heads.heads["affinity"]
    last = head[-1]
    assert last.out_channels == len(default_affinity_offsets(m.spatial_dims))
    assert last.in_channels == head[0].out_channels  # hidden width like the other heads
    assert head[0].in_channels == m.feature_size


@pytest.mark.parametrize(
    "offsets,match",
    [
        ([], "empty"),
        ([(0, -1, 0)], r"affinity_offsets\[0\].*2 integers"),
        ([(0, 0)], "zero offset"),
        ([(0, -1), (0, -1)], "twice"),
        ([(0, 1.5)], r"affinity_offsets\[0\]"),
        ("x", "list"),
    ],
)
def test_bad_offsets_raise(offsets, match):
    with pytest.raises(ModelConfigError, match=match):
        build_model("vista2d", preset="tiny", affinity_offsets=offsets)


def test_check_offsets_accepts_integral_values():
    assert check_affinity_offsets([(0.0, -3)], 2) == ((0, -3),)
    assert check_affinity_offsets(None, 3) == tuple(default_affinity_offsets(3))
