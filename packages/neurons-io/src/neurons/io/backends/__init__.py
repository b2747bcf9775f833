"""One module per format. :func:`get_backend` imports them lazily."""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {
    "hdf5": "hdf5",
    "npy": "npy",
    "tiff": "tiff",
    "png": "png",
    "slices": "slices",
    "nrrd": "nrrd",
    "nifti": "nifti",
    "zarr": "zarrstore",
}


def get_backend(fmt: str) -> ModuleType:
    """The backend module of format ``fmt`` (``open``, ``write``, ``list_keys``, ``check``)."""
    return importlib.import_module(f"{__name__}.{_MODULES[fmt]}")
