"""``calibrate``: predict the validation split once, search the decoders, store the result."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import CalibrationError
from .search import CalibrationResult, search_decoders
from .storage import embed_calibration, write_sidecar
from .validation import predict_validation

__all__ = ["calibrate", "model_offsets"]


def model_offsets(model: Any, cfg: Mapping[str, Any]) -> list[tuple[int, ...]] | None:
    """Affinity offsets of ``model`` (its attribute, else ``model.affinity_offsets`` of the
    config, else the default list of its dimensionality; None when unknown)."""
    offs = getattr(model, "affinity_offsets", None)
    if offs is None:
        offs = (cfg.get("model") or {}).get("affinity_offsets")
    if offs is None:
        try:
            from neurons.models import default_affinity_offsets
        except ImportError:
            return None
        sdims = int(getattr(model, "spatial_dims", 0) or len(cfg["data"]["patch_size"]))
        offs = default_affinity_offsets(sdims)
    return [tuple(int(v) for v in o) for o in offs]


def _model_and_cfg(source: Any, cfg: Mapping[str, Any] | None, device: str) -> tuple[Any, dict]:
    if isinstance(source, str | os.PathLike):
        from neurons.train.inference import load_model

        model, ck_cfg = load_model(source, device)
        return model, dict(cfg) if cfg is not None else ck_cfg
    net = getattr(source, "model", source)  # a VistaModule or the network itself
    if cfg is None:
        cfg = getattr(source, "cfg", None)
    if cfg is None:
        raise CalibrationError(
            "calibrate(model) needs cfg= (the training config) when given a bare network"
        )
    return net, dict(cfg)


def calibrate(
    checkpoint_or_module: str | os.PathLike | Any,
    cfg: Mapping[str, Any] | None = None,
    *,
    datamodule: Any = None,
    decoders: Sequence[str] | None = None,
    metric: str = "cremi",
    budget: int | None = 24,
    time_limit: float | None = None,
    max_voxels: int = 2_000_000,
    device: str = "cpu",
    write: str | None = "auto",
    semantic_modes: Sequence[str] | None = None,
) -> CalibrationResult:
    """Calibrate decoding on the validation split of the checkpoint's own data config.

    The model predicts the held-out validation regions once (never the test data); each
    decoder's parameters are searched on those predictions (see
    :func:`~.search.search_decoders`) and the decoder with the best ``metric`` wins.

    Parameters
    ----------
    checkpoint_or_module : path, VistaModule or nn.Module
        A ``neurons-train`` checkpoint, or a model in memory (then ``cfg`` or ``module.cfg``).
    cfg : mapping, optional
        Training config to use instead of the checkpoint's (e.g. with ``data.root`` moved).
    datamodule : LightningDataModule, optional
        Already built from ``cfg`` (saves reading the volumes again).
    decoders : sequence of str, optional
        Decoders to consider (default all registered).
    metric : str
        ``cremi`` (default), ``voi``, ``arand``, ``ap50``, ``ap75``, ``ari``... (see
        :data:`~.objective.OBJECTIVES`).
    budget : int, optional
        Most parameter sets per decoder; ``time_limit`` seconds per decoder bound the rest.
    max_voxels : int
        Validation voxels predicted (regions are centre-cropped to share this budget).
    device : str
        Where the network runs.
    semantic_modes : sequence of str, optional
        Also search how the semantic output is used (e.g. ``["classes", "dense"]``: dense lets
        neurons fill every voxel not of another class); the winner's mode is stored and applied
        by ``neurons-infer``. Default: the decoders' default (``classes``).
    write : {"auto", "embed", "sidecar", None}
        Where the result goes when a checkpoint path was given: ``embed`` into the
        checkpoint, ``sidecar`` a JSON next to it (``auto`` = ``sidecar``), None nowhere.

    Returns
    -------
    CalibrationResult

    Examples
    --------
    >>> res = calibrate("outputs/synthetic/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> print(res.summary())  # doctest: +SKIP
    watershed {min_size=0, seed_threshold=0.7, sigma=1.0} (validation cremi_score 0.2100, ...)
    """
    if write not in ("auto", "embed", "sidecar", None):
        raise CalibrationError(f"write must be 'auto', 'embed', 'sidecar' or None, got {write!r}")
    t0 = time.perf_counter()
    model, ck_cfg = _model_and_cfg(checkpoint_or_module, cfg, device)
    samples = predict_validation(
        model, ck_cfg, datamodule=datamodule, max_voxels=max_voxels, device=device
    )
    t_pred = time.perf_counter() - t0
    result = search_decoders(
        samples,
        decoders=decoders,
        metric=metric,
        budget=budget,
        time_limit=time_limit,
        offsets=model_offsets(model, ck_cfg),
        semantic_modes=semantic_modes,
    )
    result.predict_seconds = t_pred
    result.seconds = time.perf_counter() - t0
    if isinstance(checkpoint_or_module, str | os.PathLike) and write is not None:
        if write == "embed":
            embed_calibration(checkpoint_or_module, result)
        else:
            write_sidecar(checkpoint_or_module, result)
    return result
