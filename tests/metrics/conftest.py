"""Fixtures of the neurons-metrics tests: small random and structured label pairs."""

from __future__ import annotations

import numpy as np
import pytest


def blocky_pair(rng: np.random.Generator, shape=(6, 24, 24), k_gt=6, k_pred=9, bg=True):
    """A piecewise-constant gt (coarse random labels upsampled) and a perturbed prediction."""
    cs = tuple(max(1, s // 3) for s in shape)
    g = rng.integers(0 if bg else 1, k_gt, size=cs)
    gt = np.kron(g, np.ones((3, 3, 3), int))[: shape[0], : shape[1], : shape[2]]
    pred = gt * 7 + rng.integers(0, 2, size=gt.shape) * (rng.random(gt.shape) < 0.05)
    pred = np.where(rng.random(gt.shape) < 0.03, rng.integers(0, k_pred, gt.shape), pred)
    return gt, pred


@pytest.fixture
def pair(rng):
    return blocky_pair(rng)


@pytest.fixture
def make_pair():
    """``make_pair(seed, **kw)`` -> (gt, pred) blocky pair."""
    return lambda seed, **kw: blocky_pair(np.random.default_rng(seed), **kw)


@pytest.fixture(params=range(5), ids=lambda i: f"case{i}")
def case(request):
    """Structured (blocky 3-D) and unstructured (random 1-D / 2-D) label pairs."""
    rng = np.random.default_rng(100 + request.param)
    if request.param < 3:
        return blocky_pair(rng)
    if request.param == 3:
        return rng.integers(0, 4, 300), rng.integers(0, 6, 300)
    return rng.integers(0, 30, (10, 10)), rng.integers(0, 3, (10, 10))
