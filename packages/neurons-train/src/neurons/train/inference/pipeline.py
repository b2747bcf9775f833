"""One call from checkpoint + input file to segmentation file, previews and scores."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import InferenceSettings, load_model, settings_from_config
from .errors import InferenceError
from .previews import preview_paths, write_previews
from .sliding import training_intensity_range
from .stitch import Predictor, SegmentationResult, segment_blockwise

__all__ = ["InferenceRun", "evaluate_segmentation", "run_inference"]


@dataclass
class InferenceRun:
    """Result of :func:`run_inference`."""

    result: SegmentationResult
    output: Path
    out_key: str
    previews: dict[str, Path] = field(default_factory=dict)
    scores: Any = None  # neurons.metrics Report when ground truth was given
    scores_path: Path | None = None
    settings: InferenceSettings | None = None
    decoder_choice: Any = None  # neurons.train.calibration.resolve.DecoderChoice


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate_segmentation(
    gt: Any,
    pred: Any,
    *,
    metrics: Sequence[str] | str | None = None,
    block_size: int | None = 16,
    **kwargs: Any,
) -> Any:
    """Score ``pred`` against ``gt`` with :func:`neurons.metrics.evaluate`.

    Both may be arrays or ``neurons.io`` Volumes; volumes are read ``block_size`` planes at a
    time (the contingency table is accumulated block by block), so memory stays bounded.
    Returns the metrics ``Report`` (``voi_split`` = H(pred|gt), ``voi_merge`` = H(gt|pred),
    ``arand_cremi`` = adapted Rand error in the CREMI convention, ...).

    Examples
    --------
    >>> evaluate_segmentation(np.array([[1, 2]]), np.array([[1, 2]]))["voi_total"]  # doctest: +SKIP
    0.0
    """
    from neurons.metrics import evaluate

    if tuple(gt.shape) != tuple(pred.shape):
        raise InferenceError(
            f"ground truth shape {tuple(gt.shape)} differs from prediction shape {tuple(pred.shape)}"
        )
    return evaluate(gt, pred, metrics=metrics, block_size=block_size, **kwargs)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def run_inference(
    checkpoint: str | os.PathLike | None,
    input: str | os.PathLike,  # noqa: A002 - mirrors the CLI argument
    output: str | os.PathLike,
    *,
    model: Any = None,
    cfg: dict | None = None,
    key: str | None = None,
    out_key: str = "segmentation",
    semantic_key: str | None = "semantic",
    block_size: int | Sequence[int] | None = None,
    overlap: int | Sequence[int] | None = None,
    window: Sequence[int] | None = None,
    window_overlap: float | None = None,
    batch_size: int | None = None,
    tta: str | None = None,
    intensity_range: Sequence[float] | None = None,
    decoder: str | None = None,
    bandwidth: float | None = None,
    min_size: int | None = None,
    decode_options: dict[str, Any] | None = None,
    match_threshold: float = 0.5,
    scheduler: str | Any = "threads",
    workers: int | None = None,
    device: str = "auto",
    gt: str | os.PathLike | None = None,
    gt_key: str | None = None,
    previews: bool = True,
    compression: str | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    calibration: Any = None,
    use_calibration: bool = True,
) -> InferenceRun:
    """Segment ``input`` with a trained model and write ``output`` (+ previews, + scores).

    Parameters
    ----------
    checkpoint : path or None
        ``neurons-train`` checkpoint; or pass ``model=`` (an ``nn.Module``) and ``cfg=`` (its
        training config) instead.
    input, output : path
        Volumes (``file.h5:key`` syntax allowed); any format ``neurons.io`` reads/writes.
    block_size, overlap : int or sequence, optional
        Block core size and halo (voxels); defaults from the config (see
        :func:`~.checkpoint.settings_from_config`).
    window, window_overlap, batch_size, tta : optional
        Sliding-window overrides.
    intensity_range : (lo, hi), optional
        Raw intensity range mapped to [0, 1] (then clipped). Default: ``inference.intensity_range``
        of the config, else the range the training pipeline computes for this volume
        (:func:`~.sliding.training_intensity_range`: uint8 -> 0..255, otherwise the sampled
        min/max), so the network sees the same input scaling as in training.
    decoder, bandwidth, min_size : optional
        Decoder overrides (``auto``/``embedding``/``watershed``). Without them the decoder and
        parameters calibrated on the validation split (stored with the checkpoint by training
        or ``neurons-tune``) are used; without a calibration, the config's defaults.
    decode_options : dict, optional
        Any other :class:`~.decode.DecodeConfig` fields, e.g. ``{"seed_threshold": 0.6}``.
    calibration : CalibrationResult, optional
        Use this calibration instead of the checkpoint's (e.g. with ``model=``).
    use_calibration : bool
        False: ignore any calibration (config defaults + flags only).
    scheduler, workers : str, int
        Dask scheduler (``threads``, ``processes``, ``sync`` or a distributed address).
    gt, gt_key : path, str, optional
        Ground truth to score against (scores go to ``<stem>.scores.json``).

    Returns
    -------
    InferenceRun

    Examples
    --------
    >>> run = run_inference("last.ckpt", "raw.h5:raw", "seg.h5", gt="gt.h5:ids")  # doctest: +SKIP
    >>> print(run.scores.to_markdown())  # doctest: +SKIP
    """
    from neurons.io import open_volume, split_key

    from .guards import check_inference_paths

    check_inference_paths(  # before any work: never overwrite an input, output format writable
        checkpoint, input, output, key=key, out_key=out_key, semantic_key=semantic_key,
        gt=gt, gt_key=gt_key, compression=compression,
    )
    dev = _resolve_device(device)
    if model is None:
        if checkpoint is None:
            raise InferenceError("run_inference needs a checkpoint path or model= and cfg=")
        model, cfg = load_model(checkpoint, dev)
        predictor_model: Any = None
    else:
        if cfg is None:
            raise InferenceError("run_inference(model=...) also needs cfg= (the training config)")
        predictor_model = model
    sdims = int(getattr(model, "spatial_dims", 0) or len(cfg.get("data", {}).get("patch_size", [])))
    settings = settings_from_config(cfg, spatial_dims=sdims or None)
    sw = settings.window
    if window is not None:
        sw = replace(sw, window=tuple(int(w) for w in window))
    if window_overlap is not None:
        sw = replace(sw, overlap=float(window_overlap))
    if batch_size is not None:
        sw = replace(sw, batch_size=int(batch_size))
    if tta is not None:
        sw = replace(sw, tta=None if tta == "none" else tta)
    sw = replace(sw, device=dev)
    if intensity_range is not None:
        lo, hi = (float(v) for v in intensity_range)
        if not hi > lo:
            raise InferenceError(f"intensity_range must satisfy lo < hi, got {intensity_range!r}")
        sw = replace(sw, intensity_range=(lo, hi))
    from neurons.train.calibration.resolve import apply_decoder, choose_decoder

    if calibration is None and use_calibration and checkpoint is not None:
        from neurons.train.calibration import read_calibration

        calibration = read_calibration(checkpoint)
    choice = choose_decoder(
        calibration if use_calibration else None,
        decoder,
        {
            "bandwidth": None if bandwidth is None else float(bandwidth),
            "min_size": None if min_size is None else int(min_size),
            **dict(decode_options or {}),
        },
    )
    dec = apply_decoder(settings.decode, choice)
    out_path, okey = split_key(output)
    out_key = okey or out_key
    with open_volume(input, key) as vol:
        vshape = tuple(vol.shape)
        planewise = False
        if len(vshape) == 3 and sw.ndim == 2:
            # 2-D model on a stack: windows one section thick, decoded section by section
            planewise = True
            sw = replace(sw, window=(1, *sw.window))
            dec = replace(dec, planewise=True)
        elif len(vshape) != sw.ndim:
            raise InferenceError(
                f"{input}: volume of shape {vshape} does not fit a {sw.ndim}-D model "
                f"(window {sw.window})"
            )
        if sw.intensity_range is None:
            sw = replace(sw, intensity_range=training_intensity_range(vol))
        bs = block_size if block_size is not None else settings.block_size
        ov = overlap if overlap is not None else settings.overlap
        if planewise:
            bs_t = (bs,) * 3 if isinstance(bs, int) else tuple(bs)
            ov_t = (ov,) * 3 if isinstance(ov, int) else tuple(ov)
            bs = (bs_t[0] if len(bs_t) == 3 else 16, *bs_t[-2:])
            ov = (0, *ov_t[-2:])
        remote = not isinstance(scheduler, str) or scheduler == "processes" or "://" in scheduler
        if predictor_model is None and remote:  # each worker process loads the checkpoint once
            predictor = Predictor(checkpoint=str(checkpoint), device=dev, planewise=planewise)
        else:
            predictor = Predictor(model=model, planewise=planewise)
        result = segment_blockwise(
            predictor,
            vol,
            sw,
            dec,
            block_size=bs,
            overlap=ov,
            output=out_path,
            out_key=out_key,
            semantic_key=semantic_key,
            scheduler=scheduler,
            num_workers=workers,
            match_threshold=match_threshold,
            voxel_size=vol.voxel_size,
            compression=compression,
            progress=progress,
        )
        run = InferenceRun(
            result=result,
            output=out_path,
            out_key=out_key,
            decoder_choice=choice,
            settings=InferenceSettings(
                window=sw,
                decode=dec,
                block_size=tuple(np.atleast_1d(bs)),
                overlap=tuple(np.atleast_1d(ov)),
            ),
        )
        gt_vol = open_volume(gt, gt_key) if gt is not None else None
        try:
            with open_volume(out_path, out_key) as seg:
                sem = open_volume(out_path, semantic_key) if semantic_key else None
                try:
                    from neurons.train.calibration.resolve import warn_if_empty

                    warn_if_empty(result.num_objects, sem, decoder=dec.method, where=str(out_path))
                    if previews:
                        run.previews = write_previews(out_path, vol, seg, sem, gt_vol)
                    if gt_vol is not None:
                        run.scores = evaluate_segmentation(gt_vol, seg)
                        run.scores_path = preview_paths(out_path)["scores"]
                        _atomic_text(run.scores_path, _report_json(run.scores))
                finally:
                    if sem is not None:
                        sem.close()
        finally:
            if gt_vol is not None:
                gt_vol.close()
    return run


def _report_json(report: Any) -> str:
    if hasattr(report, "to_json"):
        text = report.to_json()
        return text if isinstance(text, str) else json.dumps(text, indent=2)
    return json.dumps(dict(report), indent=2, default=float)
