"""Build the model, the loss and the datamodule named by a config.

These are thin adapters between the config tree and the registries of the sibling packages
(:func:`neurons.models.build_model`, :class:`neurons.losses.VistaLoss`,
:func:`neurons.data.build_datamodule`). Keys that the target does not accept raise
:class:`~neurons.train.errors.ConfigError` naming the dotted config key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from neurons.train.errors import ConfigError, DatasetFilesMissingError

__all__ = [
    "GeometryTargets",
    "build_datamodule_from_cfg",
    "build_loss_from_cfg",
    "build_model_from_cfg",
    "dataset_voxel_size",
]


def _accepted(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    """Parameter names of ``fn`` and whether it takes ``**kwargs``."""
    sig = inspect.signature(fn)
    names = {
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    }
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def _check_keys(fn: Callable[..., Any], kwargs: Mapping[str, Any], section: str) -> None:
    names, var_kw = _accepted(fn)
    if var_kw:
        return
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {section}.{unknown[0]!r} "
            f"(all unknown: {[f'{section}.{u}' for u in unknown]}); "
            f"valid keys: {sorted(names)}"
        )


def _check_types(fn: Callable[..., Any], kwargs: Mapping[str, Any], section: str) -> None:
    """Reject a value whose type clearly disagrees with the parameter's scalar default."""
    sig = inspect.signature(fn)
    for key, value in kwargs.items():
        p = sig.parameters.get(key)
        if p is None or p.default is inspect.Parameter.empty or p.default is None or value is None:
            continue
        d = p.default
        ok = True
        if isinstance(d, bool):
            ok = isinstance(value, bool)
        elif isinstance(d, int | float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif isinstance(d, str):
            ok = isinstance(value, str)
        if not ok:
            raise ConfigError(
                f"config key '{section}.{key}' = {value!r} ({type(value).__name__}): "
                f"expected {type(d).__name__} like the default {d!r}"
            )


def dataset_voxel_size(cfg: Mapping[str, Any]) -> tuple[float, ...] | None:
    """Voxel size ``(z, y, x)`` nm of a config: ``data.voxel_size``, else the dataset's own.

    The dataset's own is its reader's (SNEMI3D 30x6x6, CREMI 40x4x4, MICrONS 40x8x8, ISBI 2012
    50x4x4 nm); None for datasets whose volumes differ (MitoEM2, combine) or have none
    (synthetic) unless ``data.voxel_size`` is set. :class:`~neurons.train.VistaModule` writes
    it into its config (so checkpoints carry it); the model and loss builders read only an
    explicit ``data.voxel_size``.

    Examples
    --------
    >>> dataset_voxel_size({"data": {"name": "snemi3d", "voxel_size": None}})
    (30.0, 6.0, 6.0)
    """
    d = cfg["data"]
    given = d.get("voxel_size") if hasattr(d, "get") else None
    if given is not None:
        vs = tuple(float(v) for v in given)
        if len(vs) not in (2, 3) or any(v <= 0 for v in vs):
            raise ConfigError(
                f"config key 'data.voxel_size' = {list(given)}: expected 2 or 3 positive sizes (nm)"
            )
        return vs
    from neurons.data import DATAMODULES

    dm = DATAMODULES.get(str(d["name"]))
    reader = getattr(dm, "reader_class", None)
    vs = getattr(reader, "voxel_size", None)
    if vs is None or tuple(float(v) for v in vs) == (1.0, 1.0, 1.0):
        return None
    return tuple(float(v) for v in vs)


def _explicit_voxel_size(cfg: Mapping[str, Any]) -> tuple[float, ...] | None:
    """``data.voxel_size`` when the config sets it (checkpoints of older runs do not: their
    models were built isotropic and must be rebuilt so)."""
    d = cfg["data"]
    if (d.get("voxel_size") if hasattr(d, "get") else None) is None:
        return None
    return dataset_voxel_size(cfg)


def _model_geometry(cfg: Mapping[str, Any], name: str, kwargs: dict[str, Any]) -> None:
    """Dimensionality from ``data.patch_size`` and anisotropy from the voxel size."""
    spatial = len(cfg["data"]["patch_size"])
    key = str(name).strip().lower()
    fixed = {"vista3d": 3, "vista2d": 2, "segresnet3d": 3, "segresnet2d": 2}
    if key in fixed and fixed[key] != spatial:
        raise ConfigError(
            f"config keys 'model.name' = {name!r} and 'data.patch_size' = "
            f"{list(cfg['data']['patch_size'])} disagree: a {fixed[key]}D model needs "
            f"{fixed[key]} patch sizes"
        )
    if key in ("segresnet", "vista"):
        given = kwargs.get("spatial_dims")
        if given is not None and int(given) != spatial:
            raise ConfigError(
                f"config key 'model.options.spatial_dims' = {given} disagrees with "
                f"'data.patch_size' = {list(cfg['data']['patch_size'])} ({spatial}D)"
            )
        kwargs["spatial_dims"] = spatial
    if key.startswith("vista") and kwargs.get("resolution") is None:
        vs = _explicit_voxel_size(cfg)  # VistaModule resolves the dataset's into the config
        if vs is not None:
            kwargs["resolution"] = list(vs[-spatial:])


def _loss_geometry(cfg: Mapping[str, Any], kwargs: dict[str, Any]) -> None:
    """Embedding size, dimensionality and voxel size the instance / geometry losses need."""
    spatial = len(cfg["data"]["patch_size"])
    emb = int(cfg["model"]["emb_dim"])
    if kwargs.get("instance") == "skeleton" and emb != spatial:
        raise ConfigError(
            f"config key 'model.emb_dim' = {emb}: loss.instance=skeleton makes the instance head "
            f"a {spatial}-channel offset field; set model.emb_dim={spatial}"
        )
    kwargs.setdefault("embedding_dim", emb)
    kwargs.setdefault("spatial_dims", spatial)
    if kwargs.get("sampling") is None:
        vs = _explicit_voxel_size(cfg)
        if vs is not None:
            kwargs["sampling"] = list(vs[-spatial:])


class GeometryTargets:
    """Adds the per-voxel targets the configured loss needs to a data item (in the workers).

    ``direction`` ``(S, *sp)`` / ``structure`` ``(S*S, *sp)`` (geometry head, centroid
    projection heads), ``nearest`` / ``edt_norm`` / ``edt_grad`` (skeleton loss) and
    ``instance_weights`` ``(*sp)`` (boundary / centre-line weights of the vista loss), from the
    item's (augmented) ``instance`` map with :mod:`neurons.losses.targets`.  Computed once per
    item in the DataLoader workers instead of once per step in the training process; picklable.

    Parameters
    ----------
    direction, structure, skeleton : bool
        Which targets to add.
    dir_target : {"centroid", "skeleton"}
    sampling : sequence of float, optional
        Voxel size (array order) of the distances.
    sigma : float
        Structure-tensor smoothing.
    weights : (float, float), optional
        ``(weight_edge, weight_bone)`` of the instance-loss voxel weights to add.
    """

    def __init__(
        self,
        direction: bool = False,
        structure: bool = False,
        skeleton: bool = False,
        dir_target: str = "centroid",
        sampling: Any = None,
        sigma: float = 5.0,
        weights: tuple[float, float] | None = None,
    ) -> None:
        self.direction, self.structure, self.skeleton = direction, structure, skeleton
        self.weights = None if weights is None else (float(weights[0]), float(weights[1]))
        self.dir_target = dir_target
        self.sampling = None if sampling is None else tuple(float(v) for v in sampling)
        self.sigma = float(sigma)

    @classmethod
    def from_cfg(cls, c: Mapping[str, Any]) -> GeometryTargets | None:
        """The targets ``c["loss"]`` needs, or None (nothing to precompute)."""
        lo = dict(c.get("loss") or {})
        kind = lo.get("instance", "vista")
        geometry = float(lo.get("weight_geometry", 0.0)) > 0
        heads = kind == "centroid"
        w_dir, w_cov = float(lo.get("weight_dir", 1.0)), float(lo.get("weight_cov", 1.0))
        direction = (geometry or heads) and w_dir > 0
        structure = (geometry or heads) and w_cov > 0
        skeleton = kind == "skeleton"
        edge, bone = float(lo.get("weight_edge", 10.0)), float(lo.get("weight_bone", 10.0))
        weights = (
            (edge, bone)
            if kind == "vista" and float(lo.get("weight_instance", 1.0)) > 0
            and (edge != 1 or bone != 1) else None
        )
        if not (direction or structure or skeleton or weights):
            return None
        spatial = len(c["data"]["patch_size"])
        vs = lo.get("sampling") or dataset_voxel_size(c)
        return cls(direction, structure, skeleton, str(lo.get("dir_target", "centroid")),
                   None if vs is None else list(vs)[-spatial:], float(lo.get("sigma", 5.0)),
                   weights)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        import torch

        from neurons.losses import targets as T

        labels = item["instance"].unsqueeze(0)
        with torch.no_grad():
            if self.direction or self.structure:
                t = T.geometry_targets(labels, dir_target=self.dir_target,
                                       direction=self.direction, structure=self.structure,
                                       sigma=self.sigma, sampling=self.sampling)
                for key, value in t.items():
                    item[key] = value[0]
            if self.skeleton:
                t = T.skeleton_targets(labels)
                for key in ("nearest", "edt_norm", "edt_grad"):
                    item[key] = t[key][0]
            if self.weights is not None:
                from neurons.losses.vista import instance_weights

                w = instance_weights(labels, *self.weights)
                if w is not None:
                    item["instance_weights"] = w.reshape(labels.shape[1:])
        return item


def build_model_from_cfg(cfg: Mapping[str, Any]) -> Any:
    """The network described by ``cfg["model"]``.

    Parameters
    ----------
    cfg : mapping
        Full config (plain dict or DictConfig) with a ``model`` section.

    Returns
    -------
    torch.nn.Module

    Examples
    --------
    >>> from neurons.train.config import compose_config
    >>> model = build_model_from_cfg(compose_config("synthetic"))  # doctest: +SKIP
    """
    from neurons.models import build_model

    m = dict(cfg["model"])
    name = m.pop("name")
    kwargs: dict[str, Any] = dict(m.pop("options", None) or {})
    for key in ("in_channels", "num_classes", "emb_dim"):
        kwargs[key] = m.pop(key)
    preset = m.pop("preset", None)
    if preset is not None:
        kwargs["preset"] = preset
    offsets = m.pop("affinity_offsets", None)
    if offsets is not None:  # null: the model's default list for its dimensionality
        kwargs["affinity_offsets"] = [list(o) for o in offsets]
    if m:
        raise ConfigError(f"unknown config key model.{sorted(m)[0]!r}")
    _model_geometry(cfg, name, kwargs)
    try:
        return build_model(name, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"config section 'model' ({name}): {exc}") from exc
    except (KeyError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config section 'model' = {dict(cfg['model'])}: {exc}") from exc


def _cfg_affinity_offsets(cfg: Mapping[str, Any]) -> list[tuple[int, ...]] | None:
    """Affinity offsets of the model ``cfg`` describes (None when the config has no model)."""
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    offs = model.get("affinity_offsets") if hasattr(model, "get") else None
    if offs is not None:
        return [tuple(int(v) for v in o) for o in offs]
    patch = data.get("patch_size") if hasattr(data, "get") else None
    if not patch or len(patch) not in (2, 3):
        return None
    from neurons.models import default_affinity_offsets

    return default_affinity_offsets(len(patch))


def build_loss_from_cfg(
    cfg: Mapping[str, Any], affinity_offsets: Any = None
) -> Any:
    """The :class:`neurons.losses.VistaLoss` described by ``cfg["loss"]``.

    Every key of the ``loss`` section must be a keyword of ``VistaLoss``; a key it does not
    take, or a value whose type disagrees with the keyword's default, raises ``ConfigError``.
    ``affinity_offsets`` (the model's ``affinity_offsets``) supervise the affinity head; they
    are set by ``model.affinity_offsets``, so a different ``loss.affinity_offsets`` is an error.
    Not given: the offsets of the model ``cfg`` describes (``model.affinity_offsets``, null =
    :func:`neurons.models.default_affinity_offsets` of the patch's dimensionality).
    """
    from neurons.losses import LossError, VistaLoss

    kwargs = dict(cfg.get("loss") or {})
    for key, value in list(kwargs.items()):
        if hasattr(value, "items") or isinstance(value, list | tuple):
            from omegaconf import OmegaConf

            if not isinstance(value, dict | list | tuple):
                kwargs[key] = OmegaConf.to_container(value, resolve=True)
    _check_keys(VistaLoss.__init__, kwargs, "loss")
    _check_types(VistaLoss.__init__, kwargs, "loss")
    _loss_geometry(cfg, kwargs)
    if affinity_offsets is None:
        affinity_offsets = _cfg_affinity_offsets(cfg)
    if affinity_offsets is not None:
        model_offs = [tuple(int(v) for v in o) for o in affinity_offsets]
        given = kwargs.get("affinity_offsets")
        if given is not None and [tuple(int(v) for v in o) for o in given] != model_offs:
            raise ConfigError(
                f"config key 'loss.affinity_offsets' = {given} differs from the model's affinity "
                f"offsets {model_offs}; set 'model.affinity_offsets' instead"
            )
        kwargs["affinity_offsets"] = model_offs
    try:
        return VistaLoss(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"config section 'loss': {exc}") from exc
    except LossError as exc:  # a value the loss rejects (e.g. loss.instance=centroids)
        raise ConfigError(f"config section 'loss': {exc}") from exc


_DOWNLOAD_SCRIPTS = {
    "snemi3d": "scripts/download_snemi3d.py",
    "cremi3d": "scripts/download_cremi3d.py",
    "microns": "scripts/download_microns.py",
    "mitoem2": "scripts/download_mitoem2.py",
    "isbi2012": "scripts/download_isbi2012.py",
}


def _missing(name: str, root: Any, detail: str) -> DatasetFilesMissingError:
    script = _DOWNLOAD_SCRIPTS.get(name, f"scripts/download_{name}.py")
    where = f" --output {root}" if root else ""
    return DatasetFilesMissingError(
        f"data.name={name!r}: dataset files not found (data.root={root!r}). {detail} "
        f"Download them with: python {script}{where}"
    )


def datamodule_kwargs(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, kwargs)`` for :func:`neurons.data.build_datamodule` from ``cfg["data"]``."""
    d = dict(cfg["data"])
    name = d.pop("name")
    options = dict(d.pop("options", None) or {})
    kwargs: dict[str, Any] = {
        "root": d.pop("root"),
        "patch_size": tuple(int(p) for p in d.pop("patch_size")),
        "batch_size": int(d.pop("batch_size")),
        "num_workers": int(d.pop("num_workers")),
        "samples_per_epoch": int(d.pop("samples_per_epoch")),
        "val_patches": d.pop("val_patches"),
        "augment": d.pop("augment"),
        "seed": int(cfg.get("seed", 0)),
    }
    pin = d.pop("pin_memory", None)
    if pin is not None:
        kwargs["pin_memory"] = bool(pin)
    d.pop("voxel_size", None)  # read by the model and the loss (see dataset_voxel_size)
    if d:
        raise ConfigError(f"unknown config key data.{sorted(d)[0]!r}")
    for key in options:
        if key in kwargs:
            raise ConfigError(
                f"config key 'data.options.{key}' duplicates 'data.{key}'; set it there instead"
            )
    kwargs.update(options)
    return name, kwargs


def _check_augment(augment: Any, spatial_dims: int) -> None:
    """Build ``data.augment`` once so a bad value fails here, naming ``data.augment.<key>``.

    :func:`neurons.data.build_augmentation` reports problems as ``AugmentationError`` (a
    ``DataError``/``ValueError``) without the config path; each top-level entry is tried on its
    own (with the global ``anisotropic`` flag) to find the key to name.
    """
    if augment is None or isinstance(augment, bool) or callable(augment):
        return
    from neurons.data import DataError, build_augmentation

    if not isinstance(augment, Mapping):
        raise ConfigError(
            f"config key 'data.augment' = {augment!r}: expected true, false or a mapping of "
            "augmentation parameters"
        )
    from omegaconf import DictConfig, OmegaConf

    if isinstance(augment, DictConfig):
        params = dict(OmegaConf.to_container(augment, resolve=True))  # type: ignore[arg-type]
    else:
        params = dict(augment)
    try:
        build_augmentation(params, spatial_dims)
    except (DataError, ValueError, TypeError) as exc:
        glob = {k: params[k] for k in ("anisotropic",) if k in params}
        for key, value in params.items():
            try:
                build_augmentation({**glob, key: value}, spatial_dims)
            except (DataError, ValueError, TypeError):
                raise ConfigError(f"config key 'data.augment.{key}' = {value!r}: {exc}") from exc
        raise ConfigError(f"config key 'data.augment' = {params!r}: {exc}") from exc


def build_datamodule_from_cfg(cfg: Mapping[str, Any], *, setup_stage: str | None = None) -> Any:
    """The LightningDataModule described by ``cfg["data"]``.

    ``data.options`` holds dataset-specific keywords (e.g. CREMI volumes, the datasets of
    ``combine``); they are forwarded to :func:`neurons.data.build_datamodule`.

    Parameters
    ----------
    cfg : mapping
        Full config.
    setup_stage : str, optional
        Also call ``datamodule.setup(setup_stage)`` (e.g. ``"fit"``) so missing or unreadable
        files surface here, with the download script named, rather than inside ``fit``.

    Raises
    ------
    ConfigError
        A key the datamodule does not accept (named as ``data.options.<key>``), or an invalid
        augmentation entry (named as ``data.augment.<key>``).
    DatasetFilesMissingError
        The dataset's files are absent; the message names the download script.
    """
    from neurons.data import build_datamodule

    try:
        from neurons.data.errors import MissingDataError
    except ImportError:  # pragma: no cover
        MissingDataError = FileNotFoundError  # noqa: N806

    name, kwargs = datamodule_kwargs(cfg)
    _check_augment(kwargs.get("augment"), len(kwargs["patch_size"]))
    targets = GeometryTargets.from_cfg(cfg)
    if targets is not None:
        kwargs["item_transform"] = targets
    root = kwargs.get("root")
    if name not in ("synthetic", "combine", "volumes") and root is not None and not Path(root).exists():
        raise _missing(name, root, f"Folder {str(Path(root).resolve())!r} does not exist.")
    try:
        dm = build_datamodule(name, **kwargs)
        if setup_stage is not None:
            dm.setup(setup_stage)
    except MissingDataError as exc:
        msg = str(exc)
        if "download" in msg or name == "volumes":  # (your own files: nothing to download)
            raise DatasetFilesMissingError(f"data.name={name!r}: {msg}") from exc
        raise _missing(name, root, msg) from exc
    except TypeError as exc:
        raise ConfigError(f"config section 'data' ({name}): {exc}") from exc
    except ValueError as exc:
        from neurons.data import PatchSizeError
        from neurons.data.transforms import AugmentationError

        if isinstance(exc, PatchSizeError):  # the patch does not fit the data or its split
            raise ConfigError(
                f"config key 'data.patch_size' = {list(kwargs['patch_size'])} ({name}): {exc}"
            ) from exc

        if isinstance(exc, AugmentationError):  # e.g. a combination only setup() can check
            raise ConfigError(f"config key 'data.augment': {exc}") from exc
        from neurons.data import DataError

        if isinstance(exc, DataError):  # bad volumes / splits (e.g. data.name=volumes entries)
            raise ConfigError(f"data.name={name!r}: {exc}") from exc
        raise
    return dm
