"""Fixtures for neurons.models tests: tiny models and small odd-sized inputs."""

from __future__ import annotations

import pytest
import torch

TINY_NAMES = ("vista3d", "vista2d", "segresnet3d", "segresnet2d")


def _make_model(name: str, seed: int = 0, **kwargs):
    from neurons.models import build_model

    torch.manual_seed(seed)
    return build_model(name, preset="tiny", **kwargs)


def _make_image(
    spatial_dims: int, batch: int = 1, seed: int = 0, channels: int = 1
) -> torch.Tensor:
    """Odd-sized input, not a multiple of any stride."""
    shape = (13, 22, 19) if spatial_dims == 3 else (37, 29)
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, channels, *shape), generator=g)


@pytest.fixture
def make_model():
    """``make_model(name, seed=0, **kwargs)``: seeded ``build_model(name, preset="tiny")``."""
    return _make_model


@pytest.fixture
def make_image():
    """``make_image(spatial_dims, batch=1, seed=0, channels=1)``: odd-sized random batch."""
    return _make_image


@pytest.fixture(params=TINY_NAMES)
def tiny_name(request) -> str:
    return request.param


@pytest.fixture
def tiny_model(tiny_name):
    return _make_model(tiny_name)
