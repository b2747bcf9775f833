"""Point prompts: heatmaps vs brute force, prompts change outputs, validation errors."""

from __future__ import annotations

import pytest
import torch

from neurons.models import PromptError, point_heatmaps


def _brute_heatmaps(coords, labels, shape, sigma, scale):
    """Dense per-point Gaussians, summed per label and clamped (reference for the einsum)."""
    S = len(shape)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    out = torch.zeros(coords.shape[0], 2, *shape, dtype=torch.float64)
    for b in range(coords.shape[0]):
        for n in range(coords.shape[1]):
            lab = int(labels[b, n])
            if lab < 0:
                continue
            d2 = torch.zeros(shape, dtype=torch.float64)
            for d in range(S):
                c = (float(coords[b, n, d]) + 0.5) * scale[d] - 0.5
                s = max(sigma * scale[d], 0.5)
                d2 = d2 + (grids[d] - c) ** 2 / (2 * s * s)
            out[b, 1 - lab] += torch.exp(-d2)
    return out.clamp(max=1.0)


@pytest.mark.parametrize("S", [2, 3])
def test_point_heatmaps_match_brute_force(S):
    g = torch.Generator().manual_seed(0)
    full = (8, 16, 12)[-S:]
    coords = torch.rand(2, 5, S, generator=g) * torch.tensor(full, dtype=torch.float32)
    labels = torch.tensor([[1, 0, -1, 1, 0], [0, 0, 1, -1, -1]])
    for shape in [full, tuple(n // 4 for n in full)]:
        scale = [n / f for n, f in zip(shape, full, strict=True)]
        got = point_heatmaps(coords, labels, shape, 1.5, scale)
        ref = _brute_heatmaps(coords, labels, shape, 1.5, scale)
        assert got.shape == (2, 2, *shape)
        torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


def test_heatmap_hand_value():
    # one positive point at (2, 3); value at (2, 4) is exp(-1 / (2 sigma^2)) with sigma 1
    h = point_heatmaps(torch.tensor([[[2.0, 3.0]]]), torch.tensor([[1]]), (5, 6), 1.0)
    assert h[0, 0, 2, 3] == pytest.approx(1.0)
    assert h[0, 0, 2, 4] == pytest.approx(float(torch.exp(torch.tensor(-0.5))))
    assert h[0, 1].abs().max() == 0


def test_prompts_change_outputs(tiny_model, make_image):
    m = tiny_model.eval()
    S = m.spatial_dims
    x = make_image(S)
    a = torch.tensor([[[4.0, 6.0, 5.0]]])[..., -S:]
    b = torch.tensor([[[10.0, 18.0, 15.0]]])[..., -S:]
    pos = torch.tensor([[1]])
    with torch.no_grad():
        auto = m(x)
        pa, pb = m(x, a, pos), m(x, b, pos)
        neg = m(x, a, torch.tensor([[0]]))
        cls = m(x, a, pos, prompt_class=torch.tensor([3]))
    for key in auto:
        assert not torch.allclose(auto[key], pa[key]), key
        assert not torch.allclose(pa[key], pb[key]), key  # where the point is matters
        assert not torch.allclose(pa[key], neg[key]), key  # its sign matters
        assert not torch.allclose(pa[key], cls[key]), key  # the target class matters
    # moving the point changes the prediction most around the point
    diff = (pa["semantic"] - pb["semantic"]).abs().sum(1)[0]
    grids = torch.meshgrid(*[torch.arange(n) for n in x.shape[2:]], indexing="ij")
    dist_a = torch.sqrt(sum((g - a[0, 0, i]) ** 2 for i, g in enumerate(grids)))
    dist_b = torch.sqrt(sum((g - b[0, 0, i]) ** 2 for i, g in enumerate(grids)))
    far = (dist_a > 8) & (dist_b > 8)
    assert far.any()
    assert diff[dist_a <= 3].mean() > diff[far].mean()


def test_padding_points_are_ignored(tiny_model, make_image):
    m = tiny_model.eval()
    S = m.spatial_dims
    x = make_image(S, batch=2)
    coords = torch.tensor([[4.0, 6.0, 5.0], [1.0, 2.0, 3.0]])[:, -S:].expand(2, -1, -1).clone()
    labels = torch.tensor([[1, -1], [1, -1]])
    with torch.no_grad():
        one = m(x, coords[:, :1], labels[:, :1])
        padded = m(x, coords, labels)
        coords_moved = coords.clone()
        coords_moved[:, 1] = 1e6  # padding points are not bounds-checked nor used
        moved = m(x, coords_moved, labels)
    for k in one:
        torch.testing.assert_close(one[k], padded[k])
        torch.testing.assert_close(one[k], moved[k])


def test_prompt_errors(make_model, make_image):
    m = make_model("vista2d")
    x = make_image(2)  # (1, 1, 37, 29)
    ok = torch.tensor([[[3.0, 4.0]]])
    with pytest.raises(PromptError, match=r"shape \(B=1, N, S=2\)"):
        m(x, torch.zeros(1, 2, 3))
    with pytest.raises(PromptError, match="outside the image"):
        m(x, torch.tensor([[[36.0, 29.0]]]), torch.tensor([[1]]))
    with pytest.raises(PromptError, match="got values \\[2\\]"):
        m(x, ok, torch.tensor([[2]]))
    with pytest.raises(PromptError, match="point_labels must have shape"):
        m(x, ok, torch.tensor([[1, 1]]))
    with pytest.raises(PromptError, match="without point_coords"):
        m(x, None, torch.tensor([[1]]))
    with pytest.raises(PromptError, match=r"\[0, 16\) or -1"):
        m(x, ok, prompt_class=torch.tensor([16]))
    with pytest.raises(ValueError):  # PromptError is a ValueError
        m(x, ok, torch.tensor([[1.0]]))
