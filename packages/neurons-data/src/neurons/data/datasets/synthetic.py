"""Synthetic EM volumes from :func:`neurons.data.synthetic.make_synthetic_volume` (no files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..labels import MITOCHONDRION_BOUNDARY
from ..volume import ArraySource, LabeledVolume, identity_labels
from .base import EMDataset

__all__ = ["SyntheticDataset"]

TEST_SEED_OFFSET = 1_000_003


class SyntheticDataset(EMDataset):
    """Generated EM-like volumes, deterministic by seed; the embedded default for demos/tests.

    Parameters
    ----------
    shape : sequence of int
        ``(Z, Y, X)`` of each generated volume.
    n_volumes : int
        Number of training-pool volumes (seeds ``seed .. seed + n - 1``); the test volume uses a
        disjoint seed.
    seed : int
        Base seed.
    generator_kwargs : mapping, optional
        Extra keyword arguments for ``make_synthetic_volume``.
    """

    name = "synthetic"

    def __init__(
        self,
        shape: Sequence[int] = (32, 128, 128),
        n_volumes: int = 2,
        seed: int = 0,
        generator_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(root=".")
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3:
            raise ValueError(f"synthetic shape must be (Z, Y, X), got {self.shape}")
        self.n_volumes = int(n_volumes)
        self.seed = int(seed)
        self.generator_kwargs = dict(generator_kwargs or {})

    def _make(self, seed: int, name: str) -> LabeledVolume:
        from ..synthetic import make_synthetic_volume

        out = make_synthetic_volume(self.shape, seed=seed, **self.generator_kwargs)
        semantic = np.asarray(out["semantic"]).astype(np.uint8, copy=False)
        # the generator makes neurons and mitochondria (with their rims), never synaptic clefts:
        # class 2 is not annotated, so a loss never teaches "no cleft here" from generated data
        annotated = (0, 1, 3) + ((MITOCHONDRION_BOUNDARY,) if (semantic == 4).any() else ())
        return LabeledVolume(
            name=name,
            dataset=self.name,
            image=ArraySource(np.asarray(out["raw"]), description=f"{name} raw"),
            labels={
                "instance": ArraySource(np.asarray(out["instance"]), description=f"{name} ids"),
                "semantic": ArraySource(semantic, description=f"{name} semantic"),
            },
            converter=identity_labels,
            annotated=annotated,
            voxel_size=tuple(float(v) for v in out.get("voxel_size", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
        )

    def _find(self, split: str) -> list[LabeledVolume]:
        if split == "test":
            return [self._make(self.seed + TEST_SEED_OFFSET, "synthetic/test")]
        return [self._make(self.seed + i, f"synthetic/{i}") for i in range(self.n_volumes)]
