"""The Lightning module: model + VistaLoss, automatic and proofread training, validation scores."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from neurons.train.builders import build_loss_from_cfg, build_model_from_cfg, dataset_voxel_size
from neurons.train.checkpointing import capture_rng_state, restore_rng_state
from neurons.train.config import to_plain_dict, validate_config
from neurons.train.errors import ConfigError
from neurons.train.evaluation import (
    OBJECT_CLASSES,
    decode_components,
    decode_embedding,
    score_patch,
)
from neurons.train.prompts import prompted_targets, sample_point_prompts

__all__ = ["METRIC_KEYS", "Vista2DModule", "Vista3DModule", "VistaModule", "WarmupCosine"]

#: validation scores logged as ``val/<key>`` (means over validation patches)
METRIC_KEYS = ("ari", "ami", "voi_split", "voi_merge", "voi", "arand", "dice", "iou", "sem_acc")
IGNORE_INDEX = 255
#: per-voxel targets a batch may carry precomputed (see neurons.train.builders.GeometryTargets)
PRECOMPUTED_TARGETS = ("direction", "structure", "skeleton", "nearest", "edt_norm", "edt_grad",
                       "instance_weights")
#: validation mean-shift bandwidth (voxels) of skeleton votes (loss.instance=skeleton)
SKELETON_BANDWIDTH = 2.0


def skeleton_votes(offsets: torch.Tensor) -> torch.Tensor:
    """``(S, *spatial)`` offsets -> voxel coordinate + offset (the voted skeleton point)."""
    spatial = offsets.shape[1:]
    axes = [torch.arange(n, device=offsets.device, dtype=offsets.dtype) for n in spatial]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), 0) + offsets


class WarmupCosine:
    """LR factor: linear warmup from ``start_factor`` to 1, then cosine to ``min_factor``.

    Parameters
    ----------
    warmup_steps : int
    total_steps : int or None
        Optimizer steps of the whole run; ``None`` -> constant after warmup.
    start_factor, min_factor : float
    cosine : bool
        ``False`` keeps the factor at 1 after warmup (``scheduler.name=constant``).

    Examples
    --------
    >>> f = WarmupCosine(10, 110, 0.0, 0.0)
    >>> f(0), f(10), round(f(60), 3), f(110)
    (0.0, 1.0, 0.5, 0.0)
    """

    def __init__(
        self,
        warmup_steps: int,
        total_steps: int | None,
        start_factor: float,
        min_factor: float,
        cosine: bool = True,
    ) -> None:
        self.warmup_steps = max(int(warmup_steps), 0)
        self.total_steps = total_steps
        self.start_factor = float(start_factor)
        self.min_factor = float(min_factor)
        self.cosine = cosine

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        if not self.cosine or self.total_steps is None:
            return 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


class VistaModule(pl.LightningModule):
    """Train a Vista network (2D or 3D, from the config) with :class:`neurons.losses.VistaLoss`.

    Parameters
    ----------
    cfg : mapping
        The full training config (see ``configs/default.yaml``); stored as a plain dict in the
        checkpoint's hyper-parameters under ``"cfg"``.

    Notes
    -----
    * ``training.modes``: ``automatic`` (no prompts, full targets) and/or ``proofread``
      (point prompts sampled from ground truth; supervision = the prompted object only). With
      both, the step loss is their mean. Every loss term is logged as
      ``train/<mode>/<term>``; the total as ``train/loss``.
    * Validation runs on the datamodule's held-out patches, logs ``val/<term>`` and the
      scores in :data:`METRIC_KEYS` (decoder from ``training.validation``), reduced over all
      ranks with sums and counts (no rank ever waits for a collective the others skip).

    Examples
    --------
    >>> from neurons.train import compose_config
    >>> module = VistaModule(compose_config("synthetic"))  # doctest: +SKIP
    """

    expected_spatial_dims: int | None = None

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        plain = to_plain_dict(validate_config(cfg))
        if plain["data"].get("voxel_size") is None:  # the dataset's own, stored with the run
            vs = dataset_voxel_size(plain)
            plain["data"]["voxel_size"] = None if vs is None else list(vs)
        self.save_hyperparameters({"cfg": plain})
        self.cfg = plain
        self.model = build_model_from_cfg(plain)
        # the affinity loss supervises exactly the offsets the model's affinity head predicts
        self.loss = build_loss_from_cfg(plain, getattr(self.model, "affinity_offsets", None))
        self.spatial_dims = int(
            getattr(self.model, "spatial_dims", len(plain["data"]["patch_size"]))
        )
        if self.expected_spatial_dims and self.spatial_dims != self.expected_spatial_dims:
            raise ConfigError(
                f"{type(self).__name__} needs a {self.expected_spatial_dims}D model, but "
                f"model.name={plain['model']['name']!r} is {self.spatial_dims}D"
            )
        tr = plain["training"]
        self.modes = list(tr["modes"])
        self.ignore_index = int(plain["loss"].get("ignore_index", IGNORE_INDEX))
        self._val_sums: dict[str, float] = {}
        self._val_counts: dict[str, int] = {}
        self.vis_batch: dict[str, Any] | None = None
        self._pending_rng: Any = None

    # ------------------------------------------------------------------------------------------
    def forward(
        self,
        image: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the network (see :func:`neurons.models.build_model` for the output dict)."""
        if point_coords is None:
            return self.model(image)
        return self.model(image, point_coords=point_coords, point_labels=point_labels)

    def _targets(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        if image.ndim == self.spatial_dims + 1:
            image = image.unsqueeze(1)
        if image.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"batch['image'] has shape {tuple(image.shape)}; expected (B, C, "
                f"{'D, ' if self.spatial_dims == 3 else ''}H, W)"
            )
        targets = {
            "image": image,
            "semantic": batch["semantic"].long(),
            "instance": batch["instance"].long(),
        }
        if "semantic_ids" in batch and batch["semantic_ids"] is not None:
            targets["semantic_ids"] = batch["semantic_ids"].long()
        for key in PRECOMPUTED_TARGETS:  # geometry targets made by the data pipeline
            if batch.get(key) is not None:
                targets[key] = batch[key]
        for key in ("semantic", "instance"):
            if targets[key].shape[1:] != image.shape[2:]:
                raise ValueError(
                    f"batch[{key!r}] has shape {tuple(targets[key].shape)}; expected "
                    f"(B, *{tuple(image.shape[2:])}) to match batch['image'] {tuple(image.shape)}"
                )
        return targets

    # ------------------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        targets = self._targets(batch)
        image = targets["image"]
        bsz = image.shape[0]
        tr = self.cfg["training"]
        total = image.new_zeros(())
        for mode in self.modes:
            if mode == "automatic":
                out = self.model(image)
                tgt = targets
            else:
                with torch.no_grad():
                    prompts = sample_point_prompts(
                        targets["semantic"],
                        targets["instance"],
                        tr["num_pos_points"],
                        tr["num_neg_points"],
                        tr["point_sample_mode"],
                        ignore_index=self.ignore_index,
                    )
                out = self.model(
                    image, point_coords=prompts.point_coords, point_labels=prompts.point_labels
                )
                tgt = prompted_targets(targets, prompts, ignore_index=self.ignore_index)
            terms = self.loss(out, tgt)
            for key, value in terms.items():
                self.log(f"train/{mode}/{key}", value.detach().float(), batch_size=bsz)
            total = total + terms["loss"]
        total = total / len(self.modes)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=bsz)
        return total

    # ------------------------------------------------------------------------------------------
    def _decode(
        self, out: Mapping[str, torch.Tensor], i: int, sem_pred: torch.Tensor
    ) -> np.ndarray:
        v = self.cfg["training"]["validation"]
        if v["decoder"] == "embedding":
            fg = torch.isin(sem_pred, torch.tensor(OBJECT_CLASSES, device=sem_pred.device))
            emb = out["instance"][i]
            bandwidth = v["bandwidth"] or float(self.cfg["loss"].get("delta_v", 0.5))
            if self.cfg["loss"].get("instance") == "skeleton":
                # offsets -> the skeleton point each voxel votes for (voxel units); a skeleton
                # is a chain of points about one voxel apart, so a few voxels join it
                emb = skeleton_votes(emb)
                bandwidth = v["bandwidth"] or SKELETON_BANDWIDTH
            return decode_embedding(
                emb,
                fg,
                bandwidth=bandwidth,
                max_instances=v["max_instances"],
                min_size=v["min_size"],
            )
        return decode_components(sem_pred.cpu().numpy(), min_size=v["min_size"])

    def _eval_step(self, batch: Mapping[str, Any], batch_idx: int, stage: str) -> torch.Tensor:
        targets = self._targets(batch)
        image = targets["image"]
        bsz = image.shape[0]
        out = self.model(image)
        terms = self.loss(out, targets)
        for key, value in terms.items():  # reduced over ranks at epoch end (see _log_scores)
            self._accumulate(key, float(value.detach().float()) * bsz, bsz)
        v = self.cfg["training"]["validation"]
        want_vis = stage == "val" and batch_idx == 0 and self.global_rank == 0
        if not v["metrics"] and not want_vis:
            return terms["loss"]
        sem_pred = out["semantic"].argmax(dim=1)
        preds = []
        gt_sem = targets["semantic"].cpu().numpy()
        gt_ins = targets["instance"].cpu().numpy()
        ids = targets.get("semantic_ids")
        for i in range(bsz):  # per validation patch (a handful)
            pred = self._decode(out, i, sem_pred[i])
            preds.append(pred)
            if not v["metrics"]:
                continue
            annotated = None
            if ids is not None:
                annotated = [c for c in OBJECT_CLASSES if c < ids.shape[1] and int(ids[i, c]) > 0]
            scores = score_patch(
                gt_ins[i],
                pred,
                gt_sem[i],
                sem_pred[i].cpu().numpy(),
                ignore_index=self.ignore_index,
                annotated=annotated,
            )
            for key, value in scores.items():
                if math.isfinite(value):
                    self._accumulate(key, value, 1)
        if want_vis:
            n = min(bsz, 4)
            self.vis_batch = {
                "image": image[:n].detach().cpu(),
                "semantic": out["semantic"][:n].detach().float().cpu(),
                "embedding": out["instance"][:n].detach().float().cpu(),
                "gt_instance": gt_ins[:n],
                "gt_semantic": gt_sem[:n],
                "pred_instance": preds[:n],
            }
        return terms["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_start(self) -> None:
        self._val_sums, self._val_counts = {}, {}

    on_test_epoch_start = on_validation_epoch_start

    def _accumulate(self, key: str, total: float, count: int) -> None:
        self._val_sums[key] = self._val_sums.get(key, 0.0) + total
        self._val_counts[key] = self._val_counts.get(key, 0) + count

    def _log_scores(self, stage: str) -> None:
        """Log means of the accumulated loss terms and scores, reduced over every rank.

        All ranks call this; the key set is first agreed on (union over ranks), so a rank whose
        patches lacked a score (e.g. no ground-truth object) never desynchronises a collective.
        """
        keys = sorted(self._val_sums)
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, keys)
            keys = sorted({k for ks in gathered for k in ks})
        if not keys:
            return
        stats = torch.tensor(
            [
                [self._val_sums.get(k, 0.0) for k in keys],
                [float(self._val_counts.get(k, 0)) for k in keys],
            ],
            dtype=torch.float64,
            device=self.device,
        )
        if world > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        bar = {"loss", "ari", "voi"}
        for k, total, count in zip(keys, stats[0].tolist(), stats[1].tolist(), strict=True):
            if count > 0:
                # identical on every rank after the reduction; sync_dist only keeps Lightning quiet
                self.log(f"{stage}/{k}", total / count, prog_bar=k in bar, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    # ------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        o, s = self.cfg["optimizer"], self.cfg["scheduler"]
        params = [p for p in self.parameters() if p.requires_grad]
        if o["name"] in ("adamw", "adam"):
            cls = torch.optim.AdamW if o["name"] == "adamw" else torch.optim.Adam
            opt = cls(
                params,
                lr=o["lr"],
                weight_decay=o["weight_decay"],
                betas=tuple(o["betas"]),
                eps=o["eps"],
            )
        else:  # sgd: betas[0] is the momentum
            opt = torch.optim.SGD(
                params, lr=o["lr"], weight_decay=o["weight_decay"], momentum=o["betas"][0]
            )
        total: int | None = None
        if self.trainer is not None:
            est = self.trainer.estimated_stepping_batches
            total = int(est) if math.isfinite(est) else None
        factor = WarmupCosine(
            s["warmup_steps"],
            total,
            s["warmup_start_factor"],
            min(s["min_lr"] / o["lr"], 1.0),
            cosine=s["name"] == "cosine",
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store every rank's RNG state (gathered; all ranks run this hook)."""
        state = capture_rng_state()
        states = [state]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if world > 1:
                states = [None] * world
                torch.distributed.all_gather_object(states, state)
        checkpoint["neurons_rng_states"] = states

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_rng = checkpoint.get("neurons_rng_states")

    def on_train_start(self) -> None:
        """Restore the RNG state of a resumed run just before the first training batch."""
        if self._pending_rng:
            states = self._pending_rng
            rank = self.global_rank if self.global_rank < len(states) else 0
            restore_rng_state(states[rank])
            self._pending_rng = None


class Vista3DModule(VistaModule):
    """:class:`VistaModule` that insists on a 3D model (name kept for predecessor users)."""

    expected_spatial_dims = 3


class Vista2DModule(VistaModule):
    """:class:`VistaModule` that insists on a 2D model (name kept for predecessor users)."""

    expected_spatial_dims = 2
