"""Sliding-window prediction with Gaussian blending on a global window grid.

The window grid is a property of the *whole* volume (starts ``0, s, 2s, …`` plus a last window
flush with the end), so every voxel is covered, tails included, and a sub-region predicted on its
own (:func:`predict_region`) gets exactly the windows — and therefore the values — that the
whole-volume prediction gives it. That is what lets block-wise inference equal whole-volume
inference.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import InferenceError

PredictFn = Callable[[torch.Tensor], Mapping[str, torch.Tensor] | torch.Tensor]

__all__ = [
    "SlidingWindow",
    "gaussian_weight",
    "normalize_intensity",
    "predict_region",
    "predict_volume",
    "training_intensity_range",
    "window_starts",
]


def _as_tuple(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int | np.integer):
        out = (int(value),) * ndim
    else:
        out = tuple(int(v) for v in value)
    if len(out) != ndim:
        raise InferenceError(
            f"{name} must have {ndim} entries (one per spatial axis), got {value!r}"
        )
    return out


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Start positions of the windows along one axis, covering ``[0, length)`` completely.

    Parameters
    ----------
    length : int
        Axis length of the whole volume.
    window : int
        Window size; windows longer than the axis are shortened to it.
    stride : int
        Distance between consecutive starts (> 0).

    Returns
    -------
    numpy.ndarray
        Sorted unique int64 starts; the last window ends exactly at ``length``.

    Examples
    --------
    >>> window_starts(10, 4, 3).tolist()
    [0, 3, 6]
    """
    if length <= 0 or window <= 0 or stride <= 0:
        raise InferenceError(
            f"window_starts needs positive length/window/stride, got {length}, {window}, {stride}"
        )
    window = min(window, length)
    n = math.ceil((length - window) / stride) + 1
    return np.unique(np.minimum(np.arange(n, dtype=np.int64) * stride, length - window))


def gaussian_weight(
    window: Sequence[int], sigma_scale: float = 0.125, min_weight: float = 1e-3
) -> np.ndarray:
    """Separable Gaussian importance map for blending, peak 1, floored at ``min_weight``.

    ``sigma`` is ``sigma_scale`` times the window size *per axis* (not the smallest axis), and
    the floor keeps window corners from vanishing, so a voxel covered by only one window corner
    keeps its value instead of being divided by ~0.

    Examples
    --------
    >>> gaussian_weight((4, 4)).shape
    (4, 4)
    """
    w = np.ones((), dtype=np.float64)
    for size in window:
        centre = (size - 1) / 2.0
        sigma = max(sigma_scale * size, 1e-6)
        x = np.arange(size, dtype=np.float64)
        g = np.exp(-((x - centre) ** 2) / (2.0 * sigma**2))
        w = np.multiply.outer(w, g / g.max())
    return np.maximum(w, min_weight).astype(np.float32)


def training_intensity_range(source: Any) -> tuple[float, float]:
    """The ``(lo, hi)`` range the *training* pipeline would scale ``source`` with.

    Training reads every volume through :class:`neurons.data.LabeledVolume`, which scales it by
    one range per volume, :func:`neurons.data.intensity_range` (uint8 -> ``(0, 255)``, bool ->
    ``(0, 1)``, floats already in [0, 1] -> ``(0, 1)``, anything else -> min/max of up to 16
    evenly strided z-sections), and clips to [0, 1]. This calls that same function, so
    inference normalises a volume the way training did.

    Parameters
    ----------
    source : array-like
        ``(Z, Y, X)`` or ``(Y, X)`` volume with ``shape``, ``dtype`` and numpy slicing
        (numpy array, ``neurons.io`` Volume, h5py/zarr dataset). Only the sampled sections are
        read.

    Returns
    -------
    tuple of float
        ``(lo, hi)`` with ``lo < hi``.

    Examples
    --------
    >>> training_intensity_range(np.array([[[100, 4100]]], np.uint16))
    (100.0, 4100.0)
    """
    from neurons.data import ArraySource, intensity_range

    try:  # ArraySource: the (Z, Y, X) view training reads 2-D and 3-D volumes through
        return intensity_range(ArraySource(source, description="input"))
    except (ValueError, TypeError, IndexError) as exc:
        raise InferenceError(
            f"cannot compute the training intensity range of a volume of shape "
            f"{tuple(getattr(source, 'shape', ()))}: {exc}"
        ) from exc


def normalize_intensity(
    array: np.ndarray, intensity_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Scale raw intensities to float32 in [0, 1] with a *fixed* (block-independent) range.

    With ``intensity_range=(lo, hi)`` it is the training pipeline's own
    :func:`neurons.data.scale_intensity` (float32, clipped to [0, 1]). :func:`run_inference` passes the range of
    :func:`training_intensity_range` (or ``inference.intensity_range``), so inference sees the
    values training saw. Without a range, integer arrays are divided by their dtype's range
    (uint8 -> /255) and floats are used as they are (no clipping). A per-block min-max would
    make blocks disagree, so it is deliberately not offered.

    Examples
    --------
    >>> float(normalize_intensity(np.array([0, 255], np.uint8)).max())
    1.0
    >>> normalize_intensity(np.array([50, 100, 300], np.uint16), (100, 200)).tolist()
    [0.0, 0.0, 1.0]
    """
    if intensity_range is not None:
        lo, hi = (float(v) for v in intensity_range)
        if not hi > lo:
            raise InferenceError(f"intensity range must satisfy lo < hi, got ({lo}, {hi})")
        from neurons.data import scale_intensity

        return scale_intensity(array, (lo, hi))
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        lo, hi = float(min(info.min, 0)), float(info.max)
    elif array.dtype == np.bool_:
        lo, hi = 0.0, 1.0
    else:
        return np.asarray(array, dtype=np.float32)
    out = np.asarray(array, dtype=np.float32)
    return (out - np.float32(lo)) / np.float32(hi - lo)


def _flip_geometry(t: torch.Tensor, dims: tuple[int, ...], sdims: int) -> torch.Tensor:
    """Undo the effect of flipping spatial axes ``dims`` on geometry channels.

    Channels: ``[0:S]`` direction vector (component d negates when axis d flips),
    ``[S:S+S*S]`` structure tensor (entry (i, j) negates when exactly one of i, j flips), rest
    (RGBA) unchanged.
    """
    sign = torch.ones(t.shape[1], dtype=t.dtype, device=t.device)
    flipped = torch.zeros(sdims, dtype=torch.bool)
    for d in dims:
        flipped[d - 2] = True
    s_vec = torch.where(flipped, -1.0, 1.0).to(t.dtype)
    if t.shape[1] >= sdims:
        sign[:sdims] = s_vec.to(t.device)
    if t.shape[1] >= sdims + sdims * sdims:
        sign[sdims : sdims + sdims * sdims] = torch.outer(s_vec, s_vec).reshape(-1).to(t.device)
    return t * sign.view(1, -1, *([1] * sdims))


@dataclass
class SlidingWindow:
    """Configuration of sliding-window prediction.

    Parameters
    ----------
    window : sequence of int
        Window (patch) size per spatial axis.
    overlap : float
        Fraction of the window shared by neighbouring windows, in [0, 1); stride =
        ``max(1, round(window * (1 - overlap)))``.
    batch_size : int
        Windows per forward pass.
    sigma_scale : float
        Gaussian sigma as a fraction of the window size (per axis).
    blend : str
        ``"gaussian"`` (importance map, default) or ``"constant"`` (plain average).
    tta : str or None
        ``"flips"`` averages predictions over all flips of the spatial axes (2^S passes);
        ``None`` disables test-time augmentation.
    activation : dict
        Activation applied to each output before blending: ``"softmax"`` / ``"sigmoid"`` /
        ``None``. Default: softmax for ``semantic``, sigmoid for ``affinity`` (probabilities
        that ``v`` and ``v + offset`` belong together), nothing for the rest.
    keys : sequence of str or None
        Outputs to keep (``None``: all the model returns).
    tta_keys : sequence of str
        Outputs averaged over flips; other outputs (e.g. instance embeddings, which need not be
        flip-equivariant) come from the un-flipped pass only.
    keep_channels : dict
        Keep only the first N channels of an output *after* its activation (default: the 5
        unified classes of ``semantic`` — a 16-channel softmax is computed over all 16, but
        only the unified ones are blended and stored, saving memory).
    device : str or torch.device
        Where windows are predicted and blended.
    intensity_range : (float, float) or None
        Fixed ``(lo, hi)`` used by :func:`normalize_intensity` for every block (then values are
        clipped to [0, 1], as in training). :func:`~.pipeline.run_inference` fills it with the
        training range of the input volume (:func:`training_intensity_range`) when unset.
    """

    window: Sequence[int]
    overlap: float = 0.25
    batch_size: int = 1
    sigma_scale: float = 0.125
    blend: str = "gaussian"
    tta: str | None = None
    activation: dict[str, str | None] = field(
        default_factory=lambda: {"semantic": "softmax", "affinity": "sigmoid"}
    )
    keys: Sequence[str] | None = ("semantic", "instance", "affinity")
    tta_keys: Sequence[str] = ("semantic", "geometry")
    keep_channels: dict[str, int] = field(default_factory=lambda: {"semantic": 5})
    device: str | torch.device = "cpu"
    intensity_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.overlap) < 1.0:
            raise InferenceError(f"window overlap must be in [0, 1), got {self.overlap}")
        if self.tta not in (None, "none", "flips"):
            raise InferenceError(f"tta must be None or 'flips', got {self.tta!r}")
        if self.blend not in ("gaussian", "constant"):
            raise InferenceError(f"blend must be 'gaussian' or 'constant', got {self.blend!r}")
        if self.tta == "none":
            self.tta = None
        if int(self.batch_size) < 1:
            raise InferenceError(f"batch_size must be >= 1, got {self.batch_size}")
        self.window = tuple(int(w) for w in self.window)
        if any(w < 1 for w in self.window):
            raise InferenceError(f"window sizes must be >= 1, got {self.window}")

    @property
    def ndim(self) -> int:
        return len(self.window)

    def effective_window(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Window shortened to the volume where the volume is smaller."""
        return tuple(min(w, int(s)) for w, s in zip(self.window, shape, strict=True))

    def stride(self, shape: Sequence[int]) -> tuple[int, ...]:
        win = self.effective_window(shape)
        return tuple(max(1, int(round(w * (1.0 - float(self.overlap))))) for w in win)

    def grid(self, shape: Sequence[int]) -> list[np.ndarray]:
        """Window starts per axis for a whole volume of ``shape``."""
        win = self.effective_window(shape)
        return [
            window_starts(int(s), w, st)
            for s, w, st in zip(shape, win, self.stride(shape), strict=True)
        ]

    def windows_for(
        self, shape: Sequence[int], region: Sequence[slice]
    ) -> tuple[list[np.ndarray], tuple[slice, ...]]:
        """Global-grid window starts that touch ``region`` and the region they read.

        Returns the per-axis starts and the read region (union of those windows).
        """
        win = self.effective_window(shape)
        starts, read = [], []
        for g, w, sl in zip(self.grid(shape), win, region, strict=True):
            sel = g[(g < sl.stop) & (g + w > sl.start)]
            starts.append(sel)
            read.append(slice(int(sel.min()), int(sel.max()) + w))
        return starts, tuple(read)


def _call(predict_fn: PredictFn, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = predict_fn(x)
    if isinstance(out, torch.Tensor):
        out = {"semantic": out}
    if not isinstance(out, Mapping):
        raise InferenceError(
            f"predict function must return a Tensor or a dict of Tensors, got {type(out).__name__}"
        )
    return dict(out)


def _activate(name: str, t: torch.Tensor, how: str | None) -> torch.Tensor:
    if how is None or how == "none":
        return t.float()
    if how == "softmax":
        return torch.softmax(t.float(), dim=1)
    if how == "sigmoid":
        return torch.sigmoid(t.float())
    raise InferenceError(f"unknown activation {how!r} for output {name!r} (softmax|sigmoid|None)")


def _predict_batch(
    predict_fn: PredictFn, x: torch.Tensor, sw: SlidingWindow
) -> dict[str, torch.Tensor]:
    """One batch of windows, activated, with flip TTA when configured."""
    sdims = x.ndim - 2
    out = {
        k: _activate(k, v, sw.activation.get(k))[:, : sw.keep_channels.get(k)]
        for k, v in _call(predict_fn, x).items()
        if sw.keys is None or k in sw.keys
    }
    if sw.tta != "flips":
        return out
    tta = [k for k in out if k in sw.tta_keys]
    if not tta:
        return out
    spatial = tuple(range(2, 2 + sdims))
    n = 1
    for r in range(1, sdims + 1):
        for dims in itertools.combinations(spatial, r):
            res = _call(predict_fn, torch.flip(x, dims))
            for k in tta:
                v = _activate(k, res[k], sw.activation.get(k))[:, : sw.keep_channels.get(k)]
                v = torch.flip(v, dims)
                if k == "geometry":
                    v = _flip_geometry(v, dims, sdims)
                out[k] = out[k] + v
            n += 1
    for k in tta:
        out[k] = out[k] / n
    return out


def _read(source: Any, region: Sequence[slice], channels: bool) -> np.ndarray:
    key = (slice(None), *region) if channels else tuple(region)
    return np.asarray(source[key])


def predict_region(
    predict_fn: PredictFn,
    source: Any,
    sw: SlidingWindow,
    region: Sequence[slice] | None = None,
    *,
    channels: bool = False,
) -> dict[str, np.ndarray]:
    """Predict ``region`` of ``source`` exactly as whole-volume prediction would.

    Only the windows of the global grid that touch ``region`` are evaluated and only their union
    is read from ``source``, so memory is bounded by the region plus one window per side.

    Parameters
    ----------
    predict_fn : callable
        Maps a float32 tensor ``(B, C, *window)`` to a dict of ``(B, K, *window)`` tensors (or
        one tensor, taken as ``"semantic"``), e.g. a model in eval mode.
    source : array-like
        ``(*spatial)`` or, with ``channels=True``, ``(C, *spatial)``; anything numpy-sliceable
        (numpy array, ``neurons.io`` Volume, h5py/zarr dataset). Only the needed part is read.
    sw : SlidingWindow
        Window configuration.
    region : sequence of slice, optional
        Spatial region to return (default: everything).
    channels : bool
        Whether ``source`` has a leading channel axis.

    Returns
    -------
    dict of str to numpy.ndarray
        float32 ``(K, *region_shape)`` per output (activated, blended).

    Examples
    --------
    >>> sw = SlidingWindow(window=(8, 8))
    >>> out = predict_region(lambda x: {"semantic": x}, np.zeros((20, 13), np.uint8), sw)
    >>> out["semantic"].shape
    (1, 20, 13)
    """
    shape = tuple(int(s) for s in (source.shape[1:] if channels else source.shape))
    if len(shape) != sw.ndim:
        raise InferenceError(
            f"volume of shape {tuple(source.shape)} has {len(shape)} spatial axes "
            f"({'channels first' if channels else 'no channel axis'}), but the window {sw.window} has {sw.ndim}"
        )
    if region is None:
        region = tuple(slice(0, s) for s in shape)
    region = tuple(slice(*sl.indices(s)[:2]) for sl, s in zip(region, shape, strict=True))
    if any(sl.stop <= sl.start for sl in region):
        raise InferenceError(f"empty region {region} in volume of shape {shape}")
    win = sw.effective_window(shape)
    starts, read = sw.windows_for(shape, region)
    raw = normalize_intensity(_read(source, read, channels), sw.intensity_range)
    if not channels:
        raw = raw[None]
    device = torch.device(sw.device)
    image = torch.from_numpy(np.ascontiguousarray(raw)).to(device)
    read_shape = tuple(sl.stop - sl.start for sl in read)
    if sw.blend == "constant":
        weight = torch.ones(win, dtype=torch.float32, device=device)
    else:
        weight = torch.from_numpy(gaussian_weight(win, sw.sigma_scale)).to(device)

    # accumulators: numpy-owned on CPU (visible to tracemalloc), torch elsewhere
    def zeros(*shp: int) -> torch.Tensor:
        if device.type == "cpu":
            return torch.from_numpy(np.zeros(shp, dtype=np.float32))
        return torch.zeros(shp, dtype=torch.float32, device=device)

    wsum = zeros(*read_shape)
    acc: dict[str, torch.Tensor] = {}
    origins = list(
        itertools.product(*[(s - r.start).tolist() for s, r in zip(starts, read, strict=True)])
    )
    with torch.inference_mode():
        for b0 in range(0, len(origins), int(sw.batch_size)):
            batch = origins[b0 : b0 + int(sw.batch_size)]
            boxes = [tuple(slice(o, o + w) for o, w in zip(org, win, strict=True)) for org in batch]
            x = torch.stack([image[(slice(None), *box)] for box in boxes])
            out = _predict_batch(predict_fn, x, sw)
            for k, v in out.items():
                if tuple(v.shape[2:]) != win or v.shape[0] != len(batch):
                    raise InferenceError(
                        f"output {k!r} has shape {tuple(v.shape)}, expected (B={len(batch)}, K, *{win})"
                    )
                if k not in acc:
                    acc[k] = zeros(v.shape[1], *read_shape)
                for i, box in enumerate(boxes):
                    acc[k][(slice(None), *box)] += v[i].to(device) * weight
            for box in boxes:
                wsum[box] += weight
    crop = tuple(
        slice(r.start - rd.start, r.stop - rd.start) for r, rd in zip(region, read, strict=True)
    )
    w = wsum[crop]
    result = {}
    for k, a in acc.items():
        result[k] = (a[(slice(None), *crop)] / w).cpu().numpy().astype(np.float32, copy=False)
    return result


def predict_volume(
    predict_fn: PredictFn, source: Any, sw: SlidingWindow, *, channels: bool = False
) -> dict[str, np.ndarray]:
    """Whole-volume sliding-window prediction (see :func:`predict_region`).

    Examples
    --------
    >>> sw = SlidingWindow(window=(4, 4, 4))
    >>> predict_volume(lambda x: {"semantic": x}, np.ones((5, 6, 7), np.uint8), sw)["semantic"].shape
    (1, 5, 6, 7)
    """
    return predict_region(predict_fn, source, sw, None, channels=channels)
