"""Output dict contract: keys, shapes at odd sizes, padding helpers, anisotropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurons.models import (
    OUTPUT_KEYS,
    crop_to_shape,
    geometry_channels,
    pad_to_multiple,
    padded_shape,
)


def test_output_shapes_odd_sizes(tiny_model, make_image):
    m = tiny_model
    S = m.spatial_dims
    x = make_image(S, batch=2)
    out = m(x)
    assert tuple(out) == OUTPUT_KEYS
    spatial = tuple(x.shape[2:])
    assert out["semantic"].shape == (2, 16, *spatial)
    assert out["instance"].shape == (2, 16, *spatial)
    assert out["geometry"].shape == (2, S + S * S + 4, *spatial)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert (m.spatial_dims, m.num_classes, m.emb_dim, m.in_channels) == (S, 16, 16, 1)


@pytest.mark.parametrize("name", ["vista3d", "segresnet2d"])
def test_custom_widths_and_channels(name, make_model, make_image):
    m = make_model(name, num_classes=5, emb_dim=4, in_channels=2)
    x = make_image(m.spatial_dims, channels=2)
    out = m(x)
    assert out["semantic"].shape[1] == 5 and out["instance"].shape[1] == 4
    assert (m.num_classes, m.emb_dim, m.in_channels) == (5, 4, 2)


def test_geometry_channels_hand_values():
    assert geometry_channels(3) == 3 + 9 + 4 == 16
    assert geometry_channels(2) == 2 + 4 + 4 == 10


def test_padded_shape_hand_cases():
    assert padded_shape((13, 22, 19), (4, 4, 4)) == (16, 24, 20)
    assert padded_shape((8, 1), (8, 8)) == (8, 8)
    assert padded_shape((1, 17, 16), (1, 8, 8)) == (1, 24, 16)


@pytest.mark.parametrize(
    "mode,np_mode", [("replicate", "edge"), ("constant", "constant"), ("circular", "wrap")]
)
def test_pad_matches_numpy_and_crop_inverts(mode, np_mode):
    x = torch.rand(2, 3, 5, 7, 6, dtype=torch.float64)
    y = pad_to_multiple(x, (4, 4, 8), mode=mode)
    assert y.shape == (2, 3, 8, 8, 8)
    ref = np.pad(x.numpy(), [(0, 0), (0, 0), (0, 3), (0, 1), (0, 2)], mode=np_mode)
    np.testing.assert_array_equal(y.numpy(), ref)
    assert torch.equal(crop_to_shape(y, (5, 7, 6)), x)
    assert pad_to_multiple(x, (5, 7, 6)) is x  # already a multiple: no copy


def test_anisotropic_resolution_accepts_single_slice_depth(make_model):
    # 40 nm z / 4 nm xy: SegResNetDS keeps z at full resolution, so a depth-1 patch is valid.
    m = make_model("vista3d", resolution=(40, 4, 4))
    assert m.shape_factor() == (1, 4, 4)
    x = torch.rand(1, 1, 1, 21, 18)
    out = m(x)
    assert out["semantic"].shape == (1, 16, 1, 21, 18)
