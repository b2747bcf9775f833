"""Assemble a Lightning ``Trainer`` from a config and run training."""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig

from neurons.train.builders import build_datamodule_from_cfg
from neurons.train.callbacks import ImageLogger
from neurons.train.checkpointing import LAST_NAME, AtomicCheckpointIO, resolve_ckpt_path
from neurons.train.config import to_plain_dict, validate_config
from neurons.train.module import Vista2DModule, Vista3DModule, VistaModule

__all__ = ["TrainResult", "build_callbacks", "build_loggers", "build_trainer", "run_training"]

log = logging.getLogger("neurons.train")


@dataclass
class TrainResult:
    """What :func:`run_training` returns.

    Attributes
    ----------
    trainer, module, datamodule
        The Lightning objects after ``fit``.
    output_dir : Path
    checkpoint_dir : Path
    best_checkpoint : str or None
        Best top-k checkpoint by ``checkpoint.monitor``.
    last_checkpoint : str or None
        ``<checkpoint_dir>/last.ckpt`` when written.
    resumed_from : str or None
        Checkpoint the run resumed from.
    start_step : int
        ``global_step`` when training started (after restoring a checkpoint).
    calibration : CalibrationResult or None
        Decoder calibrated on the validation split at the end of the run (stored in
        ``last.ckpt``; see ``calibration.*`` in the config).
    """

    trainer: pl.Trainer
    module: VistaModule
    datamodule: Any
    output_dir: Path
    checkpoint_dir: Path
    best_checkpoint: str | None
    last_checkpoint: str | None
    resumed_from: str | None
    start_step: int
    calibration: Any = None


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def build_loggers(cfg: Mapping[str, Any], output_dir: Path) -> list[Logger]:
    """Loggers named in ``logging.loggers`` (``tensorboard``, ``wandb``, ``csv``).

    W&B runs ``online`` only when the user is logged in (``WANDB_API_KEY`` or ``~/.netrc``),
    otherwise ``offline``; ``logging.wandb.mode`` or the ``WANDB_MODE`` environment variable
    override that.
    """
    loggers: list[Logger] = []
    lg = cfg["logging"]
    for name in lg["loggers"]:
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir=str(output_dir), name="tensorboard"))
        elif name == "csv":
            loggers.append(CSVLogger(save_dir=str(output_dir), name="csv"))
        elif name == "wandb":
            w = lg["wandb"]
            kwargs: dict[str, Any] = {}
            if not os.environ.get("WANDB_MODE"):
                kwargs["mode"] = w["mode"] or ("online" if _wandb_logged_in() else "offline")
            loggers.append(
                WandbLogger(
                    project=cfg["project_name"],
                    name=cfg["experiment_name"],
                    save_dir=str(output_dir),
                    entity=w["entity"],
                    tags=list(w["tags"]) or None,
                    config=to_plain_dict(cfg),
                    **kwargs,
                )
            )
    return loggers


def build_callbacks(cfg: Mapping[str, Any], checkpoint_dir: Path) -> list[Callback]:
    """Checkpointing, LR monitor, image panels, progress bar and model summary from ``cfg``."""
    cbs: list[Callback] = []
    ck = cfg["checkpoint"]
    # fast_dev_run never writes checkpoints (Lightning's on_train_end would still save last)
    if ck["enabled"] and not cfg["training"]["fast_dev_run"]:
        if ck["save_top_k"] != 0 and ck["monitor"]:
            cbs.append(
                ModelCheckpoint(
                    dirpath=str(checkpoint_dir),
                    filename=ck["filename"],
                    monitor=ck["monitor"],
                    mode=ck["mode"],
                    save_top_k=ck["save_top_k"],
                    save_last=False,
                    auto_insert_metric_name=False,
                )
            )
        if ck["save_last"]:
            interval: dict[str, Any] = {}
            if ck["train_time_interval_s"]:
                interval["train_time_interval"] = timedelta(seconds=ck["train_time_interval_s"])
            elif ck["every_n_train_steps"]:
                interval["every_n_train_steps"] = ck["every_n_train_steps"]
            last = ModelCheckpoint(
                dirpath=str(checkpoint_dir),
                filename="interval",
                save_top_k=0,
                save_last=True,
                enable_version_counter=False,
                **interval,
            )
            last.CHECKPOINT_NAME_LAST = Path(LAST_NAME).stem
            cbs.append(last)
    lg = cfg["logging"]
    if lg["lr_monitor"] and lg["loggers"]:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    if lg["images"]["enabled"] and lg["loggers"]:
        cbs.append(ImageLogger(lg["images"]["every_n_epochs"], lg["images"]["max_images"]))
    if lg["progress_bar"] == "rich":
        cbs.append(RichProgressBar())
    elif lg["progress_bar"] == "tqdm":
        cbs.append(TQDMProgressBar())
    if lg["model_summary"]:
        cbs.append(ModelSummary(max_depth=2))
    return cbs


def _precision(value: str) -> str:
    if value != "auto":
        return value
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _strategy(tr: Mapping[str, Any]) -> Any:
    name = tr["strategy"]
    if name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        from lightning.pytorch.strategies import DDPStrategy

        find_unused = tr["find_unused_parameters"]
        if find_unused is None:
            # automatic-only training never touches the prompt encoder, and a head whose loss
            # weight is 0 gets no gradient: let DDP look for unused parameters (cheap here)
            find_unused = True
        start = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}
        return DDPStrategy(start_method=start[name], find_unused_parameters=find_unused)
    return name


def build_trainer(
    cfg: Mapping[str, Any] | DictConfig,
    *,
    extra_callbacks: Sequence[Callback] = (),
    loggers: Sequence[Logger] | None = None,
) -> tuple[pl.Trainer, dict[str, Any]]:
    """A ``Trainer`` configured from ``cfg["training"]``, ``logging`` and ``checkpoint``.

    Returns
    -------
    trainer : lightning.pytorch.Trainer
    info : dict
        ``output_dir``, ``checkpoint_dir`` (Paths) and ``ckpt_path`` (resolved resume file or
        None).
    """
    c = to_plain_dict(validate_config(cfg))
    tr = c["training"]
    output_dir = Path(tr["output_dir"])
    checkpoint_dir = Path(c["checkpoint"]["dirpath"] or output_dir / "checkpoints")
    callbacks = build_callbacks(c, checkpoint_dir) + list(extra_callbacks)
    if loggers is None:
        loggers = build_loggers(c, output_dir)
    trainer = pl.Trainer(
        accelerator=tr["accelerator"],
        devices=tr["devices"],
        num_nodes=tr["num_nodes"],
        strategy=_strategy(tr),
        sync_batchnorm=tr["sync_batchnorm"],
        precision=_precision(tr["precision"]),
        max_epochs=tr["max_epochs"],
        max_steps=tr["max_steps"],
        max_time=tr["max_time"],
        limit_train_batches=tr["limit_train_batches"],
        limit_val_batches=tr["limit_val_batches"],
        gradient_clip_val=tr["gradient_clip_val"],
        accumulate_grad_batches=tr["accumulate_grad_batches"],
        val_check_interval=tr["val_check_interval"],
        check_val_every_n_epoch=tr["check_val_every_n_epoch"],
        num_sanity_val_steps=tr["num_sanity_val_steps"],
        log_every_n_steps=tr["log_every_n_steps"],
        deterministic=tr["deterministic"],
        benchmark=tr["benchmark"],
        fast_dev_run=tr["fast_dev_run"],
        enable_progress_bar=c["logging"]["progress_bar"] != "none",
        enable_model_summary=c["logging"]["model_summary"],
        enable_checkpointing=c["checkpoint"]["enabled"],
        logger=list(loggers) if loggers else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(output_dir),
    )
    info = {
        "output_dir": output_dir,
        "checkpoint_dir": checkpoint_dir,
        "ckpt_path": resolve_ckpt_path(tr["ckpt_path"], checkpoint_dir),
    }
    return trainer, info


def _module_class(cfg: Mapping[str, Any]) -> type[VistaModule]:
    name = cfg["model"]["name"]
    if name == "vista3d":
        return Vista3DModule
    if name == "vista2d":
        return Vista2DModule
    return VistaModule


def run_training(
    cfg: Mapping[str, Any] | DictConfig,
    *,
    extra_callbacks: Sequence[Callback] = (),
    loggers: Sequence[Logger] | None = None,
) -> TrainResult:
    """Train from a config: seed, datamodule, module, trainer, ``fit`` (resuming if asked).

    Parameters
    ----------
    cfg : mapping or DictConfig
        A full config (e.g. from :func:`neurons.train.compose_config` or Hydra).
    extra_callbacks : sequence of Callback
        Added to the configured ones (e.g. :class:`~neurons.train.callbacks.ThroughputMeter`).
    loggers : sequence of Logger, optional
        Replace the configured loggers.

    Returns
    -------
    TrainResult

    Examples
    --------
    >>> from neurons.train import compose_config, run_training
    >>> cfg = compose_config("synthetic", ["training.fast_dev_run=true"])
    >>> result = run_training(cfg)  # doctest: +SKIP
    """
    vcfg = validate_config(cfg)
    c = to_plain_dict(vcfg)
    tr = c["training"]
    if tr["matmul_precision"]:
        torch.set_float32_matmul_precision(tr["matmul_precision"])
    if tr["cpu_threads"]:
        torch.set_num_threads(int(tr["cpu_threads"]))
    pl.seed_everything(c["seed"], workers=True, verbose=False)
    datamodule = build_datamodule_from_cfg(c, setup_stage="fit")
    module = _module_class(c)(c)
    trainer, info = build_trainer(c, extra_callbacks=extra_callbacks, loggers=loggers)
    ckpt_path = info["ckpt_path"]
    if tr["ckpt_path"] == "last" and ckpt_path is None:
        log.warning(
            "training.ckpt_path=last but %s has no %s: starting fresh",
            info["checkpoint_dir"],
            LAST_NAME,
        )
    start_step = 0
    if ckpt_path is not None:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
        start_step = int(ck.get("global_step", 0))
        del ck
        log.warning("resuming from %s at global step %d", ckpt_path, start_step)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    best = None
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor and cb.best_model_path:
            best = cb.best_model_path
    last = info["checkpoint_dir"] / LAST_NAME
    calibration = _calibrate_after_training(c, trainer, module, datamodule, last)
    return TrainResult(
        trainer=trainer,
        module=module,
        datamodule=datamodule,
        output_dir=info["output_dir"],
        checkpoint_dir=info["checkpoint_dir"],
        best_checkpoint=best,
        last_checkpoint=str(last.resolve()) if last.is_file() else None,
        resumed_from=ckpt_path,
        start_step=start_step,
        calibration=calibration,
    )


def _calibrate_after_training(
    c: Mapping[str, Any], trainer: pl.Trainer, module: VistaModule, datamodule: Any, last: Path
) -> Any:
    """Calibrate decoding on the validation split and store it in ``last.ckpt`` (rank 0).

    Skipped (returns None) when ``calibration.enabled`` is false, for ``fast_dev_run``, when no
    ``last.ckpt`` was written or the data has no validation split.
    """
    cal = c.get("calibration") or {}
    if not cal.get("enabled") or c["training"]["fast_dev_run"] or not last.is_file():
        return None
    if not trainer.is_global_zero:
        return None
    from neurons.train.calibration import CalibrationError, calibrate, embed_calibration

    try:
        result = calibrate(
            module,
            c,
            datamodule=datamodule,
            decoders=cal.get("decoders"),
            metric=cal.get("metric", "cremi"),
            budget=cal.get("budget"),
            time_limit=cal.get("time_limit_s"),
            max_voxels=int(cal.get("max_voxels", 2_000_000)),
            device=str(module.device),
            write=None,
        )
    except CalibrationError as exc:
        log.warning("calibration skipped: %s", exc)
        return None
    result.global_step = int(trainer.global_step)
    embed_calibration(last, result)
    log.warning("calibrated decoder (stored in %s): %s", last, result.summary())
    return result
