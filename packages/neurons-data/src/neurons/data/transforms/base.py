"""Building blocks shared by every EM augmentation.

The protocol follows MONAI's dictionary transforms (``MapTransform`` + ``Randomizable``; every
transform *is* a :class:`monai.transforms.Randomizable`, so ``monai.transforms.Compose([...])
.set_random_state(seed)`` seeds it, and MONAI's caching datasets treat it as random) with
two changes that make consistency and reproducibility hold by construction:

* randomness comes from an explicit :class:`numpy.random.Generator` (passed per call or owned
  by the transform, see :meth:`RandomTransform.set_random_state`), never from global state;
* :meth:`RandomTransform.randomize` draws *all* parameters of one sample once, and
  :meth:`RandomTransform.apply` applies those same parameters to every key. Image keys may be
  interpolated; label keys are only ever indexed (nearest neighbour), so no new id can appear.

A sample is a dict of numpy arrays: image keys ``(C, [D,] H, W)`` float32 in ``[0, 1]``,
label keys ``([D,] H, W)`` of any integer dtype. Internally every array is viewed as 3-D
spatial (2-D data gets a depth axis of 1), so one implementation serves 2-D and 3-D.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from monai.transforms import Randomizable

from neurons.data.errors import DataError

__all__ = [
    "AugmentationError",
    "BoxTransform",
    "ProcessLocalGenerator",
    "RandomTransform",
    "reflect_coordinates",
    "seed_from_state",
    "smooth_random_field",
]

Sample = dict[str, Any]


class AugmentationError(DataError, ValueError):
    """Bad augmentation configuration or a sample the augmentations cannot handle."""


def _as_range(name: str, value: Any, *, integer: bool = False) -> tuple[float, float]:
    """Normalise a scalar or a ``(low, high)`` pair into a sorted range tuple."""
    if isinstance(value, int | float | np.integer | np.floating):
        lo = hi = value
    else:
        try:
            lo, hi = value
        except (TypeError, ValueError):
            raise AugmentationError(
                f"parameter {name!r} must be a number or a (low, high) pair, got {value!r}"
            ) from None
    if lo > hi:
        raise AugmentationError(f"parameter {name!r}: low {lo} > high {hi}")
    if integer:
        return int(lo), int(hi)
    return float(lo), float(hi)


def reflect_coordinates(coords: np.ndarray, size: int) -> np.ndarray:
    """Fold coordinates into ``[0, size - 1]`` by mirror reflection (in place for float arrays).

    Parameters
    ----------
    coords : numpy.ndarray
        Floating-point voxel coordinates along one axis.
    size : int
        Length of that axis.

    Returns
    -------
    numpy.ndarray
        ``coords`` reflected at ``0`` and ``size - 1`` (``mirror`` mode of scipy.ndimage).

    Examples
    --------
    >>> reflect_coordinates(np.array([-2.0, 5.0]), 4)
    array([2., 1.])
    """
    if size <= 1:
        coords[...] = 0
        return coords
    top = size - 1
    if coords.size and coords.min() > -top and coords.max() < 2 * top:
        # one reflection at most (the usual case): top - |top - |c||, four in-place passes
        np.abs(coords, out=coords)
        coords -= top
        np.abs(coords, out=coords)
        np.subtract(top, coords, out=coords)
        return coords
    period = 2.0 * top
    np.mod(coords, period, out=coords)
    np.subtract(period, coords, out=coords, where=coords > top)
    return coords


def _bspline_matrix(n_out: int, spacing: float) -> np.ndarray:
    """Cubic B-spline basis ``(n_out, n_ctrl)`` mapping control points to ``n_out`` samples.

    Columns are normalised so that unit-variance i.i.d. coefficients give a field whose
    variance is ~1 at every sample.
    """
    spacing = max(float(spacing), 1.0)
    n_ctrl = int(np.ceil((n_out - 1) / spacing)) + 4
    t = np.arange(n_out, dtype=np.float64) / spacing + 1.5  # first knot 1.5 spacings before 0
    u = np.abs(t[:, None] - np.arange(n_ctrl, dtype=np.float64)[None, :])
    w = np.where(u < 1, 2.0 / 3.0 - u**2 + 0.5 * u**3, np.where(u < 2, (2 - u) ** 3 / 6.0, 0.0))
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


def smooth_random_field(
    rng: np.random.Generator,
    shape: Sequence[int],
    spacing: Sequence[float],
    n_components: int = 1,
) -> np.ndarray:
    """Smooth Gaussian random field(s) with unit standard deviation, from a coarse B-spline grid.

    The field is a tensor product of cubic B-splines over a control grid with the given
    ``spacing`` (in voxels, per axis); evaluating it costs a few small matrix products, far
    cheaper than Gaussian-filtering dense noise.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the control-point values.
    shape : sequence of int
        Output spatial shape (any number of axes).
    spacing : sequence of float
        Control-point spacing per axis, in voxels (larger = smoother).
    n_components : int
        Number of independent fields to draw (stacked on a new first axis).

    Returns
    -------
    numpy.ndarray
        float32 array ``(n_components, *shape)``.

    Examples
    --------
    >>> f = smooth_random_field(np.random.default_rng(0), (4, 32, 32), (2, 8, 8), 2)
    >>> f.shape
    (2, 4, 32, 32)
    """
    if len(shape) != len(spacing):
        raise AugmentationError(
            f"shape {tuple(shape)} and spacing {tuple(spacing)} differ in length"
        )
    mats = [_bspline_matrix(int(n), s) for n, s in zip(shape, spacing, strict=True)]
    coeff = rng.standard_normal((n_components, *[m.shape[1] for m in mats]), dtype=np.float32)
    out = coeff
    for axis, m in enumerate(mats, start=1):
        out = np.moveaxis(np.tensordot(out, m, axes=([axis], [1])), -1, axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def _worker_info() -> tuple[int, int] | None:
    """``(worker id, torch's per-worker seed)`` inside a DataLoader worker, else ``None``."""
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # pragma: no cover - torch is a declared dependency
        return None
    info = get_worker_info()
    return None if info is None else (int(info.id), int(info.seed))


class ProcessLocalGenerator:
    """A seeded :class:`numpy.random.Generator` that re-seeds itself in each DataLoader worker.

    Forked workers inherit a copy of the parent's generator, so without care every worker
    would replay the same augmentations, and every epoch too. On its first use inside a worker
    the generator is re-created from ``(seed, torch per-worker seed)``: workers differ, epochs
    differ (torch draws a new base seed per epoch), and a run is reproducible under a fixed
    torch seed (e.g. Lightning's ``seed_everything``).

    Parameters
    ----------
    seed : int, optional
        Seed; ``None`` = fresh OS entropy.

    Examples
    --------
    >>> gen = ProcessLocalGenerator(0).get()
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._gen = np.random.default_rng(seed)
        self._owner: tuple[int, int | None] = (os.getpid(), None)

    def get(self) -> np.random.Generator:
        """The generator for the current process / worker."""
        info = _worker_info()
        owner = (os.getpid(), None if info is None else info[0])
        if owner != self._owner:  # first use in a new (worker) process
            self._owner = owner
            entropy = [] if info is None else [info[1] % 2**63]
            if self.seed is not None:
                entropy.insert(0, int(self.seed))
            self._gen = np.random.default_rng(entropy or None)
        return self._gen


def seed_from_state(
    seed: int | None = None, state: np.random.RandomState | np.random.Generator | None = None
) -> int | None:
    """The integer seed meant by MONAI's ``set_random_state(seed, state)`` arguments.

    Parameters
    ----------
    seed : int, optional
        Used as is (it wins over ``state``, as in MONAI).
    state : numpy.random.RandomState or numpy.random.Generator, optional
        A seed is drawn from it (advancing it), so one state can seed several transforms.

    Returns
    -------
    int or None
        ``None`` when both are ``None`` (fresh OS entropy).

    Raises
    ------
    AugmentationError
        ``state`` is neither a ``RandomState`` nor a ``Generator``.

    Examples
    --------
    >>> seed_from_state(state=np.random.RandomState(0))
    2357136044
    """
    if seed is not None:
        return int(seed)
    if state is None:
        return None
    if isinstance(state, np.random.RandomState):
        return int(state.randint(2**32, dtype=np.uint64))
    if isinstance(state, np.random.Generator):
        return int(state.integers(2**63))
    raise AugmentationError(
        "set_random_state: state must be a numpy RandomState or Generator, got "
        f"{type(state).__name__}"
    )


class RandomTransform(Randomizable):
    """Base class: a randomised dictionary transform applied consistently to image and labels.

    Subclasses set :attr:`name`, :attr:`intensity_only` and implement :meth:`_draw` (parameters
    for one sample, given the spatial shape) and :meth:`apply`.

    Parameters
    ----------
    p : float
        Probability that the transform fires on a sample.
    keys_image : sequence of str
        Keys of image arrays ``(C, [D,] H, W)`` (interpolated where needed).
    keys_label : sequence of str
        Keys of label arrays ``([D,] H, W)`` (nearest neighbour; left untouched by
        intensity-only transforms).
    seed : int, optional
        Seed of the transform's own generator, used when no ``rng`` is passed to ``__call__``.
    """

    name: ClassVar[str] = "transform"
    intensity_only: ClassVar[bool] = False
    #: Transforms that only make sense across sections (skipped for 2-D data or depth < 3).
    needs_depth: ClassVar[int] = 1

    def __init__(
        self,
        p: float = 0.5,
        keys_image: Sequence[str] = ("image",),
        keys_label: Sequence[str] = ("instance", "semantic"),
        seed: int | None = None,
    ) -> None:
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise AugmentationError(f"{self.name}: probability p must be in [0, 1], got {p}")
        self.p = p
        self.keys_image = tuple(keys_image)
        self.keys_label = tuple(keys_label)
        self.set_random_state(seed)

    # -- randomness -----------------------------------------------------------------------
    def set_random_state(
        self,
        seed: int | None = None,
        state: np.random.RandomState | np.random.Generator | None = None,
    ) -> RandomTransform:
        """Reset the transform's own generator (MONAI ``Randomizable`` interface).

        Parameters
        ----------
        seed : int, optional
            New seed (``None`` and no ``state`` = fresh OS entropy).
        state : numpy.random.RandomState or numpy.random.Generator, optional
            Used only without ``seed``: a seed is drawn from it (see :func:`seed_from_state`).

        Returns
        -------
        RandomTransform
            ``self``.
        """
        self._rng = ProcessLocalGenerator(seed_from_state(seed, state))
        return self

    @property
    def R(self) -> np.random.Generator:
        """The transform's own generator (re-seeded per DataLoader worker)."""
        return self._rng.get()

    def randomize(
        self, rng: np.random.Generator, spatial_shape: tuple[int, int, int]
    ) -> dict | None:
        """Draw this sample's parameters once: ``None`` when the transform does not fire.

        ``spatial_shape`` is always 3-D ``(D, H, W)`` (``D == 1`` for 2-D data).
        """
        if rng.random() >= self.p or spatial_shape[0] < self.needs_depth:
            return None
        return self._draw(rng, spatial_shape)

    def _draw(self, rng: np.random.Generator, spatial_shape: tuple[int, int, int]) -> dict | None:
        raise NotImplementedError

    # -- application ----------------------------------------------------------------------
    def apply(self, sample: Sample, params: dict) -> Sample:
        """Apply already drawn ``params`` to every key of a *normalised* sample (3-D views)."""
        raise NotImplementedError

    def __call__(self, sample: Mapping[str, Any], rng: np.random.Generator | None = None) -> Sample:
        """Transform one sample dict; keys not named by the transform pass through unchanged."""
        view = _Views(sample, self.keys_image, self.keys_label)
        params = self.randomize(self.R if rng is None else rng, view.spatial_shape)
        out = view.arrays if params is None else self.apply(view.arrays, params)
        return view.restore(out)

    # -- helpers for subclasses -----------------------------------------------------------
    def _image_keys(self, sample: Mapping[str, Any]) -> list[str]:
        return [k for k in self.keys_image if k in sample]

    def _label_keys(self, sample: Mapping[str, Any]) -> list[str]:
        return [k for k in self.keys_label if k in sample]

    def __repr__(self) -> str:
        fields = {
            k: v for k, v in vars(self).items() if k not in {"_rng", "keys_image", "keys_label"}
        }
        args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return f"{type(self).__name__}({args})"


def draw_box(
    rng: np.random.Generator,
    spatial_shape: tuple[int, int, int],
    length_ratio: tuple[float, float],
) -> tuple[slice, slice, slice]:
    """A random box whose side along each axis is ``U(length_ratio) * size`` (at least 1)."""
    box = []
    for size in spatial_shape:
        length = int(np.clip(round(rng.uniform(*length_ratio) * size), 1, size))
        start = int(rng.integers(0, size - length + 1))
        box.append(slice(start, start + length))
    return tuple(box)  # type: ignore[return-value]


def draw_sections(
    rng: np.random.Generator, depth: int, max_sections: int, interior: bool = False
) -> np.ndarray:
    """Sorted indices of ``1..max_sections`` distinct sections (all of them for 2-D data)."""
    candidates = np.arange(1, depth - 1) if interior else np.arange(depth)
    n = int(rng.integers(1, max(1, min(max_sections, candidates.size)) + 1))
    return np.sort(rng.choice(candidates, size=n, replace=False))


class BoxTransform(RandomTransform):
    """Base of the "cut" augmentations: change the image inside one random box (labels untouched).

    Subclasses implement :meth:`_draw_region` (extra parameters) and :meth:`_region` (the new
    content of the box, clipped to ``[0, 1]`` afterwards).
    """

    intensity_only = True

    def __init__(self, p: float, length_ratio: Any, **kwargs: Any) -> None:
        super().__init__(p, **kwargs)
        self.length_ratio = _as_range(f"{self.name}.length_ratio", length_ratio)
        if not 0 < self.length_ratio[0] <= self.length_ratio[1] <= 1:
            raise AugmentationError(
                f"{self.name}: length_ratio must lie in (0, 1], got {length_ratio}"
            )

    def _draw(self, rng, spatial_shape):
        return {"box": draw_box(rng, spatial_shape, self.length_ratio), **self._draw_region(rng)}

    def _draw_region(self, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def _region(self, region: np.ndarray, params: dict) -> np.ndarray:
        raise NotImplementedError

    def apply(self, sample: Sample, params: dict) -> Sample:
        out = dict(sample)
        box = (slice(None), *params["box"])
        for key in self._image_keys(sample):
            res = sample[key].copy()
            res[box] = np.clip(self._region(res[box], params), 0.0, 1.0)
            out[key] = res
        return out


class _Views:
    """Validate a sample and view its arrays as 3-D spatial (C, D, H, W) / (D, H, W)."""

    def __init__(
        self, sample: Mapping[str, Any], keys_image: Sequence[str], keys_label: Sequence[str]
    ):
        if not isinstance(sample, Mapping):
            raise AugmentationError(
                f"a sample must be a dict of arrays, got {type(sample).__name__}"
            )
        self.sample = sample
        self.torch_keys: dict[str, Any] = {}
        arrays: dict[str, Any] = dict(sample)
        spatial: tuple[int, ...] | None = None
        first = None
        present_images = [k for k in keys_image if k in sample]
        present_labels = [k for k in keys_label if k in sample]
        if not present_images and not present_labels:
            raise AugmentationError(
                f"sample has none of the keys {tuple(keys_image) + tuple(keys_label)}; "
                f"it has {sorted(sample)}"
            )
        for key in present_images + present_labels:
            arr = sample[key]
            if not isinstance(arr, np.ndarray):
                if hasattr(arr, "detach") and hasattr(arr, "numpy"):  # torch tensor
                    self.torch_keys[key] = arr
                    arr = arr.detach().cpu().numpy()
                else:
                    raise AugmentationError(
                        f"sample[{key!r}] must be a numpy array, got {type(arr).__name__}"
                    )
            is_image = key in present_images
            shp = arr.shape[1:] if is_image else arr.shape
            if is_image and arr.ndim not in (3, 4):
                raise AugmentationError(
                    f"image key {key!r} must be (C, H, W) or (C, D, H, W), got shape {arr.shape}"
                )
            if not is_image:
                if arr.ndim not in (2, 3):
                    raise AugmentationError(
                        f"label key {key!r} must be (H, W) or (D, H, W), got shape {arr.shape}"
                    )
                if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                    raise AugmentationError(
                        f"label key {key!r} must hold integer ids, got dtype {arr.dtype}"
                    )
            if spatial is None:
                spatial, first = shp, key
            elif shp != spatial:
                raise AugmentationError(
                    f"spatial shape of {key!r} {shp} differs from that of {first!r} {spatial} "
                    "(images are (C, [D,] H, W), labels ([D,] H, W))"
                )
            if is_image:
                arrays[key] = arr if arr.ndim == 4 else arr[:, None]
            else:
                arrays[key] = arr if arr.ndim == 3 else arr[None]
        assert spatial is not None
        self.ndim = len(spatial)
        self.spatial_shape: tuple[int, int, int] = (
            tuple(spatial) if self.ndim == 3 else (1, *spatial)
        )  # type: ignore[assignment]
        self.keys = present_images + present_labels
        self.image_keys = set(present_images)
        self.arrays = arrays

    def restore(self, arrays: dict[str, Any]) -> Sample:
        out = dict(arrays)
        for key in self.keys:
            arr = out[key]
            if self.ndim == 2:
                arr = arr[:, 0] if key in self.image_keys else arr[0]
            if key in self.torch_keys:
                import torch

                arr = torch.from_numpy(np.ascontiguousarray(arr)).to(self.torch_keys[key].device)
            out[key] = arr
        return out
