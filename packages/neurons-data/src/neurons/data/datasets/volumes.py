"""Your own volumes: raw + label files in any :mod:`neurons.io` format, described by the config.

Each volume is a mapping (``data.options.volumes`` in a training config)::

    name: stack1                         # unique; default: the raw file's stem
    raw: my/stack.h5:raw                 # file.h5:key, stack.zarr, stack.tif, sections/ or sections/*.png
    labels: my/stack.h5:labels           # optional (test volumes need none)
    label_kind: instances                # instances | mask | semantic
    label_class: neuron                  # instances / mask: the unified class of the foreground
    class_map: {1: neuron, 2: mitochondrion}   # semantic: label value -> unified class
    ignore_label: null                   # label value meaning "not annotated" (semantic 255)
    mask: null                           # volume of valid voxels (0 = not annotated)
    voxel_size: null                     # [z, y, x] nm; null: from the file (else 1, 1, 1)
    intensity_range: null                # [lo, hi] raw range scaled to [0, 1]; null: from dtype/data
    connectivity: 3d                     # mask / semantic components: 3d, or 2d (per section)
    components: volume                   # volume (ids computed once, whole volume) | patch
    dataset: volumes                     # name carried by the batches (``batch["dataset"]``)

Unified classes: 0 background, 1 neuron, 2 synaptic_cleft, 3 mitochondrion,
4 mitochondrion_boundary (names or ids are accepted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDataError, ShapeMismatchError
from ..labels import MITOCHONDRION, NEURON, UNIFIED_CLASSES
from ..volume import ArraySource, LabeledVolume, identity_labels
from .base import EMDataset
from .volume_labels import LabelRule
from .volume_sources import VolumeSpecError, file_voxel_size, open_source

__all__ = [
    "LABEL_KINDS",
    "LabelRule",
    "VolumeSpec",
    "VolumeSpecError",
    "VolumesDataset",
    "parse_volume_spec",
    "unified_class",
]

LABEL_KINDS = ("instances", "mask", "semantic")
_KEYS = (
    "name", "raw", "labels", "label_kind", "label_class", "class_map", "ignore_label", "mask",
    "voxel_size", "intensity_range", "connectivity", "components", "dataset",
)


def unified_class(value: Any, where: str) -> int:
    """Unified class id of ``value`` (a name such as ``"mitochondrion"`` or an id 0-4).

    Examples
    --------
    >>> unified_class("mitochondrion", "label_class")
    3
    """
    if isinstance(value, str) and not value.strip().isdigit():
        name = value.strip().lower().replace(" ", "_").replace("-", "_")
        aliases = {"cleft": "synaptic_cleft", "mito": "mitochondrion", "membrane": "background"}
        name = aliases.get(name, name)
        if name in UNIFIED_CLASSES:
            return UNIFIED_CLASSES.index(name)
    else:
        try:
            cid = int(value)
        except (TypeError, ValueError):
            cid = -1
        if 0 <= cid < len(UNIFIED_CLASSES):
            return cid
    raise VolumeSpecError(
        f"{where} = {value!r}: expected a unified class name {list(UNIFIED_CLASSES)} or id 0-4"
    )


@dataclass(frozen=True)
class VolumeSpec:
    """One user volume as given in the config (paths resolved against the data root)."""

    name: str
    raw: str
    labels: str | None = None
    label_kind: str = "instances"
    label_class: int = NEURON
    class_map: tuple[tuple[int, int], ...] = ()
    ignore_label: int | None = None
    mask: str | None = None
    voxel_size: tuple[float, float, float] | None = None
    intensity_range: tuple[float, float] | None = None
    connectivity: str = "3d"
    components: str = "volume"
    dataset: str = "volumes"
    where: str = field(default="volumes[0]", compare=False)


def _resolve(path: Any, root: Path | None, where: str) -> str:
    if not isinstance(path, str | Path) or not str(path).strip():
        raise VolumeSpecError(f"{where} = {path!r}: expected a path (file.h5:key, folder, *.png)")
    text = str(path)
    if root is not None and not Path(text).is_absolute():
        text = str(root / text)
    return text


def _numbers(value: Any, n: int, where: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n:
        raise VolumeSpecError(f"{where} = {value!r}: expected {n} numbers")
    return out


def parse_volume_spec(entry: Mapping[str, Any], where: str, root: Path | None = None) -> VolumeSpec:
    """Validate one ``volumes`` entry and return its :class:`VolumeSpec`.

    Parameters
    ----------
    entry : mapping
        The keys documented in this module (``raw`` required).
    where : str
        Config path of the entry for messages (``"data.options.volumes[1]"``).
    root : Path, optional
        Folder that relative paths are taken from.

    Raises
    ------
    VolumeSpecError
        Unknown key or invalid value; the message names ``where`` and the key.
    """
    if not isinstance(entry, Mapping):
        raise VolumeSpecError(f"{where} = {entry!r}: expected a mapping with at least 'raw'")
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
        raise VolumeSpecError(f"{where}: unknown key {unknown[0]!r}; expected some of {list(_KEYS)}")
    if "raw" not in entry:
        raise VolumeSpecError(f"{where}: missing key 'raw' (the raw image volume)")
    raw = _resolve(entry["raw"], root, f"{where}.raw")
    kind = entry.get("label_kind", "instances")
    if kind not in LABEL_KINDS:
        raise VolumeSpecError(f"{where}.label_kind = {kind!r}: expected one of {list(LABEL_KINDS)}")
    default_class = MITOCHONDRION if kind == "mask" else NEURON
    label_class = unified_class(entry.get("label_class", default_class), f"{where}.label_class")
    class_map: tuple[tuple[int, int], ...] = ()
    if kind == "semantic":
        cmap = entry.get("class_map")
        if not isinstance(cmap, Mapping) or not cmap:
            raise VolumeSpecError(
                f"{where}.class_map = {cmap!r}: label_kind 'semantic' needs a mapping "
                "label value -> unified class, e.g. {1: neuron, 2: mitochondrion}"
            )
        pairs = []
        for k, v in cmap.items():
            try:
                key = int(k)
            except (TypeError, ValueError):
                raise VolumeSpecError(f"{where}.class_map key {k!r}: expected an integer label value") from None
            pairs.append((key, unified_class(v, f"{where}.class_map[{k}]")))
        class_map = tuple(sorted(pairs))
    ignore = entry.get("ignore_label")
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
        raise VolumeSpecError(f"{where}.ignore_label = {ignore!r}: expected an integer or null")
    for key, choices in (("connectivity", ("3d", "2d")), ("components", ("volume", "patch"))):
        if str(entry.get(key, choices[0])) not in choices:
            raise VolumeSpecError(f"{where}.{key} = {entry[key]!r}: expected one of {list(choices)}")
    vs = _numbers(entry.get("voxel_size"), 3, f"{where}.voxel_size")
    if vs is not None and min(vs) <= 0:
        raise VolumeSpecError(f"{where}.voxel_size = {list(vs)}: expected positive sizes in nm")
    rng = _numbers(entry.get("intensity_range"), 2, f"{where}.intensity_range")
    if rng is not None and not rng[1] > rng[0]:
        raise VolumeSpecError(f"{where}.intensity_range = {list(rng)}: expected [lo, hi] with lo < hi")
    name = str(entry.get("name") or _stem(raw))
    labels = entry.get("labels")
    mask = entry.get("mask")
    return VolumeSpec(
        name=name,
        raw=raw,
        labels=None if labels is None else _resolve(labels, root, f"{where}.labels"),
        label_kind=kind,
        label_class=label_class,
        class_map=class_map,
        ignore_label=ignore,
        mask=None if mask is None else _resolve(mask, root, f"{where}.mask"),
        voxel_size=vs,  # type: ignore[arg-type]
        intensity_range=rng,  # type: ignore[arg-type]
        connectivity=str(entry.get("connectivity", "3d")),
        components=str(entry.get("components", "volume")),
        dataset=str(entry.get("dataset", "volumes")),
        where=where,
    )


def _stem(path: str) -> str:
    from neurons.io import split_key

    try:
        p, key = split_key(path)
    except Exception:  # noqa: BLE001 - any unparsable path: name it by its text
        p, key = Path(path), None
    base = p.parent.name if "*" in p.name else p.name
    for suffix in (".gz", ".nii", ".h5", ".hdf5", ".hdf", ".zarr", ".tif", ".tiff", ".npy", ".nrrd"):
        base = base.removesuffix(suffix)
    return f"{base}:{key}" if key else base


# ----------------------------------------------------------------------------------------------
# the reader
# ----------------------------------------------------------------------------------------------
def _check_labels(spec: VolumeSpec, image: ArraySource, src: ArraySource, what: str) -> None:
    if src.shape != image.shape:
        raise ShapeMismatchError(
            f"{spec.where}: {what} {src.description} has shape {src.shape} but raw "
            f"{image.description} has shape {image.shape}; they must match"
        )
    if src.dtype.kind not in "iub":
        raise VolumeSpecError(
            f"{spec.where}: {what} {src.description} has dtype {src.dtype}; labels must be integers"
        )


def build_volume(spec: VolumeSpec) -> LabeledVolume:
    """Open and validate one volume (shapes, dtypes, voxel sizes) and build its LabeledVolume."""
    image = open_source(spec.raw, f"{spec.where}.raw")
    file_vs = file_voxel_size(image)
    labels: dict[str, ArraySource] = {}
    rule = LabelRule(spec.label_kind, spec.label_class, spec.class_map, spec.ignore_label, spec.connectivity)
    if spec.labels is not None:
        lab = open_source(spec.labels, f"{spec.where}.labels")
        _check_labels(spec, image, lab, "labels")
        lab_vs = file_voxel_size(lab)
        both = file_vs is not None and lab_vs is not None
        if spec.voxel_size is None and both and not np.allclose(file_vs, lab_vs):  # type: ignore[arg-type]
            raise ShapeMismatchError(
                f"{spec.where}: raw {image.description} has voxel size {list(file_vs)} nm but "
                f"labels {lab.description} have {list(lab_vs)} nm; they must agree "
                "(set voxel_size to override both)"
            )
        file_vs = file_vs or lab_vs
        labels = {"label": lab}
        if spec.mask is not None:
            valid = open_source(spec.mask, f"{spec.where}.mask")
            _check_labels(spec, image, valid, "mask")
            labels["valid"] = valid
        if spec.components == "volume" and spec.label_kind != "instances":
            instance, semantic = rule(**{k: s.read_all() for k, s in labels.items()})
            labels = {
                "instance": ArraySource(instance, description=f"{spec.labels} ({spec.label_kind})"),
                "semantic": ArraySource(semantic, description=f"{spec.labels} (unified classes)"),
            }
    converter = identity_labels if "instance" in labels else rule
    return LabeledVolume(
        name=f"{spec.dataset}/{spec.name}",
        dataset=spec.dataset,
        image=image,
        labels=labels,
        converter=converter,
        annotated=rule.annotated,
        voxel_size=spec.voxel_size or file_vs or (1.0, 1.0, 1.0),
        intensity_range=spec.intensity_range,
    )


class VolumesDataset(EMDataset):
    """Reader of user volumes listed in the config (see the module docstring for the keys).

    Parameters
    ----------
    root : str or Path, optional
        Folder relative paths are taken from (default: the current folder).
    volumes : sequence of mapping
        The labelled pool and any other volume a split refers to by name.
    test : sequence of mapping or str, optional
        Test volumes: entries as in ``volumes`` or names of ``volumes`` entries.
    """

    name = "volumes"

    def __init__(
        self,
        root: str | Path | None = None,
        volumes: Sequence[Mapping[str, Any]] | None = None,
        test: Sequence[Mapping[str, Any] | str] | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else Path(".")
        base = Path(root) if root is not None else None
        if not volumes:
            raise VolumeSpecError(
                "data.options.volumes: expected a non-empty list of volumes, each a mapping with "
                "'raw' (and 'labels' for training)"
            )
        if isinstance(volumes, Mapping | str):
            raise VolumeSpecError(f"data.options.volumes = {volumes!r}: expected a list of mappings")
        self.specs = [parse_volume_spec(e, f"data.options.volumes[{i}]", base) for i, e in enumerate(volumes)]
        self.test_specs: list[VolumeSpec] = []
        by_name = {s.name: s for s in self.specs}
        for i, e in enumerate(test or ()):
            if isinstance(e, str):
                if e not in by_name:
                    raise VolumeSpecError(
                        f"data.options.test[{i}] = {e!r}: no volume of that name; known {sorted(by_name)}"
                    )
                self.test_specs.append(by_name[e])
            else:
                self.test_specs.append(parse_volume_spec(e, f"data.options.test[{i}]", base))
        names = [s.name for s in self.specs] + [
            s.name for s in self.test_specs if all(s is not t for t in self.specs)
        ]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise VolumeSpecError(
                f"data.options: two volumes are named {dup[0]!r}; give each a distinct 'name'"
            )
        self._built: dict[str, LabeledVolume] = {}

    def volume(self, name: str) -> LabeledVolume:
        """The LabeledVolume of the spec called ``name`` (built and validated once)."""
        if name not in self._built:
            spec = next((s for s in self.specs + self.test_specs if s.name == name), None)
            if spec is None:
                raise VolumeSpecError(f"no volume named {name!r}; known {sorted(self.names)}")
            self._built[name] = build_volume(spec)
        return self._built[name]

    @property
    def names(self) -> list[str]:
        """Names of the ``volumes`` entries (in order)."""
        return [s.name for s in self.specs]

    def _find(self, split: str) -> list[LabeledVolume]:
        if split == "train":
            labelled = [self.volume(s.name) for s in self.specs if s.labels is not None]
            if not labelled:
                raise VolumeSpecError("data.options.volumes: no volume has 'labels'; nothing to train on")
            return labelled
        if not self.test_specs:
            raise MissingDataError("data.options.test: no test volumes listed")
        return [self.volume(s.name) for s in self.test_specs]
