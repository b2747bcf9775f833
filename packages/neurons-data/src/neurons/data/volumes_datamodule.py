"""``data.name: volumes``: train and evaluate on your own volumes listed in the config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .datamodule import EMDataModule
from .datasets.volumes import VolumesDataset, VolumeSpecError
from .splits import Region
from .volume_splits import check_disjoint, resolve_split

__all__ = ["VolumesDataModule"]


class VolumesDataModule(EMDataModule):
    """Your own volumes (any :mod:`neurons.io` format) with explicit or automatic splits.

    Parameters
    ----------
    root : str or Path, optional
        Folder relative paths in ``volumes`` / ``test`` are taken from (default: current folder).
    volumes : sequence of mapping
        One mapping per volume: ``raw`` (required), ``labels``, ``label_kind``
        (instances | mask | semantic), ``label_class``, ``class_map``, ``ignore_label``, ``mask``,
        ``voxel_size``, ``intensity_range``, ``connectivity``, ``components``, ``name``,
        ``dataset`` (see :mod:`neurons.data.datasets.volumes`).
    train, val : sequence, optional
        Explicit splits: volume names, ``{volume: NAME, z: [z0, z1]}`` or
        ``{volume: NAME, box: [[z0, z1], [y0, y1], [x0, x1]]}``. Give both or neither; without
        them the labelled volumes are split by ``split`` / ``val_fraction`` / ``gap`` as for the
        built-in datasets.
    test : sequence, optional
        Test volumes: names of ``volumes`` entries or further volume mappings.
    **kwargs
        :class:`~neurons.data.EMDataModule` settings (``patch_size``, ``batch_size``, ...).

    Examples
    --------
    >>> dm = VolumesDataModule(
    ...     volumes=[{"name": "a", "raw": "a.h5:raw", "labels": "a.h5:seg"}],
    ...     train=[{"volume": "a", "z": [0, 80]}], val=[{"volume": "a", "z": [84, 100]}],
    ...     patch_size=(16, 128, 128))  # doctest: +SKIP
    """

    name = "volumes"
    reader_class = VolumesDataset

    def __init__(
        self,
        root: str | Path | None = None,
        volumes: Sequence[Mapping[str, Any]] | None = None,
        train: Sequence[Any] | None = None,
        val: Sequence[Any] | None = None,
        test: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if (train is None) != (val is None):
            given, missing = ("train", "val") if train is not None else ("val", "train")
            raise VolumeSpecError(
                f"data.options.{given} is set but data.options.{missing} is not; give both "
                "explicit splits or neither (automatic split)"
            )
        self.explicit_train, self.explicit_val = train, val
        super().__init__(root, volumes=volumes, test=test, **kwargs)

    @property
    def reader_volumes(self) -> VolumesDataset:
        """The :class:`VolumesDataset` reader."""
        assert isinstance(self.reader, VolumesDataset)
        return self.reader

    def make_regions(self) -> tuple[list[Region], list[Region]]:
        """Explicit ``train`` / ``val`` regions (checked disjoint), else the automatic split."""
        if self.explicit_train is None:
            return super().make_regions()
        reader = self.reader_volumes
        train = resolve_split(self.explicit_train, "data.options.train", reader.volume, reader.names)
        val = resolve_split(self.explicit_val, "data.options.val", reader.volume, reader.names)
        check_disjoint(train, val)
        return train, val
