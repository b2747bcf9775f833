"""``neurons-data info CONFIG [key=value ...]``: what a training config's data looks like.

Builds the datamodule of a config (a shipped name such as ``snemi3d`` / ``volumes`` or a YAML
path, with Hydra-style ``data.x=value`` overrides) and reports its volumes (shape, dtype, voxel
size, annotated classes), the train / validation / test regions, the unified-class frequencies
and the instance counts and sizes of every region, streaming the labels slab by slab. With
``--montage out.png`` it also writes one preview tile per region (middle section, instances
coloured), atomically. A missing or invalid dataset exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, EmptyDatasetError, MissingDataError
from .labels import IGNORE_INDEX, UNIFIED_CLASSES
from .volume import LabeledVolume, scale_intensity
from .volume_splits import region_bounds

__all__ = ["describe_datamodule", "format_summary", "load_config", "main", "write_montage"]

#: Keys of ``data`` that are not datamodule keyword arguments of the same name.
_DATA_KEYS = ("root", "patch_size", "batch_size", "samples_per_epoch", "val_patches", "pin_memory")


class ConfigLoadError(DataError, ValueError):
    """The config cannot be found or parsed, or an override is malformed."""


# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------
def _config_dirs() -> list[Path]:
    import importlib.util

    dirs = []
    if os.environ.get("NEURONS_CONFIG_DIR"):
        dirs.append(Path(os.environ["NEURONS_CONFIG_DIR"]))
    try:
        spec = importlib.util.find_spec("neurons.train")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        dirs.append(Path(loc) / "configs")
    for parent in [Path.cwd(), *Path(__file__).resolve().parents]:
        if (parent / "configs" / "default.yaml").is_file():
            dirs.append(parent / "configs")
    return dirs


def _merge(base: dict, top: Mapping) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    import yaml

    if path in seen:
        raise ConfigLoadError(f"{path}: 'defaults' form a cycle through {[str(p) for p in seen]}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigLoadError(f"{path}: cannot read the config ({exc})") from exc
    if not isinstance(doc, dict):
        raise ConfigLoadError(f"{path}: expected a mapping at the top level")
    defaults = doc.pop("defaults", None) or ["_self_"]
    out: dict = {}
    for d in defaults:
        if d == "_self_":
            out = _merge(out, doc)
        elif isinstance(d, str):  # next to this file, else a shipped config (as Hydra's search path)
            dirs = [path.parent, *_config_dirs()]
            hit = next((x / f"{d}.yaml" for x in dirs if (x / f"{d}.yaml").is_file()), None)
            if hit is None:
                raise ConfigLoadError(f"{path}: 'defaults' entry {d!r} not found in {[str(x) for x in dirs]}")
            out = _merge(out, _read_yaml(hit, (*seen, path)))
    if "_self_" not in defaults:
        out = _merge(out, doc)
    return out


def load_config(config: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose a training config (``defaults`` lists resolved) and apply ``key=value`` overrides.

    Parameters
    ----------
    config : str or Path
        A YAML file, or the name of a shipped config (``$NEURONS_CONFIG_DIR``, the configs
        installed with neurons-train, or a repository ``configs/`` folder).
    overrides : sequence of str
        ``data.root=/data/snemi3d``, ``data.patch_size=[16,128,128]`` (values parsed as YAML;
        a leading ``+`` / ``++`` is accepted).

    Returns
    -------
    dict
        The composed config (only ``data`` and ``seed`` are used here).

    Examples
    --------
    >>> load_config("isbi2012", ["data.root=/data/isbi2012"])["data"]["name"]  # doctest: +SKIP
    'isbi2012'
    """
    import yaml

    path = Path(config)
    if not path.suffix and not path.is_file():
        dirs = _config_dirs()
        hit = next((d / f"{config}.yaml" for d in dirs if (d / f"{config}.yaml").is_file()), None)
        if hit is None:
            names = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
            raise ConfigLoadError(f"no config named {str(config)!r}; available: {names}")
        path = hit
    elif not path.is_file():
        raise ConfigLoadError(f"config file {path} does not exist")
    cfg = _read_yaml(path)
    for item in overrides:
        key, sep, text = item.lstrip("+").partition("=")
        if not sep or not key:
            raise ConfigLoadError(f"override {item!r}: expected key=value, e.g. data.root=/data/x")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError as exc:
            raise ConfigLoadError(f"override {item!r}: cannot parse the value ({exc})") from None
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {}) if isinstance(node.get(p), dict | None) else {}
        node[parts[-1]] = value
    if not isinstance(cfg.get("data"), dict) or "name" not in cfg["data"]:
        raise ConfigLoadError(f"{path}: the config has no data.name")
    return cfg


def build_from_config(cfg: Mapping[str, Any]) -> Any:
    """The datamodule of ``cfg["data"]`` (no augmentation, no worker processes)."""
    from .datamodule import build_datamodule

    data = dict(cfg["data"])
    kwargs = {k: data[k] for k in _DATA_KEYS if data.get(k) is not None}
    kwargs.update(dict(data.get("options") or {}))
    kwargs.update(augment=False, num_workers=0, seed=int(cfg.get("seed", 0) or 0))
    try:
        return build_datamodule(str(data["name"]), **kwargs)
    except TypeError as exc:  # an option the datamodule does not take
        raise ConfigLoadError(f"data.options of {data['name']!r}: {exc}") from exc


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------
def _children(dm: Any) -> list[tuple[str, Any]]:
    kids = getattr(dm, "children", None)
    return list(kids.items()) if isinstance(kids, dict) else [(getattr(dm, "name", "data"), dm)]


def _slabs(bounds: tuple[tuple[int, int], ...], max_voxels: int) -> Iterator[tuple[slice, ...]]:
    (z0, z1), (y0, y1), (x0, x1) = bounds
    step = max(1, max_voxels // max(1, (y1 - y0) * (x1 - x0)))
    for z in range(z0, z1, step):
        yield slice(z, min(z + step, z1)), slice(y0, y1), slice(x0, x1)


def _labels(vol: LabeledVolume, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    return vol.converter(**{k: src[box] for k, src in vol.labels.items()})  # type: ignore[index]


def region_stats(vol: LabeledVolume, bounds: tuple[tuple[int, int], ...], max_voxels: int = 1 << 24) -> dict:
    """Class voxel counts and instance sizes of one region, read slab by slab.

    Instance ids are merged across slabs (ids are volume-wide except for ``components: patch``
    volumes, whose components are counted per slab).
    """
    counts = np.zeros(256, np.int64)
    ids: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    for box in _slabs(bounds, max_voxels):
        instance, semantic = _labels(vol, box)
        counts += np.bincount(np.asarray(semantic, np.uint8).ravel(), minlength=256)
        u, c = np.unique(instance[instance != 0], return_counts=True)
        ids.append(u)
        sizes.append(c)
    if ids:
        u, inv = np.unique(np.concatenate(ids), return_inverse=True)
        size = np.bincount(inv, weights=np.concatenate(sizes), minlength=u.size).astype(np.int64)
    else:
        size = np.zeros(0, np.int64)
    classes = {n: int(counts[i]) for i, n in enumerate(UNIFIED_CLASSES)}
    classes["ignore"] = int(counts[IGNORE_INDEX])
    return {"voxels": int(counts.sum()), "classes": classes, "sizes": size}


def _size_stats(sizes: np.ndarray) -> dict:
    if sizes.size == 0:
        return {"count": 0}
    return {
        "count": int(sizes.size),
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "mean": float(sizes.mean()),
        "max": int(sizes.max()),
    }


def _frequencies(classes: Mapping[str, int]) -> dict[str, float]:
    total = sum(classes.values())
    return {k: (v / total if total else 0.0) for k, v in classes.items()}


def describe_datamodule(dm: Any, max_voxels: int = 1 << 24) -> dict[str, Any]:
    """Volumes, splits, class frequencies and instance statistics of a (set-up) datamodule.

    Parameters
    ----------
    dm : EMDataModule or CombineDataModule
        Any datamodule of :mod:`neurons.data`; ``setup("fit")`` is called, test volumes are
        included when found.
    max_voxels : int
        Voxels read at a time.

    Returns
    -------
    dict
        ``{"volumes": [...], "splits": {"train"|"val"|"test": {...}}, "regions": [...]}``
        (JSON-serialisable) plus ``"_volumes"``, the LabeledVolume objects for
        :func:`write_montage` (drop it before serialising).
    """
    dm.setup("fit")
    volumes: dict[int, LabeledVolume] = {}
    regions: list[tuple[str, LabeledVolume, tuple]] = []
    for _, child in _children(dm):
        for split, rs in (("train", child.train_regions), ("val", child.val_regions)):
            for r in rs:
                volumes.setdefault(id(r.volume), r.volume)
                regions.append((split, r.volume, region_bounds(r)))
        try:
            child.setup("test")
        except (MissingDataError, EmptyDatasetError):
            continue
        for v in getattr(child.test_set, "volumes", []):
            volumes.setdefault(id(v), v)
            regions.append(("test", v, tuple((0, s) for s in v.shape)))
    out_regions, splits = [], {}
    for split, vol, bounds in regions:
        entry: dict[str, Any] = {"split": split, "volume": vol.name, "box": [list(b) for b in bounds]}
        agg = splits.setdefault(split, {"regions": 0, "voxels": 0, "classes": {}, "sizes": []})
        agg["regions"] += 1
        agg["voxels"] += int(np.prod([b - a for a, b in bounds]))
        if vol.has_labels:
            st = region_stats(vol, bounds, max_voxels)
            entry.update(classes=st["classes"], instances=_size_stats(st["sizes"]))
            for k, v in st["classes"].items():
                agg["classes"][k] = agg["classes"].get(k, 0) + v
            agg["sizes"].append(st["sizes"])
        out_regions.append(entry)
    for agg in splits.values():
        sizes = agg.pop("sizes")
        agg["instances"] = _size_stats(np.concatenate(sizes) if sizes else np.zeros(0, np.int64))
        agg["class_frequency"] = _frequencies(agg["classes"])
    vols = [
        {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in v.summary().items()},
         "annotated": [UNIFIED_CLASSES[c] for c in v.annotated]}
        for v in volumes.values()
    ]
    return {"volumes": vols, "splits": splits, "regions": out_regions, "_volumes": list(volumes.values())}


def format_summary(summary: Mapping[str, Any]) -> str:
    """Human-readable text of :func:`describe_datamodule`'s result."""
    lines = ["volumes:"]
    for v in summary["volumes"]:
        vs = "x".join(f"{s:g}" for s in v["voxel_size"])
        lines.append(
            f"  {v['name']:<28} {'x'.join(map(str, v['shape'])):>14} {v['dtype']:<8} {vs} nm  "
            f"annotates {', '.join(v['annotated']) or '-'}"
        )
    for split in ("train", "val", "test"):
        s = summary["splits"].get(split)
        if s is None:
            continue
        lines.append(f"{split}: {s['regions']} region(s), {s['voxels']} voxels")
        for r in (r for r in summary["regions"] if r["split"] == split):
            box = " ".join(f"{a}:{b}" for a, b in r["box"])
            lines.append(f"  {r['volume']} [{box}]")
        if s["classes"]:
            freq = ", ".join(f"{k} {v:.1%}" for k, v in s["class_frequency"].items() if s["classes"][k])
            lines.append(f"  classes: {freq}")
            i = s["instances"]
            stats = (
                f"  instances: {i['count']}"
                + (f" (voxels min {i['min']}, median {i['median']:g}, mean {i['mean']:.1f}, max {i['max']})"
                   if i["count"] else "")
            )
            lines.append(stats)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# montage
# ----------------------------------------------------------------------------------------------
def _tile(vol: LabeledVolume, bounds: tuple, size: int) -> np.ndarray:
    from neurons.io import render_section

    (z0, z1), (y0, y1), (x0, x1) = bounds
    z = (z0 + z1) // 2
    step = max(1, -(-max(y1 - y0, x1 - x0) // size))
    box = (slice(z, z + 1), slice(y0, y1, step), slice(x0, x1, step))
    if vol.intensity_range is None:
        vol.read((slice(z, z + 1), slice(y0, y0 + 1), slice(x0, x0 + 1)))  # fixes the range
    raw = scale_intensity(vol.image[box], vol.intensity_range)[0]  # type: ignore[arg-type,index]
    inst = _labels(vol, box)[0][0] if vol.has_labels else None
    rgb = render_section(raw, labels=inst)
    out = np.full((size, size, 3), 32, np.uint8)
    out[: rgb.shape[0], : rgb.shape[1]] = rgb[:size, :size]
    return out


def _input_paths(volumes: Sequence[LabeledVolume]) -> set[Path]:
    from neurons.io import split_key

    paths = set()
    for v in volumes:
        for src in (v.image, *v.labels.values()):
            try:
                paths.add(split_key(src.description.split(" ")[0])[0].resolve())
            except Exception:  # noqa: BLE001 - in-memory sources have no path
                continue
    return paths


def write_montage(summary: Mapping[str, Any], path: str | Path, tile: int = 192, columns: int = 4) -> Path:
    """Write one tile per region (middle section, instances coloured) as a PNG, atomically.

    Parameters
    ----------
    summary : mapping
        Result of :func:`describe_datamodule`.
    path : str or Path
        Destination ``.png`` (its folder must exist; an input volume is never overwritten).
    tile, columns : int
        Tile edge in pixels and tiles per row.

    Returns
    -------
    Path
    """
    from PIL import Image, ImageDraw

    path = Path(path)
    vols = {v.name: v for v in summary["_volumes"]}
    if path.resolve() in _input_paths(list(vols.values())):
        raise ConfigLoadError(f"--montage {path} is one of the input volumes; choose another file")
    if not path.parent.is_dir():
        raise MissingDataError(f"--montage {path}: folder {path.parent} does not exist")
    tiles = []
    for r in summary["regions"]:
        bounds = tuple(tuple(b) for b in r["box"])
        img = Image.fromarray(_tile(vols[r["volume"]], bounds, tile))
        ImageDraw.Draw(img).text((4, 4), f"{r['split']} {r['volume']} z={bounds[0][0]}:{bounds[0][1]}", fill=(255, 255, 0))
        tiles.append(np.asarray(img))
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    sheet = np.zeros((rows * tile, columns * tile, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = t
    _atomic_write(path, lambda tmp: Image.fromarray(sheet).save(tmp, format="PNG"))
    return path


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``neurons-data info CONFIG [overrides] [--json F] [--montage F.png]``; exit 2 on bad input."""
    parser = argparse.ArgumentParser(prog="neurons-data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="summarise the data of a training config")
    p.add_argument("config", help="shipped config name (isbi2012, volumes, ...) or a YAML file")
    p.add_argument("overrides", nargs="*", help="data.root=/path, data.patch_size=[256,256], ...")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON ('-': stdout)")
    p.add_argument("--montage", metavar="PNG", help="write a preview tile per region to this PNG")
    args = parser.parse_args(argv)
    from neurons.io import VolumeError

    try:
        summary = describe_datamodule(build_from_config(load_config(args.config, args.overrides)))
        if args.montage:
            write_montage(summary, args.montage)
    except (DataError, VolumeError, FileNotFoundError) as exc:
        msg = " ".join(str(exc).split())
        print(f"neurons-data: error: {msg}", file=sys.stderr)
        return 2
    summary.pop("_volumes")
    if args.json == "-":
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
        if args.json:
            text = json.dumps(summary, indent=2)
            _atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text))
    if args.montage:
        print(f"montage: {args.montage}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
