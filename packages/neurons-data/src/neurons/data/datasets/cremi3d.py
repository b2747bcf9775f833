"""CREMI (cremi.org): samples A, B, C (training) and A+, B+, C+ (test), 4x4x40 nm."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ShapeMismatchError
from ..labels import BACKGROUND, MITOCHONDRION, NEURON, SYNAPTIC_CLEFT, cremi_to_unified
from ..volume import ArraySource, LabeledVolume
from .base import CroppedSource, EMDataset, io_attrs, pick_key

__all__ = ["CREMI3DDataset"]

RAW = ("volumes/raw", "raw")
NEURON_IDS = ("volumes/labels/neuron_ids", "neuron_ids")
CLEFTS = ("volumes/labels/clefts", "clefts")
MITO = ("volumes/labels/mitochondria", "mitochondria")


def _file_names(v: str, split: str) -> list[str]:
    if split == "train":
        return [
            f"sample_{v}_20160501.hdf",
            f"sample_{v}_padded_20160501.hdf",
            f"sample_{v}.hdf",
            f"sample_{v}.h5",
            f"sample_{v}.hdf5",
        ]
    return [
        f"sample_{v}+_20160601.hdf",
        f"sample_{v}+_padded_20160601.hdf",
        f"sample_{v}+.hdf",
        f"sample_{v}+.h5",
        f"sample_{v}+.hdf5",
    ]


class CREMI3DDataset(EMDataset):
    """CREMI reader (one HDF5 file per sample, as distributed by cremi.org).

    Keys: ``volumes/raw`` (uint8, attribute ``resolution`` = (40, 4, 4)),
    ``volumes/labels/neuron_ids`` (uint64; ``uint64(-1)`` = no data -> ignore),
    ``volumes/labels/clefts`` (uint64; 0 and ``uint64(-1)`` = no cleft) and, when present,
    ``volumes/labels/mitochondria``. Padded files whose labels are smaller than the raw are
    aligned through the labels' ``offset`` attribute (nm). The ``+`` files are the test volumes
    (raw only).

    Parameters
    ----------
    root : path, optional
        Folder holding the ``sample_*.hdf`` files.
    volumes : sequence of str, optional
        Samples to use, e.g. ``("A", "B")``; default: every one of A, B, C found (an explicitly
        requested sample that is missing raises :class:`~neurons.data.MissingDataError`).
    include_clefts, include_mito : bool
        Use the cleft / mitochondria volumes when present.
    """

    name = "cremi3d"
    download_script = "download_cremi3d.py"
    voxel_size = (40.0, 4.0, 4.0)

    def __init__(
        self,
        root: str | Path | None = None,
        volumes: tuple[str, ...] | list[str] | None = None,
        include_clefts: bool = True,
        include_mito: bool = True,
    ) -> None:
        super().__init__(root)
        self.requested = tuple(volumes) if volumes else None
        self.include_clefts = include_clefts
        self.include_mito = include_mito

    def _find(self, split: str) -> list[LabeledVolume]:
        samples = self.requested or ("A", "B", "C")
        out, searched, missing = [], [], []
        for v in samples:
            names = _file_names(v, split)
            path = self.first_existing(names)
            if path is None:
                missing.append(v)
                searched += [self.root / n for n in names]
                continue
            out.append(self._volume(path, v, split))
        if self.requested and missing:
            raise self.missing(f"{split} sample(s) {missing}", searched)
        if not out:
            raise self.missing(f"{split} samples", searched)
        return out

    def _volume(self, path: Path, v: str, split: str) -> LabeledVolume:
        raw = ArraySource.from_file(path, pick_key(path, RAW, single=False))
        attrs, vs = io_attrs(raw)
        if "resolution" in attrs:
            vs = tuple(float(r) for r in np.asarray(attrs["resolution"]).ravel())
        voxel = vs if vs is not None and len(vs) == 3 else self.voxel_size
        labels: dict[str, ArraySource] = {}
        annotated: tuple[int, ...] = ()
        key = pick_key(path, NEURON_IDS, required=split == "train", single=False)
        if key is not None:
            labels["neuron_ids"] = ArraySource.from_file(path, key)
            annotated = (BACKGROUND, NEURON)
            if self.include_clefts and (k := pick_key(path, CLEFTS, required=False)):
                labels["clefts"] = ArraySource.from_file(path, k)
                annotated += (SYNAPTIC_CLEFT,)
            if self.include_mito and (k := pick_key(path, MITO, required=False)):
                labels["mitochondria"] = ArraySource.from_file(path, k)
                annotated += (MITOCHONDRION,)
        image: ArraySource | CroppedSource = raw
        if labels:
            ref = labels["neuron_ids"]
            if ref.shape != raw.shape:
                image = self._align(raw, ref, path, voxel)
        return LabeledVolume(
            name=f"cremi3d/{v}{'+' if split == 'test' else ''}",
            dataset=self.name,
            image=image,  # type: ignore[arg-type]
            labels=labels,
            converter=cremi_to_unified,
            annotated=annotated,
            voxel_size=voxel,  # type: ignore[arg-type]
        )

    @staticmethod
    def _align(raw: ArraySource, labels: ArraySource, path: Path, voxel) -> CroppedSource:
        attrs, _ = io_attrs(labels)
        if "offset" not in attrs:
            raise ShapeMismatchError(
                f"{path}: volumes/raw has shape {raw.shape} but the labels have shape "
                f"{labels.shape} and no 'offset' attribute to align them"
            )
        offset_nm = np.asarray(attrs["offset"], dtype=float).ravel()
        origin = np.rint(offset_nm / np.asarray(voxel, dtype=float)).astype(int)
        return CroppedSource(raw, origin, labels.shape)
