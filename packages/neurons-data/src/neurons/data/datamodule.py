"""Lightning DataModules: one per dataset, ``CombineDataModule`` and the ``build_datamodule`` registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from .datasets import (
    CREMI3DDataset,
    EMDataset,
    ISBI2012Dataset,
    MICRONSDataset,
    MitoEM2Dataset,
    SNEMI3DDataset,
    SyntheticDataset,
)
from .errors import EmptyDatasetError, MissingDataError, PatchSizeError
from .labels import IGNORE_INDEX, NUM_UNIFIED_CLASSES, UNIFIED_CLASSES
from .sampling import (
    EpochSampler,
    GridPatchDataset,
    MixtureDataset,
    RandomPatchDataset,
    WholeVolumeDataset,
    normalize_patch_size,
)
from .splits import Region, split_regions

__all__ = [
    "CREMI3DDataModule",
    "CombineDataModule",
    "EMDataModule",
    "ISBI2012DataModule",
    "MICRONSDataModule",
    "MitoEM2DataModule",
    "SNEMI3DDataModule",
    "SyntheticDataModule",
    "build_datamodule",
    "DATAMODULES",
]


def _resolve_augment(augment: Any, spatial_dims: int) -> Callable | None:
    if augment is None or augment is False:
        return None
    if callable(augment):
        return augment
    if augment is True or isinstance(augment, Mapping):
        from .transforms import build_augmentation

        return build_augmentation(augment if augment is True else dict(augment), spatial_dims)
    raise TypeError(f"augment must be a bool, a dict of parameters or a callable, got {augment!r}")


def _loader_kwargs(num_workers: int, pin_memory: bool, persistent_workers: bool | None) -> dict:
    persistent = bool(num_workers > 0 if persistent_workers is None else persistent_workers)
    return {
        "num_workers": int(num_workers),
        "pin_memory": bool(pin_memory),
        "persistent_workers": persistent and num_workers > 0,
    }


def _train_loader(ds: Dataset, owner: Any) -> DataLoader:
    if len(ds) < owner.batch_size:  # type: ignore[arg-type]
        raise EmptyDatasetError(
            f"samples_per_epoch={len(ds)} is smaller than batch_size={owner.batch_size}"  # type: ignore[arg-type]
        )
    return DataLoader(
        ds,
        batch_size=owner.batch_size,
        sampler=EpochSampler(len(ds)),  # type: ignore[arg-type]
        drop_last=True,
        **_loader_kwargs(owner.num_workers, owner.pin_memory, owner.persistent_workers),
    )


def _eval_loader(ds: Dataset, owner: Any, batch_size: int | None = None) -> DataLoader:
    persistent = owner.persistent_workers if batch_size is None else False
    return DataLoader(
        ds,
        batch_size=batch_size or owner.batch_size,
        shuffle=False,
        **_loader_kwargs(owner.num_workers, owner.pin_memory, persistent),
    )


class EMDataModule(L.LightningDataModule):
    """Base DataModule: reader -> held-out split -> random / grid / whole-volume datasets.

    Parameters
    ----------
    root : str or Path, optional
        Dataset folder (default ``$NEURONS_DATA/<name>`` or ``data/<name>``).
    patch_size : sequence of int, optional
        ``(H, W)`` for 2D section patches, ``(D, H, W)`` for 3D (default per dataset).
    batch_size, num_workers : int
        DataLoader settings (train and validation; test uses batch size 1).
    samples_per_epoch : int
        Virtual training epoch length in patches.
    val_patches : int, optional
        Maximum number of validation grid patches (evenly spaced subset); None = all.
    augment : bool, dict or callable
        ``True``/dict: :func:`neurons.data.build_augmentation` with these parameters.
    seed : int
        Seed of the random training patches (each epoch draws new ones, reproducibly).
    val_fraction, split, gap : see :func:`~neurons.data.splits.split_regions`.
        A held-out slab is never thinner than the patch depth (it is enlarged to it).
    min_foreground, min_instances, max_tries : rejection sampling of training patches.
    pin_memory, persistent_workers : DataLoader settings.
    item_transform : callable, optional
        Applied to every training and validation item after augmentation, in the DataLoader
        workers (``neurons-train`` adds the loss's geometry targets here, so a training step
        never waits for them when ``num_workers > 0``).
    **reader_kwargs
        Passed to the dataset reader (e.g. ``volumes=("A", "B")`` for CREMI).
    """

    name: str = ""
    reader_class: type[EMDataset] = EMDataset
    default_patch_size: tuple[int, ...] = (16, 128, 128)

    def __init__(
        self,
        root: str | Path | None = None,
        patch_size: Sequence[int] | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        samples_per_epoch: int = 256,
        val_patches: int | None = 16,
        augment: bool | Mapping[str, Any] | Callable | None = False,
        seed: int = 0,
        val_fraction: float = 0.2,
        split: str = "auto",
        gap: int = 4,
        min_foreground: float = 0.0,
        min_instances: int = 0,
        max_tries: int = 20,
        pin_memory: bool = False,
        persistent_workers: bool | None = None,
        item_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        **reader_kwargs: Any,
    ) -> None:
        super().__init__()
        self.root = root
        self.item_transform = item_transform
        self.patch_size = tuple(int(p) for p in (patch_size or self.default_patch_size))
        self.patch, self.spatial_dims = normalize_patch_size(self.patch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.samples_per_epoch = int(samples_per_epoch)
        self.val_patches = None if val_patches is None else int(val_patches)
        self.augment = augment
        self.seed = int(seed)
        self.val_fraction = float(val_fraction)
        self.split = split
        self.gap = int(gap)
        self.min_foreground = float(min_foreground)
        self.min_instances = int(min_instances)
        self.max_tries = int(max_tries)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = persistent_workers
        self.reader_kwargs = reader_kwargs
        self.reader = self.make_reader()
        self.train_regions: list[Region] = []
        self.val_regions: list[Region] = []
        self.train_set: RandomPatchDataset | None = None
        self.val_set: GridPatchDataset | None = None
        self.test_set: WholeVolumeDataset | None = None
        self._test_error: Exception | None = None

    def make_reader(self) -> EMDataset:
        """Instantiate the dataset reader."""
        return self.reader_class(self.root, **self.reader_kwargs)  # type: ignore[call-arg]

    # -- Lightning hooks ---------------------------------------------------------------------
    def make_regions(self) -> tuple[list[Region], list[Region]]:
        """``(train, val)`` regions of the labelled pool (:func:`split_regions` by default)."""
        return split_regions(
            self.reader.volumes("train"), self.val_fraction, self.split, self.gap,
            min_depth=self.patch[0],
        )

    def setup(self, stage: str | None = None) -> None:
        """Read the volumes and build the datasets for ``stage`` (fit/validate/test/predict)."""
        if stage in (None, "fit", "validate") and self.train_set is None:
            self.train_regions, self.val_regions = self.make_regions()
            self.train_set = RandomPatchDataset(
                self.train_regions,
                self.patch_size,
                self.samples_per_epoch,
                min_foreground=self.min_foreground,
                min_instances=self.min_instances,
                max_tries=self.max_tries,
                augment=_resolve_augment(self.augment, self.spatial_dims),
                seed=self.seed,
                item_transform=self.item_transform,
            )
            self.val_set = GridPatchDataset(
                self.val_regions, self.patch_size, self.val_patches,
                item_transform=self.item_transform,
            )
        if stage in (None, "test", "predict") and self.test_set is None:
            try:
                self.test_set = WholeVolumeDataset(self.reader.volumes("test"), self.spatial_dims)
            except (MissingDataError, EmptyDatasetError) as exc:
                if stage is not None:
                    raise
                self._test_error = exc

    def _require(self, ds: Dataset | None, what: str) -> Dataset:
        if ds is None:
            if what == "test" and self._test_error is not None:
                raise self._test_error
            self.setup("test" if what == "test" else "fit")
            ds = {"train": self.train_set, "val": self.val_set, "test": self.test_set}[what]
        assert ds is not None
        return ds

    def train_dataloader(self) -> DataLoader:
        """Random patches; a fresh, reproducible set every epoch; ``drop_last=True``."""
        return _train_loader(self._require(self.train_set, "train"), self)

    def val_dataloader(self) -> DataLoader:
        """Deterministic grid patches of the held-out regions."""
        return _eval_loader(self._require(self.val_set, "val"), self)

    def test_dataloader(self) -> DataLoader:
        """Whole test volumes (3D) or sections (2D), batch size 1."""
        return _eval_loader(self._require(self.test_set, "test"), self, batch_size=1)

    def predict_dataloader(self) -> DataLoader:
        """Same as :meth:`test_dataloader`."""
        return self.test_dataloader()

    @property
    def num_classes(self) -> int:
        """Size of the unified label space (5)."""
        return NUM_UNIFIED_CLASSES

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.reader.root}, patch_size={self.patch_size})"


class SNEMI3DDataModule(EMDataModule):
    """SNEMI3D: AC4 (slab split: last 20 % of sections held out after a gap), AC3 test."""

    name = "snemi3d"
    reader_class = SNEMI3DDataset


class CREMI3DDataModule(EMDataModule):
    """CREMI: samples A/B/C (volume split: the last sample is validation), ``+`` test files.

    Reader kwargs: ``volumes``, ``include_clefts``, ``include_mito``.
    """

    name = "cremi3d"
    reader_class = CREMI3DDataset


class MICRONSDataModule(EMDataModule):
    """MICrONS cutouts. Reader kwargs: ``seg_version``, ``include_synapses``, ``include_mito``, ``cloud``."""

    name = "microns"
    reader_class = MICRONSDataset


class MitoEM2DataModule(EMDataModule):
    """MitoEM2 (volume split per sub-dataset, slab split for single-volume ones). Reader kwarg: ``datasets``."""

    name = "mitoem2"
    reader_class = MitoEM2Dataset


class ISBI2012DataModule(EMDataModule):
    """ISBI 2012 (one 30-section stack: slab split); 2D patches by default."""

    name = "isbi2012"
    reader_class = ISBI2012Dataset
    default_patch_size = (256, 256)

    def __init__(self, root: str | Path | None = None, gap: int = 1, **kwargs: Any) -> None:
        super().__init__(root, gap=gap, **kwargs)


class SyntheticDataModule(EMDataModule):
    """Generated volumes (no files). Reader kwargs: ``shape``, ``n_volumes``, ``generator_kwargs``."""

    name = "synthetic"
    reader_class = SyntheticDataset
    default_patch_size = (16, 64, 64)

    def make_reader(self) -> EMDataset:
        return SyntheticDataset(seed=self.seed, **self.reader_kwargs)


class CombineDataModule(L.LightningDataModule):
    """Several datasets in the unified label space, mixed with fixed probabilities.

    Every item keeps its ``semantic`` map in the unified classes and its ``semantic_ids`` (the
    classes its source annotates). Training items come from child ``k`` with probability
    ``weights[k] / sum(weights)`` regardless of dataset sizes; validation is the concatenation
    of the children's held-out grids; test the concatenation of their test sets (where found).

    Parameters
    ----------
    datamodules : mapping of name to EMDataModule or (EMDataModule, weight)
        The children; all must use the same ``patch_size``.
    weights : mapping of name to float, optional
        Mixing weights (default 1 each, or the weights given in ``datamodules``).
    batch_size, num_workers, samples_per_epoch, seed, pin_memory, persistent_workers
        As in :class:`EMDataModule`.
    """

    unified_classes = UNIFIED_CLASSES
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        datamodules: Mapping[str, EMDataModule | tuple[EMDataModule, float]],
        weights: Mapping[str, float] | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        samples_per_epoch: int = 256,
        seed: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool | None = None,
    ) -> None:
        super().__init__()
        if not datamodules:
            raise EmptyDatasetError("CombineDataModule needs at least one datamodule")
        self.children: dict[str, EMDataModule] = {}
        self.weights: dict[str, float] = {}
        for name, entry in datamodules.items():
            dm, w = entry if isinstance(entry, tuple) else (entry, 1.0)
            self.children[name] = dm
            self.weights[name] = float((weights or {}).get(name, w))
        unknown = set(weights or {}) - set(self.children)
        if unknown:
            raise ValueError(f"weights given for unknown datamodules {sorted(unknown)}")
        patches = {name: dm.patch_size for name, dm in self.children.items()}
        if len(set(patches.values())) != 1:
            raise PatchSizeError(f"all combined datamodules need the same patch_size, got {patches}")
        self.patch_size = next(iter(patches.values()))
        self.spatial_dims = len(self.patch_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = persistent_workers
        self.train_set: MixtureDataset | None = None
        self.val_set: ConcatDataset | None = None
        self.test_set: ConcatDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Set up every child and build the mixture / concatenations."""
        if stage in (None, "fit", "validate") and self.train_set is None:
            for dm in self.children.values():
                dm.setup("fit")
            names = list(self.children)
            self.train_set = MixtureDataset(
                [self.children[n].train_set for n in names],  # type: ignore[misc]
                [self.weights[n] for n in names],
                self.samples_per_epoch,
                self.seed,
            )
            self.val_set = ConcatDataset([self.children[n].val_set for n in names])  # type: ignore[misc]
        if stage in (None, "test", "predict") and self.test_set is None:
            sets = []
            for dm in self.children.values():
                try:
                    dm.setup("test")
                except (MissingDataError, EmptyDatasetError):
                    continue
                sets.append(dm.test_set)
            if sets:
                self.test_set = ConcatDataset(sets)  # type: ignore[arg-type]
            elif stage is not None:
                raise MissingDataError(f"none of {sorted(self.children)} has test volumes")

    def train_dataloader(self) -> DataLoader:
        """Weighted mixture of the children's random patches."""
        if self.train_set is None:
            self.setup("fit")
        return _train_loader(self.train_set, self)  # type: ignore[arg-type]

    def val_dataloader(self) -> DataLoader:
        """Concatenated validation grids."""
        if self.val_set is None:
            self.setup("fit")
        return _eval_loader(self.val_set, self)  # type: ignore[arg-type]

    def test_dataloader(self) -> DataLoader:
        """Concatenated test sets of the children that have one (batch size 1)."""
        if self.test_set is None:
            self.setup("test")
        return _eval_loader(self.test_set, self, batch_size=1)  # type: ignore[arg-type]

    @property
    def num_classes(self) -> int:
        """Size of the unified label space (5)."""
        return NUM_UNIFIED_CLASSES


DATAMODULES: dict[str, type[EMDataModule]] = {
    "synthetic": SyntheticDataModule,
    "snemi3d": SNEMI3DDataModule,
    "cremi3d": CREMI3DDataModule,
    "microns": MICRONSDataModule,
    "mitoem2": MitoEM2DataModule,
    "isbi2012": ISBI2012DataModule,
}

_COMBINE_OWN = ("batch_size", "num_workers", "samples_per_epoch", "seed", "pin_memory", "persistent_workers")


def _plain(value: Any) -> Any:
    """Convert OmegaConf containers (Hydra configs) to plain Python objects."""
    if type(value).__module__.startswith("omegaconf"):
        # only reached when the caller already uses omegaconf (Hydra), so it is importable
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


def build_datamodule(name: str, **kwargs: Any) -> L.LightningDataModule:
    """Build a DataModule by registry name.

    Parameters
    ----------
    name : {"synthetic", "snemi3d", "cremi3d", "microns", "mitoem2", "isbi2012", "volumes", "combine"}
        Dataset name (``"volumes"``: your own files, see :class:`~neurons.data.VolumesDataModule`).
    **kwargs
        Keyword arguments of the DataModule (see :class:`EMDataModule`). For ``"combine"``:
        ``datasets`` (list of names, or mapping name -> that child's kwargs), ``weights``
        (mapping name -> weight), ``root`` (parent folder: child ``name`` reads ``root/name``
        unless its kwargs give a root), the combine loader settings (``batch_size``,
        ``num_workers``, ``samples_per_epoch``, ``seed``, ``pin_memory``,
        ``persistent_workers``); every other kwarg (``patch_size``, ``augment``, ...) is passed
        to every child.

    Examples
    --------
    >>> dm = build_datamodule("synthetic", patch_size=(16, 64, 64), batch_size=2)
    >>> dm = build_datamodule("combine", datasets={"synthetic": {}, "isbi2012": {}},
    ...                       patch_size=(256, 256))  # doctest: +SKIP
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    kwargs = {k: _plain(v) for k, v in kwargs.items()}
    if "patch_size" in kwargs and kwargs["patch_size"] is not None:
        kwargs["patch_size"] = tuple(int(p) for p in kwargs["patch_size"])
    if key == "combine":
        return _build_combine(**kwargs)
    if key not in DATAMODULES:
        raise ValueError(f"unknown datamodule {name!r}; known: {sorted([*DATAMODULES, 'combine'])}")
    return DATAMODULES[key](**kwargs)


def _build_combine(
    datasets: Sequence[str] | Mapping[str, Mapping[str, Any] | None],
    weights: Mapping[str, float] | None = None,
    root: str | Path | None = None,
    **kwargs: Any,
) -> CombineDataModule:
    if not datasets:
        raise EmptyDatasetError("combine needs a non-empty 'datasets' list or mapping")
    specs = dict(datasets) if isinstance(datasets, Mapping) else {n: {} for n in datasets}
    own = {k: kwargs.pop(k) for k in _COMBINE_OWN if k in kwargs}
    children = {}
    for child, child_kwargs in specs.items():
        ckw = {**kwargs, **dict(_plain(child_kwargs) or {})}
        if root is not None and "root" not in ckw and child not in ("synthetic", "volumes"):
            ckw["root"] = Path(root) / child
        if "seed" in own and "seed" not in ckw:
            ckw["seed"] = own["seed"]
        dm = build_datamodule(child, **ckw)
        if not isinstance(dm, EMDataModule):
            raise ValueError(f"cannot nest {child!r} inside combine")
        children[child] = dm
    return CombineDataModule(children, weights=weights, **own)


# registered last: it subclasses EMDataModule defined above
from .volumes_datamodule import VolumesDataModule  # noqa: E402

DATAMODULES["volumes"] = VolumesDataModule
