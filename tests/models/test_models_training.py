"""Gradients, bf16 autocast, eval determinism, state_dict round trip."""

from __future__ import annotations

import pytest
import torch

from neurons.models import build_model


def _loss(out):
    return sum((v.float() ** 2).mean() for v in out.values())


def _prompt(S, batch=1):
    coords = torch.tensor([[5.0, 7.0, 9.0], [2.0, 15.0, 3.0]])[:, -S:]
    coords = coords.expand(batch, -1, -1).clone()
    labels = torch.tensor([[1, 0]]).expand(batch, -1).clone()
    return coords, labels


def test_every_head_and_branch_gets_gradient(tiny_model, make_image):
    m = tiny_model
    S = m.spatial_dims
    x = make_image(S, batch=2)
    _loss(m(x)).backward()
    for key, head in m.heads.heads.items():
        grads = [p.grad for p in head.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), key
    enc = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert enc and all(torch.isfinite(g).all() for g in enc)
    # proofreading mode: the prompt encoder (and for Vista the point decoder) get gradient
    m.zero_grad(set_to_none=True)
    coords, labels = _prompt(S, batch=2)
    _loss(m(x, coords, labels, prompt_class=torch.tensor([1, -1]))).backward()
    pe = m.prompt_encoder
    for proj in pe.point_proj:
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    for emb in pe.class_embed:
        assert emb.weight.grad[1].abs().sum() > 0 and emb.weight.grad[m.num_classes].abs().sum() > 0
    if hasattr(m.backbone, "up_layers_auto"):
        assert all(p.grad is None for p in m.backbone.up_layers_auto.parameters())
        assert all(p.grad is not None for p in m.backbone.up_layers.parameters())


def test_eval_is_deterministic(tiny_model, make_image):
    m = tiny_model.eval()
    x = make_image(m.spatial_dims)
    with torch.no_grad():
        a, b = m(x), m(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_state_dict_round_trip(tmp_path, tiny_name, make_model, make_image):
    m = make_model(tiny_name, seed=0).eval()
    path = tmp_path / "model.pt"
    torch.save({"state_dict": m.state_dict(), "config": m.config}, path)
    ckpt = torch.load(path, weights_only=True)
    torch.manual_seed(123)
    m2 = build_model(**ckpt["config"]).eval()
    x = make_image(m.spatial_dims)
    with torch.no_grad():
        before = m2(x)["semantic"]
        assert not torch.equal(before, m(x)["semantic"])  # different init -> different output
        m2.load_state_dict(ckpt["state_dict"])
        a, b = m(x), m2(x)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", ["vista3d", "segresnet2d"])
def test_bf16_autocast_forward_backward(name, make_model, make_image):
    m = make_model(name)
    x = make_image(m.spatial_dims)
    coords, labels = _prompt(m.spatial_dims)
    with torch.no_grad():
        ref = m(x, coords, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, coords, labels)
        loss = _loss(out)
    assert out["semantic"].dtype == torch.bfloat16
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    for k in out:
        a, b = out[k].float().flatten(), ref[k].flatten()
        assert torch.isfinite(a).all()
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.98, k
