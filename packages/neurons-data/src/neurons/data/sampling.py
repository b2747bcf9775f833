"""Patch datasets: random training patches, deterministic validation grids, whole volumes.

Every item is a dict following the batch contract (before collation)::

    image        float32 (1, [D,] H, W) in [0, 1]
    instance     int64   ([D,] H, W), 0 background, renumbered 1..K within the patch
    semantic     int64   ([D,] H, W), unified classes, 255 = ignore
    semantic_ids int64   (5,), 1 where the source annotates that class
    dataset      str
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .errors import EmptyDatasetError, PatchSizeError
from .labels import IGNORE_INDEX, renumber_instances
from .splits import Region
from .volume import LabeledVolume

__all__ = [
    "EpochSampler",
    "GridPatchDataset",
    "MixtureDataset",
    "RandomPatchDataset",
    "WholeVolumeDataset",
    "normalize_patch_size",
]

Augment = Callable[[dict[str, np.ndarray]], Mapping[str, Any]]
ItemTransform = Callable[[dict[str, Any]], dict[str, Any]]


def normalize_patch_size(patch_size: Sequence[int]) -> tuple[tuple[int, int, int], int]:
    """``(patch as (Z, Y, X), spatial_dims)``: a 2-tuple is a 2D section patch (depth 1)."""
    p = tuple(int(s) for s in patch_size)
    if len(p) not in (2, 3) or any(s < 1 for s in p):
        raise PatchSizeError(
            f"patch_size must be 2 (H, W) or 3 (D, H, W) positive ints, got {tuple(patch_size)}"
        )
    return ((1, *p) if len(p) == 2 else p), len(p)  # type: ignore[return-value]


def _check_fit(regions: Sequence[Region], patch: tuple[int, int, int], what: str) -> None:
    if not regions:
        raise EmptyDatasetError(f"{what}: no regions to sample from")
    for r in regions:
        if any(p > s for p, s in zip(patch, r.shape, strict=True)):
            raise PatchSizeError(
                f"{what}: patch (D, H, W) = {patch} is larger than {r} of shape {r.shape}; "
                "use a smaller patch_size (or a larger val_fraction for validation slabs)"
            )


def to_item(
    arrays: Mapping[str, np.ndarray],
    volume: LabeledVolume,
    spatial_dims: int,
    renumber: bool = True,
) -> dict[str, Any]:
    """Convert ``read`` output ``(Z, Y, X)`` arrays into one contract item (tensors)."""
    image, instance, semantic = arrays["image"], arrays["instance"], arrays["semantic"]
    if spatial_dims == 2:
        image, instance, semantic = image[0], instance[0], semantic[0]
    if renumber:
        instance, _ = renumber_instances(instance)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)[None]),
        "instance": torch.from_numpy(np.ascontiguousarray(instance, dtype=np.int64)),
        "semantic": torch.from_numpy(np.ascontiguousarray(semantic, dtype=np.int64)),
        "semantic_ids": torch.from_numpy(volume.semantic_ids),
        "dataset": volume.dataset,
    }


class EpochSampler(Sampler[int]):
    """Yields ``epoch * n .. (epoch + 1) * n - 1`` and advances the epoch on every iteration.

    :class:`RandomPatchDataset` derives each sample's randomness from its index, so successive
    epochs see new patches while every run with the same seed sees the same ones, with any
    number of workers.
    """

    def __init__(self, length: int, start_epoch: int = 0) -> None:
        self.length = int(length)
        self.epoch = int(start_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the next iteration."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.length
        self.epoch += 1
        return iter(range(base, base + self.length))

    def __len__(self) -> int:
        return self.length


class RandomPatchDataset(Dataset):
    """Random 2D sections or 3D patches from training regions.

    Regions are drawn with probability proportional to their number of patch positions (so
    every position of every volume is equally likely), then a uniform position. A candidate is
    rejected when its foreground fraction (semantic not 0/255) is below ``min_foreground`` or it
    has fewer than ``min_instances`` instances; after ``max_tries`` candidates the best one
    (most instances, then most foreground) is used.

    Parameters
    ----------
    regions : sequence of Region
        Training regions (see :func:`~neurons.data.splits.split_regions`).
    patch_size : sequence of int
        ``(H, W)`` for 2D or ``(D, H, W)`` for 3D patches.
    samples_per_epoch : int
        Virtual epoch length (``len``). Any non-negative index is valid; the index seeds the
        sample, so ``ds[i]`` is reproducible.
    augment : callable, optional
        ``augment(sample[, rng=Generator]) -> sample`` on numpy arrays (image
        ``(1, [D,] H, W)`` float32, ``instance``/``semantic`` ``([D,] H, W)`` int64). It gets a
        generator derived from the sample index when it accepts ``rng``, else is re-seeded
        through ``set_random_state(seed=...)`` when it has that method, so augmented samples
        are reproducible whatever the number of workers.
    seed : int
        Base seed.
    item_transform : callable, optional
        ``item_transform(item) -> item`` on the finished (augmented) contract item, e.g. adding
        per-voxel training targets; runs in the DataLoader workers, in parallel with training.
    """

    def __init__(
        self,
        regions: Sequence[Region],
        patch_size: Sequence[int],
        samples_per_epoch: int = 256,
        *,
        min_foreground: float = 0.0,
        min_instances: int = 0,
        max_tries: int = 20,
        augment: Augment | None = None,
        seed: int = 0,
        item_transform: ItemTransform | None = None,
    ) -> None:
        self.patch, self.spatial_dims = normalize_patch_size(patch_size)
        self.regions = list(regions)
        self.item_transform = item_transform
        _check_fit(self.regions, self.patch, "training sampler")
        if samples_per_epoch < 1:
            raise EmptyDatasetError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        for r in self.regions:
            if not r.volume.has_labels:
                raise EmptyDatasetError(f"{r.volume.name} has no labels; cannot train on it")
        self.samples_per_epoch = int(samples_per_epoch)
        self.min_foreground = float(min_foreground)
        self.min_instances = int(min_instances)
        self.max_tries = max(1, int(max_tries))
        self.augment = augment
        self.seed = int(seed)
        counts = np.array(
            [np.prod([s - p + 1 for s, p in zip(r.shape, self.patch, strict=True)]) for r in self.regions],
            dtype=np.float64,
        )
        self.weights = counts / counts.sum()

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _candidate(self, rng: np.random.Generator) -> tuple[Region, dict[str, np.ndarray]]:
        r = self.regions[int(rng.choice(len(self.regions), p=self.weights))]
        start = [int(rng.integers(0, s - p + 1)) for s, p in zip(r.shape, self.patch, strict=True)]
        return r, r.read(start, self.patch)

    def sample_arrays(self, index: int) -> tuple[Region, dict[str, np.ndarray], np.random.Generator]:
        """Draw (with rejection) the raw ``(Z, Y, X)`` arrays of sample ``index``."""
        if index < 0:
            raise IndexError(f"index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, int(index)])
        best, best_score = None, None
        for _ in range(self.max_tries):
            region, arrays = self._candidate(rng)
            sem = arrays["semantic"]
            fg = float(np.count_nonzero((sem != 0) & (sem != IGNORE_INDEX))) / sem.size
            n_inst = 0
            if self.min_instances > 0:
                n_inst = int(np.unique(arrays["instance"]).size) - int((arrays["instance"] == 0).any())
            if fg >= self.min_foreground and n_inst >= self.min_instances:
                return region, arrays, rng
            score = (n_inst, fg)
            if best_score is None or score > best_score:
                best, best_score = (region, arrays), score
        assert best is not None
        return best[0], best[1], rng

    def __getitem__(self, index: int) -> dict[str, Any]:
        region, arrays, rng = self.sample_arrays(int(index))
        item_arrays = dict(arrays)
        instance, _ = renumber_instances(arrays["instance"])
        item_arrays["instance"] = instance
        if self.augment is not None:
            item_arrays = self._augment(item_arrays, rng)
        item = to_item(item_arrays, region.volume, self.spatial_dims, renumber=True)
        return item if self.item_transform is None else self.item_transform(item)

    def _augment(self, arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        squeeze = self.spatial_dims == 2
        sample = {
            "image": arrays["image"][0][None] if squeeze else arrays["image"][None],
            "instance": arrays["instance"][0] if squeeze else arrays["instance"],
            "semantic": (arrays["semantic"][0] if squeeze else arrays["semantic"]).astype(np.int64),
        }
        aug = self.augment
        child = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
        if _accepts_rng(aug):
            out = aug(sample, rng=child)  # type: ignore[misc,call-arg]
        else:
            if hasattr(aug, "set_random_state"):
                aug.set_random_state(seed=int(child.integers(0, 2**31 - 1)))  # type: ignore[union-attr]
            out = aug(sample)  # type: ignore[misc]
        image = np.asarray(out["image"], dtype=np.float32)
        instance = np.asarray(out["instance"])
        semantic = np.asarray(out["semantic"])
        want = sample["instance"].shape
        if image.shape != sample["image"].shape or instance.shape != want or semantic.shape != want:
            raise PatchSizeError(
                f"augmentation changed the patch shape: image {sample['image'].shape} -> "
                f"{image.shape}, labels {want} -> {instance.shape}/{semantic.shape}"
            )
        image = image[0]
        if squeeze:
            image, instance, semantic = image[None], instance[None], semantic[None]
        return {"image": np.clip(image, 0.0, 1.0), "instance": instance, "semantic": semantic}


def _accepts_rng(fn: Any) -> bool:
    try:
        return "rng" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _grid_starts(size: int, patch: int) -> list[int]:
    starts = list(range(0, size - patch + 1, patch))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


class GridPatchDataset(Dataset):
    """Deterministic grid of patches covering held-out regions (validation).

    Per axis the windows tile the region without overlap, the last one shifted back to end at
    the border. ``max_patches`` keeps an evenly spaced, deterministic subset; ``item_transform``
    as in :class:`RandomPatchDataset`.
    """

    def __init__(
        self,
        regions: Sequence[Region],
        patch_size: Sequence[int],
        max_patches: int | None = None,
        item_transform: ItemTransform | None = None,
    ) -> None:
        self.patch, self.spatial_dims = normalize_patch_size(patch_size)
        self.regions = list(regions)
        self.item_transform = item_transform
        _check_fit(self.regions, self.patch, "validation grid")
        index = []
        for ri, r in enumerate(self.regions):
            axes = [_grid_starts(s, p) for s, p in zip(r.shape, self.patch, strict=True)]
            grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
            index.append(np.concatenate([np.full((len(grid), 1), ri), grid], axis=1))
        table = np.concatenate(index)
        if max_patches is not None and 0 < max_patches < len(table):
            keep = np.unique(np.linspace(0, len(table) - 1, int(max_patches)).round().astype(int))
            table = table[keep]
        self.index = table

    def __len__(self) -> int:
        return len(self.index)

    def location(self, i: int) -> tuple[Region, tuple[int, int, int]]:
        """The region and ``(z, y, x)`` start (region coordinates) of patch ``i``."""
        ri, z, y, x = (int(v) for v in self.index[i])
        return self.regions[ri], (z, y, x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"patch index {i} out of range for {len(self)} patches")
        region, start = self.location(i % len(self))
        item = to_item(region.read(start, self.patch), region.volume, self.spatial_dims)
        return item if self.item_transform is None else self.item_transform(item)


class WholeVolumeDataset(Dataset):
    """Whole volumes (3D) or whole sections of every volume (2D), for testing/inference.

    Items carry an extra ``volume`` key (the volume name) and, in 2D, ``section`` (z index).
    """

    def __init__(self, volumes: Sequence[LabeledVolume], spatial_dims: int = 3) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if not volumes:
            raise EmptyDatasetError("no test volumes")
        self.volumes = list(volumes)
        self.spatial_dims = spatial_dims
        if spatial_dims == 3:
            self.index = [(vi, -1) for vi in range(len(self.volumes))]
        else:
            self.index = [(vi, z) for vi, v in enumerate(self.volumes) for z in range(v.shape[0])]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        vi, z = self.index[i]
        v = self.volumes[vi]
        box = (slice(None),) * 3 if z < 0 else (slice(z, z + 1), slice(None), slice(None))
        item = to_item(v.read(box), v, self.spatial_dims)
        item["volume"] = v.name
        if z >= 0:
            item["section"] = z
        return item


class MixtureDataset(Dataset):
    """Draws each item from one of several index-seeded datasets with fixed probabilities.

    ``weights`` are normalised to probabilities: the mixing ratio does not depend on the
    children's lengths. Item ``i`` is reproducible (seeded by ``seed`` and ``i``).
    """

    def __init__(
        self,
        datasets: Sequence[Dataset],
        weights: Sequence[float] | None = None,
        length: int = 256,
        seed: int = 0,
    ) -> None:
        if not datasets:
            raise EmptyDatasetError("MixtureDataset needs at least one dataset")
        w = np.ones(len(datasets)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(datasets),) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be {len(datasets)} non-negative numbers, got {weights}")
        self.datasets = list(datasets)
        self.probabilities = w / w.sum()
        self.length = int(length)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def choose(self, index: int) -> tuple[int, int]:
        """``(child dataset, child index)`` used for item ``index``."""
        rng = np.random.default_rng([self.seed, 0x5EED, int(index)])
        k = int(rng.choice(len(self.datasets), p=self.probabilities))
        return k, int(rng.integers(0, 2**62))

    def __getitem__(self, index: int) -> dict[str, Any]:
        k, j = self.choose(index)
        return self.datasets[k][j]

