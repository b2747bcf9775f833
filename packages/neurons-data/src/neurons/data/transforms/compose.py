"""Chain augmentations with one generator, validate samples once, return contiguous arrays."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import Randomizable

from neurons.data.transforms.base import (
    AugmentationError,
    ProcessLocalGenerator,
    RandomTransform,
    Sample,
    _Views,
    seed_from_state,
)

__all__ = ["Compose"]


class Compose(Randomizable):
    """Apply a sequence of :class:`RandomTransform` in order, drawing from one generator.

    Randomness: ``__call__(sample, rng)`` uses ``rng`` when given (the dataset can pass e.g.
    ``np.random.default_rng((seed, epoch, index))`` for results independent of the number of
    workers). Otherwise the composition's own generator is used; inside a PyTorch DataLoader
    worker it is re-seeded once per worker process from ``seed`` and torch's per-worker seed, so
    workers never replay each other's augmentations and epochs differ, while a run stays
    reproducible under a fixed torch seed.

    Parameters
    ----------
    transforms : sequence of RandomTransform
        Applied in order (each draws its parameters once per sample).
    spatial_dims : {2, 3}, optional
        When given, samples of another dimensionality are rejected with a clear error.
    seed : int, optional
        Seed of the own generator; ``None`` = fresh OS entropy.
    clip : bool
        Clip image keys to ``[0, 1]`` at the end.
    keys_image, keys_label : sequence of str, optional
        Keys validated and returned (default: the union of the transforms' keys).

    Examples
    --------
    >>> aug = Compose([RandFlip(), RandElastic()], spatial_dims=3, seed=0)
    >>> out = aug({"image": img, "instance": ids})
    """

    def __init__(
        self,
        transforms: Sequence[RandomTransform],
        spatial_dims: int | None = None,
        seed: int | None = None,
        clip: bool = True,
        keys_image: Sequence[str] | None = None,
        keys_label: Sequence[str] | None = None,
    ) -> None:
        self.transforms = list(transforms)
        for t in self.transforms:
            if not isinstance(t, RandomTransform):
                raise AugmentationError(f"Compose expects RandomTransform objects, got {t!r}")
        if spatial_dims not in (None, 2, 3):
            raise AugmentationError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.spatial_dims = spatial_dims
        self.clip = bool(clip)
        images: list[str] = list(keys_image or [])
        labels: list[str] = list(keys_label or [])
        for t in self.transforms:
            images += [k for k in t.keys_image if k not in images]
            labels += [k for k in t.keys_label if k not in labels]
        self.keys_image = tuple(images) or ("image",)
        self.keys_label = tuple(labels)
        self.set_random_state(seed)

    def set_random_state(
        self,
        seed: int | None = None,
        state: np.random.RandomState | np.random.Generator | None = None,
    ) -> Compose:
        """Re-seed the composition's own generator (MONAI ``Randomizable`` interface).

        The transforms inside draw from this one generator, so their own generators are not
        used by :meth:`__call__` and are left alone.

        Parameters
        ----------
        seed : int, optional
            New seed (``None`` and no ``state`` = fresh OS entropy).
        state : numpy.random.RandomState or numpy.random.Generator, optional
            Used only without ``seed``: a seed is drawn from it.

        Returns
        -------
        Compose
            ``self``.
        """
        self.seed = seed_from_state(seed, state)
        self._rng = ProcessLocalGenerator(self.seed)
        return self

    @property
    def R(self) -> np.random.Generator:
        """The composition's own generator (re-seeded per DataLoader worker)."""
        return self._rng.get()

    def __call__(self, sample: Mapping[str, Any], rng: np.random.Generator | None = None) -> Sample:
        """Augment one sample dict; returns a new dict with the same keys, shapes and dtypes."""
        view = _Views(sample, self.keys_image, self.keys_label)
        if self.spatial_dims is not None and view.ndim != self.spatial_dims:
            raise AugmentationError(
                f"augmentation built for {self.spatial_dims}-D patches got a {view.ndim}-D sample: "
                + ", ".join(f"{k} {np.shape(sample[k])}" for k in view.keys)
            )
        rng = self.R if rng is None else rng
        arrays = view.arrays
        for key in view.image_keys:
            if not np.issubdtype(arrays[key].dtype, np.floating):
                raise AugmentationError(
                    f"image key {key!r} must be floating point scaled to [0, 1], got dtype "
                    f"{arrays[key].dtype} (divide uint8 data by 255 first)"
                )
            if arrays[key].dtype != np.float32:
                arrays[key] = arrays[key].astype(np.float32)
        shape = view.spatial_shape
        for t in self.transforms:
            params = t.randomize(rng, shape)
            if params is not None:
                arrays = t.apply(arrays, params)
        for key in view.keys:
            arr = arrays[key]
            if key in view.image_keys and self.clip:
                arr = np.clip(arr, 0.0, 1.0)
            arrays[key] = np.ascontiguousarray(arr)
        return view.restore(arrays)

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self) -> Iterator[RandomTransform]:
        return iter(self.transforms)

    @property
    def names(self) -> list[str]:
        """Names of the transforms, in order of application."""
        return [t.name for t in self.transforms]

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose(spatial_dims={self.spatial_dims}, seed={self.seed}, [\n  {inner}\n])"
