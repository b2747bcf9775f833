"""Zarr v2/v3 directory stores (optional extra ``neurons-io[zarr]``; zarr is imported lazily).

Keys are array paths inside the store (``"volumes/raw"``); a store whose root is an array, or
that holds exactly one array, needs no key. Voxel size: the array's ``resolution`` attribute
(written by us, (z, y, x) nm), else OME-NGFF ``multiscales`` scale transforms (v0.4 and v0.5)
converted from their axis units to nm.

Writing with a voxel size stores ``resolution`` and, for an array inside a group (a key such as
``"out.zarr:raw"`` or ``"out.zarr:0"``), OME-NGFF 0.5 ``multiscales`` metadata on its parent group
(``attrs["ome"]``: axes z, y, x of type space in nanometer, one dataset with a ``scale``
transform = the voxel size) so napari / neuroglancer see the scale. NGFF metadata lives on
groups, so a root array (no key) gets ``resolution`` only. An existing ``multiscales`` of the
parent that names other arrays is left alone.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, KeyNotFoundError, MissingDependencyError, VolumeWriteError
from .base import Blocks, Reader, WriteSpec, check_volume_shape, native, rechunk, voxel_size_from

CONTAINER = True
DIRECTORY = True
COMPRESSIONS = ("gzip", "zstd", "blosc")
_UNIT_NM = {"nanometer": 1.0, "nm": 1.0, "micrometer": 1e3, "micron": 1e3, "um": 1e3,
            "millimeter": 1e6, "mm": 1e6, "angstrom": 0.1, "meter": 1e9, None: 1.0}


def _zarr():
    try:
        import zarr
    except ImportError as exc:
        raise MissingDependencyError(
            "Zarr support needs the optional dependency: pip install 'neurons-io[zarr]'"
        ) from exc
    return zarr


def _open_root(path: Path):
    zarr = _zarr()
    try:
        return zarr.open(store=str(path), mode="r")
    except Exception as exc:  # zarr raises many types for damaged metadata
        raise CorruptFileError(f"{path}: not a readable Zarr store ({type(exc).__name__}: {exc})") from exc


def _arrays(root) -> dict[str, object]:
    zarr = _zarr()
    if isinstance(root, zarr.Array):
        return {"": root}
    return {name: node for name, node in root.members(max_depth=None) if isinstance(node, zarr.Array)}


def list_keys(path: Path) -> list[str]:
    """Paths of all arrays in the store (``[]`` when the root itself is the array)."""
    return sorted(k for k in _arrays(_open_root(path)) if k)


def _ngff_voxel_size(root, key: str, ndim: int) -> tuple[float, ...] | None:
    zarr = _zarr()
    if isinstance(root, zarr.Array):
        return None
    parts = key.split("/")
    for depth in range(len(parts) - 1, -1, -1):
        gpath = "/".join(parts[:depth])
        group = root[gpath] if gpath else root
        attrs = dict(group.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales") or []
        for ms in multiscales:
            for ds in ms.get("datasets", []):
                if posixpath.join(gpath, ds.get("path", "")).strip("/") != key:
                    continue
                scale = np.ones(ndim)
                for t in [*ds.get("coordinateTransformations", []), *ms.get("coordinateTransformations", [])]:
                    if t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
                        scale = scale * np.asarray(t["scale"], dtype=np.float64)
                axes = ms.get("axes") or []
                spatial, factors = [], []
                for i, ax in enumerate(axes[:ndim]):
                    ax = {"name": ax} if isinstance(ax, str) else ax
                    if ax.get("type") == "space" or (ax.get("type") is None and ax.get("name") in "zyx"):
                        spatial.append(i)
                        factors.append(_UNIT_NM.get(ax.get("unit"), np.nan))
                if not axes:
                    spatial, factors = list(range(ndim))[-min(ndim, 3):], [1.0] * min(ndim, 3)
                vals = scale[spatial] * np.asarray(factors)
                return voxel_size_from(vals, min(len(spatial), 3) if spatial else ndim)
    return None


class ZarrReader(Reader):
    """A zarr array; region reads decode only the chunks they touch."""

    def __init__(self, path: Path, key: str | None) -> None:
        root = _open_root(path)
        arrays = _arrays(root)
        keys = sorted(arrays)
        if key is None:
            if len(arrays) != 1:
                raise KeyNotFoundError(
                    f"{path}: holds {len(arrays)} arrays, so a key is needed; available keys: {keys}",
                    keys,
                )
            key = keys[0]
        elif key not in arrays:
            raise KeyNotFoundError(f"{path}: key {key!r} not found; available keys: {keys}", keys)
        arr = arrays[key]
        self._path, self._arr = path, arr
        self.key = key or None
        self.shape = tuple(arr.shape)
        check_volume_shape(self.shape, f"{path}:{key}" if key else str(path))
        self.dtype = native(arr.dtype)
        self.chunks = tuple(arr.chunks)
        comps = getattr(arr, "compressors", ()) or ()
        self.compression = ",".join(type(c).__name__ for c in comps) or None
        self.attrs = dict(arr.attrs)
        self.attrs["zarr_format"] = arr.metadata.zarr_format
        self.voxel_size = voxel_size_from(self.attrs.get("resolution"), len(self.shape))
        if self.voxel_size is None:
            self.voxel_size = _ngff_voxel_size(root, key, len(self.shape))

    def read(self, box):
        try:
            return np.asarray(self._arr[box], dtype=self.dtype)
        except Exception as exc:  # codec errors come in many types
            raise CorruptFileError(f"{self._path}:{self.key}: cannot read region {box} ({exc})") from exc


def open(path: Path, key: str | None) -> ZarrReader:  # noqa: A001 - backend interface
    """Open an array of a Zarr store lazily."""
    return ZarrReader(path, key)


def _compressors(spec: WriteSpec):
    codecs = _zarr().codecs
    return {
        None: None,
        "gzip": codecs.GzipCodec(level=4),
        "zstd": codecs.ZstdCodec(level=3),
        "blosc": codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    }[spec.compression]


def check(spec: WriteSpec) -> None:
    """zarr importable; known codec; chunks one per axis."""
    _zarr()
    if spec.compression not in (None, *COMPRESSIONS):
        raise VolumeWriteError(
            f"{spec.target}: compression {spec.compression!r} is not available for Zarr; choose "
            f"one of {(None, *COMPRESSIONS)}"
        )
    if isinstance(spec.chunks, tuple | list) and len(spec.chunks) != len(spec.shape):
        raise VolumeWriteError(f"{spec.target}: chunks {spec.chunks} do not match shape {spec.shape}")


def write(spec: WriteSpec, blocks: Blocks) -> None:
    """Write a Zarr v3 array (root array, or ``spec.key`` inside a group) into ``spec.tmp``."""
    zarr = _zarr()
    chunks = tuple(int(c) for c in spec.chunks) if isinstance(spec.chunks, tuple | list) else None
    if chunks is None:  # default: slabs of up to 8 planes x 256 x 256 (region reads, streaming)
        default = {2: (512, 512), 3: (8, 256, 256), 4: (1, 8, 256, 256)}[len(spec.shape)]
        chunks = tuple(min(max(n, 1), c) for n, c in zip(spec.shape, default, strict=True))
    kwargs = dict(shape=spec.shape, dtype=spec.dtype, chunks=chunks,
                  compressors=_compressors(spec), fill_value=0)
    if spec.key is None:
        arr = zarr.create_array(store=str(spec.tmp), overwrite=True, zarr_format=3, **kwargs)
    else:
        try:
            group = zarr.open_group(str(spec.tmp), mode="a", zarr_format=None if spec.tmp.exists() else 3)
        except Exception as exc:
            raise VolumeWriteError(f"{spec.target}: cannot add key {spec.key!r} ({exc})") from exc
        parent, _, name = spec.key.rpartition("/")
        node = group.require_group(parent) if parent else group
        arr = node.create_array(name=name, overwrite=True, **kwargs)
    z = 0
    for block in rechunk(blocks, arr.chunks[0]):
        arr[z : z + block.shape[0]] = block
        z += block.shape[0]
    if spec.voxel_size is not None:
        arr.attrs["resolution"] = list(spec.voxel_size)
        if spec.key is not None:
            _write_ngff(node, name, spec)


def ngff_multiscales(name: str, ndim: int, voxel_size: tuple[float, ...]) -> dict:
    """One OME-NGFF ``multiscales`` entry: array ``name`` with spatial scale ``voxel_size`` (nm).

    Examples
    --------
    >>> ms = ngff_multiscales("raw", 3, (40.0, 4.0, 4.0))
    >>> [a["name"] for a in ms["axes"]], ms["datasets"][0]["coordinateTransformations"]
    (['z', 'y', 'x'], [{'type': 'scale', 'scale': [40.0, 4.0, 4.0]}])
    """
    nsp = len(voxel_size)
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"[-nsp:]]
    extra = ndim - nsp  # 4-D arrays: a leading channel axis of scale 1
    axes = [{"name": "c", "type": "channel"}] * extra + axes
    scale = [1.0] * extra + [float(v) for v in voxel_size]
    return {
        "name": name,
        "axes": axes,
        "datasets": [
            {"path": name, "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        ],
    }


def _write_ngff(group, name: str, spec: WriteSpec) -> None:
    attrs = dict(group.attrs)
    ome = dict(attrs.get("ome") or {})
    old = ome.get("multiscales") or attrs.get("multiscales") or []
    paths = {ds.get("path") for ms in old for ds in ms.get("datasets", [])}
    if paths - {name}:
        return  # the group already describes other arrays: do not rewrite it
    ms = ngff_multiscales(name, len(spec.shape), spec.voxel_size)
    if group.metadata.zarr_format == 3:
        group.attrs["ome"] = {**ome, "version": "0.5", "multiscales": [ms]}
    else:
        group.attrs["multiscales"] = [{"version": "0.4", **ms}]
