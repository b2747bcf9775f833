"""Sliding-window prediction: full coverage, Gaussian blending, region == whole volume, TTA."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from neurons.train.inference import (
    InferenceError,
    SlidingWindow,
    gaussian_weight,
    predict_region,
    predict_volume,
    window_starts,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test machine is shared: OpenMP spin-waiting on busy cores slows torch ~1000x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(
    ("length", "window", "stride"),
    [(10, 4, 3), (7, 4, 2), (3, 8, 4), (16, 16, 8), (17, 16, 8), (100, 32, 24), (1, 1, 1)],
)
def test_window_starts_cover_every_voxel(length, window, stride):
    starts = window_starts(length, window, stride)
    w = min(window, length)
    covered = np.zeros(length, dtype=int)
    for s in starts:
        assert 0 <= s <= length - w
        covered[s : s + w] += 1
    assert covered.min() >= 1
    assert starts[-1] + w == length
    assert np.all(np.diff(starts) <= stride)


def _position_model(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output depends on the position inside the window (so windows disagree)."""
    ramp = torch.linspace(0.0, 1.0, x.shape[-1])
    return {"instance": x + ramp, "semantic": torch.cat([x, 1 - x], 1)}


def _brute_force_blend(volume: np.ndarray, window, stride) -> np.ndarray:
    """Reference: enumerate windows independently, Gaussian-weighted average of outputs."""
    vol = volume.astype(np.float32) / 255.0
    shape = vol.shape
    win = tuple(min(w, s) for w, s in zip(window, shape, strict=True))
    starts = []
    for s, w, st in zip(shape, win, stride, strict=True):
        pos, p = [], 0
        while True:
            pos.append(min(p, s - w))
            if p + w >= s:
                break
            p += st
        starts.append(sorted(set(pos)))
    g = gaussian_weight(win)
    acc = np.zeros(shape)
    wsum = np.zeros(shape)
    ramp = np.linspace(0.0, 1.0, win[-1])
    for origin in itertools.product(*starts):
        box = tuple(slice(o, o + w) for o, w in zip(origin, win, strict=True))
        acc[box] += g * (vol[box] + ramp)
        wsum[box] += g
    return acc / wsum


@pytest.mark.parametrize(
    ("shape", "window"),
    [((19, 45, 37), (8, 16, 16)), ((45, 37), (16, 16)), ((5, 6, 70), (8, 8, 32))],
)
def test_non_multiple_volume_fully_covered_and_blended(rng, shape, window):
    vol = rng.integers(0, 256, size=shape).astype(np.uint8)
    sw = SlidingWindow(window=window, overlap=0.5)
    out = predict_volume(_position_model, vol, sw)
    assert out["instance"].shape == (1, *shape)
    ref = _brute_force_blend(vol, window, sw.stride(shape))
    np.testing.assert_allclose(out["instance"][0], ref, atol=1e-5)
    # softmax-activated semantic: probabilities everywhere, tails included (no zeros)
    np.testing.assert_allclose(out["semantic"].sum(0), 1.0, atol=1e-5)


def test_identity_model_reproduces_input_everywhere(rng):
    vol = rng.integers(0, 256, size=(13, 29, 31)).astype(np.uint8)
    sw = SlidingWindow(window=(8, 16, 16), overlap=0.3, batch_size=3, keys=None)
    out = predict_volume(lambda x: {"raw": x}, vol, sw)
    np.testing.assert_allclose(out["raw"][0], vol / 255.0, atol=1e-6)


class _Conv(torch.nn.Module):
    def __init__(self, ndim: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        conv = torch.nn.Conv3d if ndim == 3 else torch.nn.Conv2d
        self.a = conv(1, 4, 3, padding=1)
        self.b = conv(4, 3, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return {"semantic": self.b(h), "instance": h}


@pytest.mark.parametrize("ndim", [2, 3])
def test_region_prediction_equals_whole_volume(rng, ndim):
    shape = (21, 40, 33) if ndim == 3 else (70, 53)
    window = (8, 16, 16) if ndim == 3 else (24, 24)
    vol = rng.integers(0, 256, size=shape).astype(np.uint8)
    model = _Conv(ndim).eval()
    sw = SlidingWindow(window=window, overlap=0.25, batch_size=2)
    whole = predict_volume(model, vol, sw)
    for _ in range(4):
        lo = [int(rng.integers(0, s - 1)) for s in shape]
        hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, shape, strict=True)]
        region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        part = predict_region(model, vol, sw, region)
        for k in whole:
            np.testing.assert_allclose(part[k], whole[k][(slice(None), *region)], atol=1e-5)


def test_tta_flips_pointwise_model_and_geometry_signs():
    calls = []

    def model(x):
        calls.append(1)
        # geometry channel d = gradient of the input along spatial axis d (exact on a ramp)
        grads = torch.gradient(x[:, 0], dim=(1, 2))
        return {"semantic": torch.cat([x, -x], 1), "geometry": torch.stack(grads, 1)}

    ramp = np.add.outer(np.arange(12) * 2.0, np.arange(10) * 3.0).astype(np.float32)
    sw = SlidingWindow(window=(8, 8), tta="flips", keys=None)
    plain = predict_volume(model, ramp, SlidingWindow(window=(8, 8), keys=None))
    n_plain = len(calls)
    calls.clear()
    out = predict_volume(model, ramp, sw)
    assert len(calls) == 4 * n_plain  # identity + 3 flips of 2 axes
    np.testing.assert_allclose(out["semantic"], plain["semantic"], atol=1e-6)
    np.testing.assert_allclose(out["geometry"][0], 2.0, atol=1e-5)
    np.testing.assert_allclose(out["geometry"][1], 3.0, atol=1e-5)


def test_gaussian_weight_floor_and_errors():
    w = gaussian_weight((9, 9))
    assert w.max() == pytest.approx(1.0) and w.min() >= 1e-3
    with pytest.raises(InferenceError, match="spatial axes"):
        predict_volume(lambda x: x, np.zeros((4, 4, 4)), SlidingWindow(window=(4, 4)))
    with pytest.raises(InferenceError, match="overlap"):
        SlidingWindow(window=(4, 4), overlap=1.0)
    with pytest.raises(InferenceError, match="expected"):
        predict_volume(lambda x: x[..., :2], np.zeros((8, 8)), SlidingWindow(window=(4, 4)))
