"""Fixtures for the losses tests; references live in _losses_refs.py (loaded by path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def load_refs():
    name = "_losses_refs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


load_refs()  # test modules read it from sys.modules (conftest is imported before them)


@pytest.fixture
def labels2d():
    return load_refs().random_labels((14, 15), 6, b=2, seed=1)


@pytest.fixture
def labels3d():
    return load_refs().random_labels((5, 9, 10), 5, b=2, seed=2)
