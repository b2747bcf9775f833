"""Explicit splits of user volumes: whole volumes, z-ranges or boxes, checked to be disjoint.

A split entry (``data.options.train`` / ``val``) is a volume name (the whole volume) or a mapping
``{volume: NAME, z: [z0, z1]}`` (sections ``z0 .. z1-1``, all of Y and X) or
``{volume: NAME, box: [[z0, z1], [y0, y1], [x0, x1]]}``. Patches are drawn inside their regions,
so disjoint regions mean no validation voxel is ever inside a training patch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .datasets.volumes import VolumeSpecError
from .errors import EmptyDatasetError
from .splits import Region
from .volume import LabeledVolume

__all__ = ["BoxRegion", "check_disjoint", "region_bounds", "resolve_split"]


@dataclass(frozen=True, eq=False)
class BoxRegion(Region):
    """The box ``[z0, z1) x [y0, y1) x [x0, x1)`` of a volume (a :class:`Region` with Y/X limits).

    Examples
    --------
    >>> BoxRegion(volume, 0, 10, 0, 64, 32, 96).shape  # doctest: +SKIP
    (10, 64, 64)
    """

    y0: int = 0
    y1: int = 0
    x0: int = 0
    x1: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` of the box."""
        return (self.z1 - self.z0, self.y1 - self.y0, self.x1 - self.x0)

    def read(self, start: Sequence[int], size: Sequence[int]) -> dict[str, np.ndarray]:
        """Read ``start .. start + size`` given in box coordinates."""
        lo = (self.z0, self.y0, self.x0)
        box = []
        for axis, (s, n, o, full) in enumerate(zip(start, size, lo, self.shape, strict=True)):
            s, n = int(s), int(n)
            if s < 0 or s + n > full:
                raise IndexError(f"axis {axis}: {s}..{s + n} outside {self} of shape {self.shape}")
            box.append(slice(o + s, o + s + n))
        return self.volume.read(tuple(box))

    def __repr__(self) -> str:
        return (
            f"BoxRegion({self.volume.name}, z={self.z0}:{self.z1}, y={self.y0}:{self.y1}, "
            f"x={self.x0}:{self.x1})"
        )


def region_bounds(region: Region) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``((z0, z1), (y0, y1), (x0, x1))`` of any region in volume coordinates."""
    if isinstance(region, BoxRegion):
        return (region.z0, region.z1), (region.y0, region.y1), (region.x0, region.x1)
    _, y, x = region.volume.shape
    return (region.z0, region.z1), (0, y), (0, x)


def _pair(value: Any, where: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise VolumeSpecError(f"{where} = {value!r}: expected [start, stop]") from None
    return a, b


def _entry_region(
    entry: Any, where: str, get: Callable[[str], LabeledVolume], names: Sequence[str]
) -> Region:
    if isinstance(entry, str):
        entry = {"volume": entry}
    if not isinstance(entry, Mapping) or "volume" not in entry:
        raise VolumeSpecError(
            f"{where} = {entry!r}: expected a volume name or {{volume: NAME, z: [z0, z1]}} / "
            "{volume: NAME, box: [[z0, z1], [y0, y1], [x0, x1]]}"
        )
    unknown = sorted(set(entry) - {"volume", "z", "box"})
    if unknown or ("z" in entry and "box" in entry):
        raise VolumeSpecError(f"{where}: use 'volume' with either 'z' or 'box', got keys {sorted(entry)}")
    name = str(entry["volume"])
    if name not in names:
        raise VolumeSpecError(f"{where}.volume = {name!r}: no such volume; known {sorted(names)}")
    vol = get(name)
    if not vol.has_labels:
        raise EmptyDatasetError(f"{where}: volume {name!r} has no labels; it cannot train or validate")
    z, y, x = vol.shape
    if "box" in entry:
        box = entry["box"]
        if not isinstance(box, Sequence) or len(box) != 3:
            raise VolumeSpecError(f"{where}.box = {box!r}: expected [[z0, z1], [y0, y1], [x0, x1]]")
        bounds = [_pair(b, f"{where}.box[{i}]") for i, b in enumerate(box)]
    else:
        bounds = [_pair(entry["z"], f"{where}.z") if "z" in entry else (0, z), (0, y), (0, x)]
    for axis, ((a, b), n) in enumerate(zip(bounds, (z, y, x), strict=True)):
        if not 0 <= a < b <= n:
            raise EmptyDatasetError(
                f"{where}: {'zyx'[axis]} range [{a}, {b}) is empty or outside volume {name!r} of "
                f"shape {vol.shape}"
            )
    (z0, z1), (y0, y1), (x0, x1) = bounds
    if (y0, y1, x0, x1) == (0, y, 0, x):
        return Region(vol, z0, z1)
    return BoxRegion(vol, z0, z1, y0, y1, x0, x1)


def resolve_split(
    entries: Any, where: str, get: Callable[[str], LabeledVolume], names: Sequence[str]
) -> list[Region]:
    """Regions of one split from its config entries.

    Parameters
    ----------
    entries : sequence
        Volume names or ``{volume, z}`` / ``{volume, box}`` mappings.
    where : str
        Config path for messages (``"data.options.val"``).
    get : callable
        ``get(name) -> LabeledVolume``.
    names : sequence of str
        Valid volume names.

    Raises
    ------
    EmptyDatasetError
        The split is empty, a volume is unlabelled, or a range is empty / outside the volume.
    VolumeSpecError
        An entry is malformed or names an unknown volume.
    """
    if isinstance(entries, str | Mapping):
        entries = [entries]
    if not entries:
        raise EmptyDatasetError(f"{where}: the split is empty; list at least one volume or region")
    return [_entry_region(e, f"{where}[{i}]", get, names) for i, e in enumerate(entries)]


def check_disjoint(train: Sequence[Region], val: Sequence[Region]) -> None:
    """Raise :class:`VolumeSpecError` when a validation region overlaps a training region."""
    for t in train:
        for v in val:
            if t.volume is not v.volume:
                continue
            tb, vb = region_bounds(t), region_bounds(v)
            if all(max(a0, b0) < min(a1, b1) for (a0, a1), (b0, b1) in zip(tb, vb, strict=True)):
                raise VolumeSpecError(
                    f"validation {v} overlaps training {t}; held-out regions must not share voxels "
                    "with training regions"
                )
