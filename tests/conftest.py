"""Fixtures shared by every package's tests.

Tests read the real data in ``../shared/data`` when it is present (developers' machines and CI)
and skip otherwise: users' clones do not have it, and it is never committed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NEURONS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def isbi2012_dir() -> Path:
    """The real ISBI 2012 training stack (30 sections 512x512), or skip when absent."""
    root = SHARED_DATA / "isbi2012" / "train"
    if not (root / "image").is_dir():
        pytest.skip(f"real ISBI 2012 data not found under {root}")
    return root


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
