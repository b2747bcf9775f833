"""Deterministic held-out splits: whole volumes, or z-slabs separated by a gap.

No voxel is ever in both the training and the validation regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import EmptyDatasetError, PatchSizeError
from .volume import LabeledVolume

__all__ = ["Region", "split_regions"]

SPLIT_MODES = ("auto", "volume", "slab")


@dataclass(frozen=True, eq=False)
class Region:
    """The z-range ``[z0, z1)`` (all of Y and X) of a volume.

    Examples
    --------
    >>> r = Region(volume, 0, 10)  # doctest: +SKIP
    >>> r.shape  # doctest: +SKIP
    (10, 512, 512)
    """

    volume: LabeledVolume
    z0: int
    z1: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` of the region."""
        _, y, x = self.volume.shape
        return (self.z1 - self.z0, y, x)

    def read(self, start: Sequence[int], size: Sequence[int]) -> dict[str, np.ndarray]:
        """Read the box ``start .. start + size`` given in region coordinates."""
        z, y, x = (int(s) for s in start)
        dz, dy, dx = (int(s) for s in size)
        if z < 0 or z + dz > self.z1 - self.z0:
            raise IndexError(f"z range {z}..{z + dz} outside region of depth {self.z1 - self.z0}")
        box = (slice(self.z0 + z, self.z0 + z + dz), slice(y, y + dy), slice(x, x + dx))
        return self.volume.read(box)

    def __repr__(self) -> str:
        return f"Region({self.volume.name}, z={self.z0}:{self.z1})"


def _group(v: LabeledVolume) -> str:
    return v.name.rsplit("/", 1)[0] if "/" in v.name else v.dataset


def split_regions(
    volumes: Sequence[LabeledVolume],
    val_fraction: float = 0.2,
    mode: str = "auto",
    gap: int = 4,
    min_depth: int = 1,
) -> tuple[list[Region], list[Region]]:
    """Split labelled volumes into training and validation regions.

    Parameters
    ----------
    volumes : sequence of LabeledVolume
        The labelled pool, grouped by the part of their name before the last ``/`` (e.g. one
        group per MitoEM2 sub-dataset); the order inside a group is the sorted name order.
    val_fraction : float
        Fraction (0 < f < 1) held out for validation.
    mode : {"auto", "volume", "slab"}
        ``"volume"``: the last ``max(1, round(n * f))`` volumes of each group are validation.
        ``"slab"``: each volume's last ``max(min_depth, round(Z * f))`` sections are validation
        and the training slab ends ``gap`` sections before them. ``"auto"``: volume split for groups of
        two or more volumes, slab split for single volumes.
    gap : int
        Sections left out between the training and validation slabs (slab mode).
    min_depth : int
        Fewest sections of any region: the patch depth, so that every training and validation
        slab holds at least one patch. A validation slab is enlarged to it; a volume too thin
        for both slabs raises :class:`~neurons.data.PatchSizeError` naming ``val_fraction``
        (:class:`~neurons.data.EmptyDatasetError` when no training section is left at all).

    Returns
    -------
    train, val : list of Region
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"split mode must be one of {SPLIT_MODES}, got {mode!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    if not volumes:
        raise EmptyDatasetError("no volumes to split")
    groups: dict[str, list[LabeledVolume]] = {}
    for v in volumes:
        if not v.has_labels:
            raise EmptyDatasetError(f"{v.name} has no labels and cannot be used for training")
        groups.setdefault(_group(v), []).append(v)
    train: list[Region] = []
    val: list[Region] = []
    for _, vols in sorted(groups.items()):
        vols = sorted(vols, key=lambda v: v.name)
        by_volume = mode == "volume" or (mode == "auto" and len(vols) >= 2)
        if by_volume:
            if len(vols) < 2:
                raise EmptyDatasetError(
                    f"volume split needs >= 2 volumes, group {_group(vols[0])} has 1; "
                    "use split='slab'"
                )
            n_val = min(len(vols) - 1, max(1, round(len(vols) * val_fraction)))
            train += [Region(v, 0, v.shape[0]) for v in vols[:-n_val]]
            val += [Region(v, 0, v.shape[0]) for v in vols[-n_val:]]
            continue
        for v in vols:
            z = v.shape[0]
            n_val = max(1, int(min_depth), round(z * val_fraction))
            z_train = z - n_val - gap
            if z_train < max(1, int(min_depth)):
                err = EmptyDatasetError if z_train < 1 else PatchSizeError
                raise err(
                    f"{v.name}: {z} sections are too few for a training slab of >= "
                    f"{max(1, int(min_depth))} (the patch depth), a gap of {gap} and a validation "
                    f"slab of {n_val} (val_fraction={val_fraction}); lower data.options.val_fraction "
                    "or data.options.gap, or use a smaller data.patch_size depth"
                )
            train.append(Region(v, 0, z_train))
            val.append(Region(v, z - n_val, z))
    return train, val
