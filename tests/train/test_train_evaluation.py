"""Validation decoders against scipy/brute-force references; image panels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from neurons.train.evaluation import decode_components, decode_embedding, remove_small
from neurons.train.visualize import embedding_pca, id_colours, make_panels


def _same_partition(a, b):
    """a and b induce the same partition (brute-force pair check on a sample of voxels)."""
    a, b = a.ravel(), b.ravel()
    pairs_a = a[:, None] == a[None, :]
    pairs_b = b[:, None] == b[None, :]
    return np.array_equal(pairs_a, pairs_b)


def test_decode_components_matches_scipy_per_class(rng):
    sem = rng.integers(0, 5, size=(6, 12, 12))
    sem = ndimage.median_filter(sem, size=3)
    got = decode_components(sem, min_size=1)
    ref = np.zeros(sem.shape, dtype=np.int64)
    off = 0
    for group in ((1,), (2,), (3, 4)):  # mitochondria are decoded with their boundary
        lab, n = ndimage.label(np.isin(sem, group))
        ref[lab > 0] = lab[lab > 0] + off
        off += n
    assert _same_partition(got, ref)
    assert (got[np.isin(sem, (0,))] == 0).all()


def test_remove_small_drops_and_renumbers():
    lab = np.array([[1, 1, 1, 0, 2], [3, 3, 0, 0, 0]])
    out = remove_small(lab, 2)
    assert out.tolist() == [[1, 1, 1, 0, 0], [2, 2, 0, 0, 0]]


def test_decode_embedding_recovers_perfect_embeddings():
    gt = np.zeros((4, 16, 16), dtype=np.int64)
    gt[:, :8, :8], gt[:, 8:, :8], gt[:, :, 8:14] = 1, 2, 3
    centres = torch.tensor([[0.0, 0, 0], [3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    emb = centres[torch.from_numpy(gt)].permute(3, 0, 1, 2)  # (E, Z, Y, X)
    emb = emb + 0.05 * torch.randn(emb.shape, generator=torch.Generator().manual_seed(0))
    fg = torch.from_numpy(gt > 0)
    got = decode_embedding(emb, fg, bandwidth=0.5, min_size=1)
    assert _same_partition(got[gt > 0][::7], gt[gt > 0][::7])
    assert len(np.unique(got[gt > 0])) == 3 and (got[gt == 0] == 0).all()
    again = decode_embedding(emb, fg, bandwidth=0.5, min_size=1)
    assert np.array_equal(got, again)  # deterministic


def test_id_colours_handle_uint64_ids_without_tables():
    ids = np.array([[0, 1, 2**63 + 7, 2**63 + 7]], dtype=np.uint64)
    rgb = id_colours(ids)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert (
        (rgb[0, 0] == 0).all() and (rgb[0, 2] == rgb[0, 3]).all() and (rgb[0, 1] != rgb[0, 2]).any()
    )


def test_embedding_pca_matches_numpy_svd():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 10, 12, generator=g)
    img = embedding_pca(emb)
    assert img.shape == (10, 12, 3) and img.dtype == np.uint8
    x = emb.reshape(6, -1).numpy().astype(np.float64)
    x -= x.mean(1, keepdims=True)
    u, _, _ = np.linalg.svd(x, full_matrices=False)
    pc1 = u[:, 0] @ x
    pc1 = (pc1 - pc1.min()) / (pc1.max() - pc1.min()) * 255
    got = img[..., 0].astype(np.float64).ravel()
    corr = abs(np.corrcoef(got, pc1)[0, 1])
    assert corr > 0.999


def test_make_panels_3d_central_slice():
    img = torch.rand(1, 5, 8, 8)
    sem = torch.randn(16, 5, 8, 8)
    emb = torch.randn(4, 5, 8, 8)
    gt = np.arange(5 * 64).reshape(5, 8, 8)
    panels = make_panels(img, sem, emb, gt, gt, np.ones((5, 8, 8), dtype=np.int64))
    assert set(panels) == {
        "raw",
        "semantic",
        "semantic_gt",
        "instance_gt",
        "instance_pred",
        "embedding_pca",
    }
    assert all(p.shape == (8, 8, 3) and p.dtype == np.uint8 for p in panels.values())


def test_score_patch_against_sklearn_and_hand_counts():
    sk = pytest.importorskip("sklearn.metrics")
    adjusted_mutual_info_score, adjusted_rand_score = (
        sk.adjusted_mutual_info_score,
        sk.adjusted_rand_score,
    )

    from neurons.train.evaluation import score_patch

    g = np.random.default_rng(0)
    gt = g.integers(0, 5, size=(6, 10, 10))
    pred = np.where(g.random(gt.shape) < 0.8, gt, g.integers(0, 5, size=gt.shape))
    gsem = (gt > 0).astype(np.int64)
    gsem[0] = 255  # ignored slice
    psem = (pred > 0).astype(np.int64)
    s = score_patch(gt, pred, gsem, psem)
    keep = (gsem != 255) & (gt > 0)  # ignored voxels and gt background dropped
    assert s["ari"] == pytest.approx(adjusted_rand_score(gt[keep], pred[keep]), abs=1e-9)
    assert s["ami"] == pytest.approx(adjusted_mutual_info_score(gt[keep], pred[keep]), abs=1e-6)
    valid = gsem != 255
    a, b = gsem[valid] == 1, psem[valid] == 1
    assert s["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert s["iou"] == pytest.approx((a & b).sum() / (a | b).sum())
    assert s["voi"] == pytest.approx(s["voi_split"] + s["voi_merge"])
    assert 0 <= s["arand"] <= 1
    perfect = score_patch(gt, gt, gsem, gsem)
    assert perfect["ari"] == pytest.approx(1.0) and perfect["arand"] == pytest.approx(0.0)
    assert perfect["voi"] == pytest.approx(0.0, abs=1e-12)


def test_embedding_pca_survives_a_failing_eigh(monkeypatch):
    """bf16 embeddings made LAPACK eigh fail intermittently inside validation: fall back."""
    import torch

    def boom(*_a, **_k):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigh", boom)
    e = torch.arange(4 * 6 * 5, dtype=torch.float32).reshape(4, 6, 5)
    img = embedding_pca(e)
    assert img.shape == (6, 5, 3) and img.dtype.name == "uint8"
    assert img.max() == 255  # channels 0..2, each stretched to the full range
