"""MICrONS minnie65: local HDF5/Zarr cutouts, or reading through cloud-volume when installed."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import BACKGROUND, MITOCHONDRION, NEURON, SYNAPTIC_CLEFT, foreground_to_unified
from ..volume import ArraySource, LabeledVolume
from .base import EMDataset, io_attrs, natural_key, pick_key

__all__ = ["CloudVolumeArray", "MICRONSDataset"]

_EXTS = (".h5", ".hdf5", ".zarr")
_KEYS = ("main", "data", "volumes/raw", "raw", "segmentation", "seg", "labels", "0")


class CloudVolumeArray:
    """A ``(Z, Y, X)`` window of a neuroglancer-precomputed layer read through ``cloud-volume``.

    ``cloud-volume`` is imported only when the object is created (it is an optional dependency,
    ``pip install neurons-data[cloud]``). Reads are converted from cloud-volume's ``(X, Y, Z, C)``
    to ``(Z, Y, X)``.

    Parameters
    ----------
    path : str
        Layer URL, e.g. ``precomputed://https://.../minnie65/em``.
    start, stop : sequence of int
        Window in layer voxels at ``mip``, ``(z, y, x)``.
    mip : int or sequence of float
        Mip level or resolution (x, y, z nm) as cloud-volume accepts it.
    """

    def __init__(
        self,
        path: str,
        start: Sequence[int],
        stop: Sequence[int],
        mip: int | Sequence[float] = 0,
        **options: Any,
    ) -> None:
        self.path, self.mip = path, mip
        self.options = {"use_https": True, "fill_missing": True, "progress": False, **options}
        self.start = tuple(int(s) for s in start)
        self.stop = tuple(int(s) for s in stop)
        self.shape = tuple(b - a for a, b in zip(self.start, self.stop, strict=True))
        if any(s <= 0 for s in self.shape):
            raise ValueError(f"empty cloud window start={self.start} stop={self.stop}")
        self._cv = None
        self._pid = os.getpid()
        cv = self._open()
        self.dtype = np.dtype(cv.dtype)
        res = getattr(cv, "resolution", None)
        self.voxel_size = (
            tuple(float(r) for r in np.asarray(res)[::-1]) if res is not None else None
        )

    def _open(self) -> Any:
        if self._cv is None or self._pid != os.getpid():
            try:
                from cloudvolume import CloudVolume
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "reading MICrONS from the cloud needs cloud-volume: "
                    "pip install 'neurons-data[cloud]' (or use local HDF5/Zarr cutouts)"
                ) from exc
            self._cv = CloudVolume(self.path, mip=self.mip, **self.options)
            self._pid = os.getpid()
        return self._cv

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cv"] = None
        return state

    def __getitem__(self, box: Sequence[slice]) -> np.ndarray:
        bounds = []
        for sl, a, n in zip(box, self.start, self.shape, strict=True):
            lo, hi, step = sl.indices(n)
            if step != 1:
                raise ValueError("cloud reads support unit steps only")
            bounds.append((a + lo, a + max(hi, lo)))
        (z0, z1), (y0, y1), (x0, x1) = bounds
        cut = np.asarray(self._open()[x0:x1, y0:y1, z0:z1])
        if cut.ndim == 4:
            cut = cut[..., 0]
        return np.ascontiguousarray(cut.transpose(2, 1, 0))


class MICRONSDataset(EMDataset):
    """MICrONS reader.

    Local cutouts (the files written by ``scripts/download_microns.py``)::

        <prefix>volume.h5|hdf5|zarr                  EM, key "main" (or the only dataset)
        <prefix>[v<version>_]segmentation.h5|zarr     segment ids (uint64), same shape
        <prefix>[v<version>_]synapses.h5, <prefix>[...]mitochondria.h5   (optional)

    e.g. ``minnie65_mip0_crop_256_volume.h5`` + ``minnie65_mip0_crop_256_v1300_segmentation.h5``.
    Files under ``<root>/test/`` are the test volumes. The highest segmentation version is used
    unless ``seg_version`` is given.

    Cloud: pass ``cloud={"em": URL, "seg": URL, "start": (z, y, x), "size": (z, y, x),
    "mip": 0}``; both layers must share the voxel grid at that mip.

    Voxel size: from the file attributes, else (40, 8, 8) nm.
    """

    name = "microns"
    download_script = "download_microns.py"
    voxel_size = (40.0, 8.0, 8.0)

    def __init__(
        self,
        root: str | Path | None = None,
        seg_version: int | str | None = None,
        include_synapses: bool = True,
        include_mito: bool = True,
        cloud: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(root)
        self.seg_version = None if seg_version is None else str(seg_version)
        self.include_synapses = include_synapses
        self.include_mito = include_mito
        self.cloud = dict(cloud) if cloud else None

    def _source(self, path: Path) -> ArraySource:
        return ArraySource.from_file(path, pick_key(path, _KEYS))

    def _companion(self, folder: Path, prefix: str, kind: str) -> Path | None:
        hits = [
            p
            for p in folder.iterdir()
            if p.name.startswith(prefix)
            and p.suffix.lower() in _EXTS
            and re.search(rf"(^|[_\-.]){kind}$", p.stem)
        ]
        if self.seg_version is not None:
            hits = [p for p in hits if re.search(rf"(^|_)v{re.escape(self.seg_version)}_", p.name)]
        return sorted(hits, key=natural_key)[-1] if hits else None

    def _find(self, split: str) -> list[LabeledVolume]:
        if self.cloud is not None:
            if split == "test":
                raise self.missing("test volumes (cloud mode defines a training window only)", [])
            return [self._cloud_volume()]
        folder = self.root / "test" if split == "test" else self.root
        pattern = f"*volume{{{','.join(_EXTS)}}}"
        images = (
            sorted(
                (p for p in folder.iterdir() if p.suffix.lower() in _EXTS and p.stem.endswith("volume")),
                key=natural_key,
            )
            if folder.is_dir()
            else []
        )
        if not images:
            raise self.missing(f"{split} EM cutouts", [folder / pattern])
        out = []
        for img in images:
            prefix = img.stem[: -len("volume")]
            seg = self._companion(folder, prefix, "segmentation")
            if seg is None and split == "train":
                raise self.missing(
                    f"segmentation for {img.name}",
                    [folder / f"{prefix}[v<version>_]segmentation{{{','.join(_EXTS)}}}"],
                )
            labels: dict[str, ArraySource] = {}
            annotated: tuple[int, ...] = ()
            if seg is not None:
                labels["segmentation"] = self._source(seg)
                annotated = (BACKGROUND, NEURON)
                if self.include_synapses and (s := self._companion(folder, prefix, "synapses")):
                    labels["synapses"] = self._source(s)
                    annotated += (SYNAPTIC_CLEFT,)
                if self.include_mito and (m := self._companion(folder, prefix, "mitochondria")):
                    labels["mitochondria"] = self._source(m)
                    annotated += (MITOCHONDRION,)
            image = self._source(img)
            _, vs = io_attrs(image)
            out.append(
                LabeledVolume(
                    name=f"microns/{prefix.rstrip('_-.') or img.stem}",
                    dataset=self.name,
                    image=image,
                    labels=labels,
                    converter=foreground_to_unified,
                    annotated=annotated,
                    voxel_size=vs if vs and len(vs) == 3 else self.voxel_size,  # type: ignore[arg-type]
                )
            )
        return out

    def _cloud_volume(self) -> LabeledVolume:
        c = self.cloud or {}
        start = tuple(int(v) for v in c["start"])
        stop = tuple(a + int(s) for a, s in zip(start, c["size"], strict=True))
        mip = c.get("mip", 0)
        em = CloudVolumeArray(c["em"], start, stop, mip=mip)
        image = ArraySource(em, description=f"cloud {c['em']}")
        labels = {}
        annotated: tuple[int, ...] = ()
        if c.get("seg"):
            seg = CloudVolumeArray(c["seg"], start, stop, mip=mip)
            labels["segmentation"] = ArraySource(seg, description=f"cloud {c['seg']}")
            annotated = (BACKGROUND, NEURON)
        return LabeledVolume(
            name=f"microns/cloud_{'_'.join(map(str, start))}",
            dataset=self.name,
            image=image,
            labels=labels,
            converter=foreground_to_unified,
            annotated=annotated,
            voxel_size=em.voxel_size or self.voxel_size,  # type: ignore[arg-type]
        )
