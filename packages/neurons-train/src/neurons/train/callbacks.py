"""Callbacks: image panels for TensorBoard / W&B, and a training-throughput meter."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from neurons.train.visualize import make_panels

__all__ = ["ImageLogger", "ThroughputMeter"]


class ImageLogger(pl.Callback):
    """Log raw / semantic / instance / embedding-PCA panels of the first validation batch.

    The panels reuse the outputs the module computed in its (eval-mode, held-out) validation
    step, so no extra forward runs, BatchNorm statistics are untouched and no global RNG is
    reseeded. Only global rank 0 renders and writes; no rank waits for it.

    Parameters
    ----------
    every_n_epochs : int
        Log on epochs divisible by this.
    max_images : int
        Samples of the batch to show.
    """

    def __init__(self, every_n_epochs: int = 1, max_images: int = 4) -> None:
        self.every_n_epochs = max(int(every_n_epochs), 1)
        self.max_images = int(max_images)

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        vis = getattr(pl_module, "vis_batch", None)
        pl_module.vis_batch = None
        if vis is None or trainer.sanity_checking:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        step = trainer.global_step
        n = min(self.max_images, vis["image"].shape[0])
        for i in range(n):
            panels = make_panels(
                vis["image"][i],
                vis["semantic"][i],
                vis["embedding"][i],
                vis["gt_instance"][i],
                vis["pred_instance"][i],
                vis["gt_semantic"][i],
            )
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    for name, img in panels.items():
                        logger.experiment.add_image(
                            f"val_images/{name}/{i}", img, global_step=step, dataformats="HWC"
                        )
                elif isinstance(logger, WandbLogger):
                    names = sorted(panels)
                    logger.log_image(
                        key=f"val_images/{i}",
                        images=[panels[k] for k in names],
                        caption=names,
                        step=step,
                    )


class ThroughputMeter(pl.Callback):
    """Measure optimizer steps/s and samples/s (data loading included) after ``warmup`` steps.

    Time runs from the end of the ``warmup``-th training batch to the end of the last one, so
    data loading, forward, backward and the optimizer step are all counted.

    Attributes
    ----------
    steps, samples : int
        Counted after warmup.
    seconds : float
        Wall time of the counted steps.
    """

    def __init__(self, warmup: int = 2) -> None:
        self.warmup = warmup
        self.steps = 0
        self.samples = 0
        self.seconds = 0.0
        self._seen = 0
        self._t0: float | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._seen += 1
        if self._seen == self.warmup or (self.warmup <= 0 and self._t0 is None):
            self._t0 = now
            return
        if self._t0 is None:
            return
        self.steps += 1
        self.samples += int(batch["image"].shape[0])
        self.seconds = now - self._t0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds else float("nan")

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else float("nan")
