"""Fixtures and helpers for the neurons.io tests."""

from __future__ import annotations

import numpy as np
import pytest

DTYPES = ["uint8", "uint16", "uint32", "uint64", "float32", "bool"]
SHAPES = {"2d": (7, 9), "3d": (4, 7, 9)}

# name -> (destination suffix, write_volume kwargs, dtypes it cannot store)
FORMATS = {
    "hdf5": (".h5", {}, ()),
    "hdf5-gzip": (".hdf5", {"compression": "gzip", "chunks": (2, 4, 4)}, ()),
    "tiff": (".tif", {}, ()),
    "tiff-zlib": (".tiff", {"compression": "zlib"}, ()),
    "slices": ("", {}, ()),
    "png-slices": ("", {"format": "png-slices"}, ("uint32", "uint64", "float32")),
    "png": (".png", {}, ("uint32", "uint64", "float32")),
    "nrrd": (".nrrd", {}, ()),
    "nrrd-gzip": (".nrrd", {"compression": "gzip"}, ()),
    "nifti": (".nii", {}, ()),
    "nifti-gz": (".nii.gz", {}, ()),
    "npy": (".npy", {}, ()),
    "zarr": (".zarr", {"chunks": (2, 4, 4)}, ()),
    "zarr-gzip": (".zarr", {"compression": "gzip"}, ()),
}


def make_array(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random test data that exercises each dtype's extremes."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype == "float32":
        a = rng.normal(size=shape).astype(np.float32) * 1e3
        a.flat[0], a.flat[1] = np.float32(-0.0), np.finfo(np.float32).max
        return a
    info = np.iinfo(dtype)
    a = rng.integers(0, info.max, size=shape, dtype=dtype, endpoint=True)
    a.flat[0], a.flat[1], a.flat[2] = info.max, 0, info.max // 2 + 1  # 2^63 for uint64
    return a


def fit_chunks(kwargs: dict, ndim: int) -> dict:
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("chunks"), tuple):
        kwargs["chunks"] = kwargs["chunks"][-ndim:]
    return kwargs


@pytest.fixture(params=sorted(FORMATS))
def fmt(request):
    """A format variant name (key of ``FORMATS``)."""
    if request.param.startswith("zarr"):
        pytest.importorskip("zarr")
    return request.param


@pytest.fixture
def spec(fmt):
    """(suffix, write kwargs, unsupported dtypes) of ``fmt``."""
    return FORMATS[fmt]


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param


@pytest.fixture(params=sorted(SHAPES))
def shape(request):
    return SHAPES[request.param]


@pytest.fixture
def shapes():
    return SHAPES


@pytest.fixture
def array_factory():
    """``make_array(dtype, shape, seed=0)``."""
    return make_array


@pytest.fixture
def chunks_fitter():
    """``fit_chunks(kwargs, ndim)``: trim example chunks to the array's rank."""
    return fit_chunks
