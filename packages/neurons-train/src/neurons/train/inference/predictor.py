"""A picklable prediction callable: the model itself, or a checkpoint each worker loads once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import StitchError

__all__ = ["Predictor"]

_PREDICTOR_CACHE: dict[tuple[str, str], Callable] = {}


@dataclass
class Predictor:
    """A picklable prediction callable: a model object or a checkpoint path (loaded lazily,
    once per worker process). ``planewise=True`` runs a 2-D model on ``(B, C, 1, H, W)``
    windows of a 3-D volume (section by section).

    Examples
    --------
    >>> import torch
    >>> p = Predictor(model=torch.nn.Identity())
    >>> p(torch.zeros(1, 1, 4, 4)).shape
    torch.Size([1, 1, 4, 4])
    """

    model: Any = None
    checkpoint: str | None = None
    device: str = "cpu"
    planewise: bool = False

    def __post_init__(self) -> None:
        if (self.model is None) == (self.checkpoint is None):
            raise StitchError("Predictor needs exactly one of model= or checkpoint=")

    def _get(self) -> Callable:
        if self.model is not None:
            return self.model
        key = (str(self.checkpoint), str(self.device))
        if key not in _PREDICTOR_CACHE:
            from .checkpoint import load_model

            _PREDICTOR_CACHE[key] = load_model(self.checkpoint, self.device)[0]
        return _PREDICTOR_CACHE[key]

    def __call__(self, x):
        import torch

        model = self._get()
        if isinstance(model, torch.nn.Module):
            dev = next(iter(model.parameters()), torch.empty(0)).device
            x = x.to(dev)
        if not self.planewise:
            return model(x)
        if x.ndim != 5 or x.shape[2] != 1:
            raise StitchError(
                f"planewise prediction needs (B, C, 1, H, W) windows, got {tuple(x.shape)}"
            )
        out = model(x[:, :, 0])
        if isinstance(out, torch.Tensor):
            return out[:, :, None]
        return {k: v[:, :, None] for k, v in out.items()}

    def __getstate__(self) -> dict:
        return {
            "model": self.model,
            "checkpoint": self.checkpoint,
            "device": self.device,
            "planewise": self.planewise,
        }

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
