"""Lazy labelled volumes: the unit every dataset reader produces and every sampler reads from.

A :class:`LabeledVolume` holds an image source, zero or more label sources and a converter that
turns label arrays of a region into ``(instance ids, unified semantic map)``. Sources are
:class:`ArraySource` objects: in-memory arrays, or files opened through :mod:`neurons.io` on first
access *in each process*, so that only the requested region is read and objects pickle cleanly
into DataLoader workers (open file handles are dropped when pickled and re-opened on demand).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ShapeMismatchError
from .labels import IGNORE_INDEX, semantic_ids_vector

__all__ = ["ArraySource", "LabeledVolume", "intensity_range", "open_io_volume", "scale_intensity"]

Box = tuple[slice, slice, slice]


def open_io_volume(path: str | Path, key: str | None = None) -> Any:
    """Open ``path`` (``key`` inside containers) lazily through :func:`neurons.io.open_volume`."""
    from neurons.io import open_volume

    return open_volume(str(path), key=key)


class ArraySource:
    """A lazily opened 2D/3D array exposed as 3D ``(Z, Y, X)``.

    Parameters
    ----------
    data : array-like, optional
        In-memory array (or any object with ``shape``, ``dtype`` and numpy slicing).
    opener : callable, optional
        Picklable zero-argument callable returning such an object (e.g. an opened
        :class:`neurons.io.Volume`). Called at most once per process.
    description : str
        Where the data comes from (file and key), used in error messages.

    Examples
    --------
    >>> src = ArraySource(np.zeros((4, 8, 8), np.uint8), description="zeros")
    >>> src[(slice(0, 2), slice(0, 4), slice(0, 4))].shape
    (2, 4, 4)
    """

    def __init__(
        self,
        data: Any = None,
        *,
        opener: Callable[[], Any] | None = None,
        description: str = "<array>",
    ) -> None:
        if (data is None) == (opener is None):
            raise ValueError("ArraySource needs exactly one of data= or opener=")
        self._data = data
        self._opener = opener
        self._pid = os.getpid()
        self.description = description
        arr = self._array()
        shape = tuple(int(s) for s in arr.shape)
        if len(shape) not in (2, 3):
            raise ShapeMismatchError(
                f"{description}: expected a 2D (Y, X) or 3D (Z, Y, X) array, got shape {shape}"
            )
        self._expand = len(shape) == 2
        self.shape: tuple[int, int, int] = (1, *shape) if self._expand else shape  # type: ignore[assignment]
        self.dtype = np.dtype(arr.dtype)

    @classmethod
    def from_file(cls, path: str | Path, key: str | None = None) -> ArraySource:
        """Source reading ``path`` (and ``key``) through :mod:`neurons.io`."""
        desc = f"{path}:{key}" if key else str(path)
        return cls(opener=partial(open_io_volume, str(path), key), description=desc)

    def _array(self) -> Any:
        if self._opener is not None and (self._data is None or self._pid != os.getpid()):
            # (re)open in this process: handles inherited through fork (DataLoader workers)
            # share file offsets / HDF5 state with the parent and must not be used
            self._data = self._opener()
            self._pid = os.getpid()
        return self._data

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._opener is not None:
            state["_data"] = None  # file handles do not pickle; reopen in the worker
        return state

    def __getitem__(self, box: Box) -> np.ndarray:
        arr = self._array()
        if self._expand:
            z = box[0]
            out = np.asarray(arr[box[1], box[2]])
            return out[None][z]
        return np.asarray(arr[tuple(box)])

    def read_all(self) -> np.ndarray:
        """Read the whole array (as ``(Z, Y, X)``)."""
        return self[(slice(None), slice(None), slice(None))]

    def __repr__(self) -> str:
        return f"ArraySource({self.description}, shape={self.shape}, dtype={self.dtype})"


def intensity_range(src: Any, max_slices: int = 16) -> tuple[float, float]:
    """The ``(lo, hi)`` raw range a volume's image is scaled with, for training and inference.

    uint8 -> ``(0, 255)``; bool -> ``(0, 1)``; floats already in [0, 1] -> ``(0, 1)``;
    anything else -> min/max of up to ``max_slices`` evenly strided z-sections (only those are
    read). One range per volume, so every patch or block of it is scaled alike.

    Parameters
    ----------
    src : array-like
        ``(Z, Y, X)`` volume with ``shape``, ``dtype`` and numpy slicing (numpy array,
        :class:`ArraySource`, ``neurons.io`` Volume, h5py/zarr dataset).
    max_slices : int
        Number of sections sampled for the min/max.

    Returns
    -------
    tuple of float
        ``(lo, hi)`` with ``lo < hi``.

    Examples
    --------
    >>> intensity_range(np.array([[[100, 4100]]], np.uint16))
    (100.0, 4100.0)
    """
    dtype = np.dtype(src.dtype)
    if dtype == np.uint8:
        return 0.0, 255.0
    if dtype == np.bool_:
        return 0.0, 1.0
    z = src.shape[0]
    step = max(1, z // max_slices)
    sample = np.asarray(src[(slice(0, z, step), slice(None), slice(None))])
    lo, hi = float(np.min(sample)), float(np.max(sample))
    if dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def scale_intensity(raw: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Raw intensities to float32 in [0, 1]: ``(raw - lo) / (hi - lo)``, clipped.

    Parameters
    ----------
    raw : numpy.ndarray
        Any numeric array.
    value_range : (float, float)
        ``(lo, hi)``, e.g. from :func:`intensity_range`.

    Returns
    -------
    numpy.ndarray
        float32, same shape (a new array).

    Examples
    --------
    >>> scale_intensity(np.array([50, 100, 300], np.uint16), (100, 200)).tolist()
    [0.0, 0.0, 1.0]
    """
    lo, hi = (float(v) for v in value_range)
    image = np.array(raw, dtype=np.float32)
    if (lo, hi) != (0.0, 1.0):
        image -= np.float32(lo)
        image *= np.float32(1.0 / (hi - lo))
    np.clip(image, 0.0, 1.0, out=image)
    return image


def _no_labels(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(shape, np.int64), np.full(shape, IGNORE_INDEX, np.uint8)


def identity_labels(instance: np.ndarray, semantic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Converter for volumes whose labels are already ``(instance, unified semantic)``."""
    return instance, semantic


@dataclass
class LabeledVolume:
    """One image volume with its labels and the rule mapping them to the unified space.

    Attributes
    ----------
    name : str
        Unique name, e.g. ``"snemi3d/AC4"``.
    dataset : str
        Registry name of the source dataset (``"cremi3d"``...).
    image : ArraySource
        Raw intensities ``(Z, Y, X)``.
    labels : dict of str to ArraySource
        Label arrays passed by keyword to ``converter`` (empty when unlabelled).
    converter : callable
        ``converter(**label_regions) -> (instance ids, semantic uint8)``.
    annotated : tuple of int
        Unified classes these labels annotate (``semantic_ids``).
    voxel_size : tuple of float
        ``(z, y, x)`` in nm.
    """

    name: str
    dataset: str
    image: ArraySource
    labels: dict[str, ArraySource] = field(default_factory=dict)
    converter: Callable[..., tuple[np.ndarray, np.ndarray]] = identity_labels
    annotated: tuple[int, ...] = ()
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for key, src in self.labels.items():
            if src.shape != self.image.shape:
                raise ShapeMismatchError(
                    f"{self.name}: label '{key}' ({src.description}) has shape {src.shape} but the "
                    f"image ({self.image.description}) has shape {self.image.shape}; they must match"
                )
        if not self.labels:
            self.annotated = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` shape."""
        return self.image.shape

    @property
    def has_labels(self) -> bool:
        """Whether the volume carries any annotation."""
        return bool(self.labels)

    @property
    def semantic_ids(self) -> np.ndarray:
        """int64 ``(5,)`` flags of the annotated unified classes."""
        return semantic_ids_vector(self.annotated)

    def read(self, box: Sequence[slice] | None = None) -> dict[str, np.ndarray]:
        """Read a region.

        Parameters
        ----------
        box : sequence of three slices, optional
            ``(z, y, x)`` region; the whole volume when omitted.

        Returns
        -------
        dict
            ``image`` float32 in [0, 1], ``instance`` integer ids (source dtype, 0 background),
            ``semantic`` uint8 unified classes (255 = ignore), all ``(Z, Y, X)``.
        """
        if box is None:
            box = (slice(None),) * 3
        box = tuple(box)  # type: ignore[assignment]
        if self.intensity_range is None:
            self.intensity_range = intensity_range(self.image)
        image = scale_intensity(self.image[box], self.intensity_range)  # type: ignore[index]
        if self.labels:
            regions = {k: src[box] for k, src in self.labels.items()}  # type: ignore[index]
            instance, semantic = self.converter(**regions)
        else:
            instance, semantic = _no_labels(image.shape)
        return {"image": image, "instance": instance, "semantic": semantic}

    def summary(self) -> Mapping[str, Any]:
        """Plain-dict description (name, shape, dtype, voxel size, annotated classes)."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "shape": self.shape,
            "dtype": str(self.image.dtype),
            "voxel_size": self.voxel_size,
            "labels": sorted(self.labels),
            "annotated": self.annotated,
        }
