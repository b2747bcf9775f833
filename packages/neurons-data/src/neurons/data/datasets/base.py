"""Shared machinery of the dataset readers: file search, missing-data errors, sources."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmptyDatasetError, MissingDataError
from ..volume import ArraySource, LabeledVolume

__all__ = ["CroppedSource", "EMDataset", "default_root", "io_attrs", "pick_key"]

SPLITS = ("train", "test")


def default_root(name: str) -> Path:
    """Default data folder: ``$NEURONS_DATA/<name>`` when that variable is set, else ``data/<name>``."""
    import os

    base = os.environ.get("NEURONS_DATA")
    return Path(base) / name if base else Path("data") / name


def _keys(path: Path) -> list[str]:
    from neurons.io import list_keys

    return list(list_keys(str(path)))


def pick_key(
    path: Path, candidates: Sequence[str], *, required: bool = True, single: bool = True
) -> str | None:
    """First of ``candidates`` present in container ``path``, else its only dataset (``single``).

    Returns None for single-array files (no keys) and, when not ``required``, for no match.
    Raises :class:`MissingDataError` naming the file, the candidates and the keys found.
    """
    keys = _keys(path)
    norm = {k.strip("/"): k for k in keys}
    for c in candidates:
        if c.strip("/") in norm:
            return norm[c.strip("/")]
    if not keys:
        return None  # the file is a single array (e.g. a Zarr array store, a TIFF)
    if not required:
        return None
    if single and len(keys) == 1:
        return keys[0]  # a single dataset is unambiguous
    raise MissingDataError(
        f"{path}: none of the keys {list(candidates)} found; the file contains {sorted(keys)}"
    )


def io_attrs(src: ArraySource) -> tuple[dict[str, Any], tuple[float, ...] | None]:
    """``(attrs, voxel_size)`` of a file-backed source as reported by :mod:`neurons.io`."""
    arr = src._array()
    attrs = dict(getattr(arr, "attrs", None) or {})
    vs = getattr(arr, "voxel_size", None)
    if vs is not None:
        vs = tuple(float(v) for v in vs)
        if len(vs) == 2:
            vs = (1.0, *vs)
    return attrs, vs


class CroppedSource:
    """A fixed ``(Z, Y, X)`` sub-box of another source (e.g. CREMI padded raw vs. labels)."""

    def __init__(self, src: ArraySource, origin: Sequence[int], shape: Sequence[int]) -> None:
        self.src = src
        self.origin = tuple(int(o) for o in origin)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = src.dtype
        self.description = f"{src.description}[origin {self.origin}]"
        for o, s, full in zip(self.origin, self.shape, src.shape, strict=True):
            if o < 0 or o + s > full:
                raise MissingDataError(
                    f"{src.description}: crop at {self.origin} of shape {self.shape} exceeds "
                    f"the array shape {src.shape}"
                )

    def __getitem__(self, box: Sequence[slice]) -> np.ndarray:
        inner = []
        for sl, o, s in zip(box, self.origin, self.shape, strict=True):
            start, stop, step = sl.indices(s)
            inner.append(slice(start + o, stop + o, step))
        return self.src[tuple(inner)]  # type: ignore[arg-type]

    def _array(self) -> Any:
        return self.src._array()


class EMDataset:
    """Base class of the dataset readers.

    A reader finds the files of one dataset under ``root`` (laid out as distributed) and returns
    :class:`~neurons.data.volume.LabeledVolume` objects for the ``"train"`` pool (labelled data;
    the datamodule splits it into train and validation) or the ``"test"`` volumes.

    Subclasses define :attr:`name`, :attr:`download_script`, :attr:`voxel_size` and
    :meth:`_find`.
    """

    name: str = ""
    download_script: str = ""
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root(self.name)

    def volumes(self, split: str = "train") -> list[LabeledVolume]:
        """Volumes of ``split`` (``"train"`` = labelled pool, ``"test"``).

        Raises
        ------
        MissingDataError
            Files are missing; the message lists the searched paths and the download command.
        EmptyDatasetError
            The search found files but no usable volume.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        vols = self._find(split)
        if not vols:
            raise EmptyDatasetError(f"{self.name}: no {split} volumes under {self.root}")
        return vols

    def _find(self, split: str) -> list[LabeledVolume]:
        raise NotImplementedError

    def missing(self, what: str, searched: Iterable[str | Path]) -> MissingDataError:
        """Build the error for missing files, naming every searched path and the download script."""
        searched = [str(s) for s in searched]
        lines = "\n  ".join(searched) if searched else "(nothing)"
        hint = (
            f"\nDownload it with: python scripts/{self.download_script} --output {self.root}"
            if self.download_script
            else ""
        )
        return MissingDataError(
            f"{self.name}: {what} not found under {self.root}. Searched:\n  {lines}{hint}"
        )

    def first_existing(self, names: Iterable[str], base: Path | None = None) -> Path | None:
        """First of ``names`` (relative to ``base`` or the root) that exists."""
        base = self.root if base is None else base
        for n in names:
            p = base / n
            if p.exists():
                return p
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"


def natural_key(path: Path | str) -> list[Any]:
    """Sort key treating digit runs as numbers (``2.png`` before ``10.png``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]
