"""Leaderboard conventions: SNEMI3D crop, ISBI 2012 thinned V_rand / V_info, CREMI border mask.

Each is a named preprocessing (or score) that a challenge applied before its numbers; the
package README writes every definition out. :func:`neurons.metrics.evaluate` applies them with
``convention=...`` and records in ``report.meta`` which one (and which crop / mask) a number used.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage

from .errors import InputError
from .table import ContingencyTable, _to_numpy, contingency_table

__all__ = [
    "CONVENTIONS",
    "CREMI_BORDER_NM",
    "CREMI_VOXEL_SIZE",
    "SNEMI3D_CROP_FRACTION",
    "ISBIScores",
    "snemi3d_crop",
    "cremi_border_mask",
    "apply_cremi_border_mask",
    "thin_boundaries",
    "isbi2012_scores",
    "apply_convention",
]

#: names accepted by ``evaluate(convention=...)`` and ``neurons-eval --convention``
CONVENTIONS = ("default", "snemi3d", "isbi2012", "cremi")
#: CREMI ignores gt pixels within 25 nm (in the same section) of a label change
CREMI_BORDER_NM = 25.0
#: CREMI voxel size (z, y, x) in nm, used when none is given
CREMI_VOXEL_SIZE = (40.0, 4.0, 4.0)
#: fraction of each section's area kept by the SNEMI3D crop (all sections are kept)
SNEMI3D_CROP_FRACTION = 1.0 / 3.0


def _volume(x: Any, name: str) -> np.ndarray:
    a = np.asarray(_to_numpy(x))
    if a.ndim not in (2, 3):
        raise InputError(
            f"{name}: expected a 2-D section or a 3-D (z, y, x) stack, got shape {a.shape}"
        )
    return a


# --------------------------------------------------------------------------- SNEMI3D
def snemi3d_crop(
    shape: tuple[int, ...], fraction: float = SNEMI3D_CROP_FRACTION
) -> tuple[slice, ...]:
    """Centred crop of every section covering ``fraction`` of its area (all sections kept).

    The SNEMI3D server scored a centred sub-volume of about one third of the test volume; its
    exact bounds are not published, so this is our documented choice: in-plane side lengths
    ``round(n * sqrt(fraction))``, centred (extra pixel after the centre when odd), every z.

    Examples
    --------
    >>> snemi3d_crop((100, 1024, 1024))
    (slice(0, 100, None), slice(216, 807, None), slice(216, 807, None))
    """
    if not 0 < fraction <= 1:
        raise InputError(f"snemi3d_crop: fraction must be in (0, 1], got {fraction}")
    if len(shape) < 2:
        raise InputError(f"snemi3d_crop: need at least 2 dimensions, got shape {tuple(shape)}")
    side = math.sqrt(fraction)
    out = [slice(0, int(s)) for s in shape[:-2]]
    for n in shape[-2:]:
        m = max(1, int(round(int(n) * side)))
        start = (int(n) - m) // 2
        out.append(slice(start, start + m))
    return tuple(out)


# --------------------------------------------------------------------------- CREMI
def cremi_border_mask(
    gt: Any,
    voxel_size: tuple[float, ...] | None = None,
    threshold: float = CREMI_BORDER_NM,
) -> np.ndarray:
    """Voxels that CREMI ignores: within ``threshold`` (world units) of a gt label change.

    Per z-section: a pixel is a border pixel when one of its 4 neighbours in the section has
    another label (the image edge is not a border: edge pixels are compared with themselves);
    every pixel whose in-section Euclidean distance to a border pixel is ``<= threshold`` is
    masked (border pixels themselves included). Distances use the section's pixel spacing
    ``voxel_size[-2:]`` (CREMI: 4 x 4 nm, so 25 nm = 6.25 pixels).

    Parameters
    ----------
    gt : array-like
        Ground-truth labels, 2-D or 3-D ``(z, y, x)``.
    voxel_size : tuple of float, optional
        ``(z, y, x)`` (or ``(y, x)``) in the unit of ``threshold``; default CREMI's (40, 4, 4) nm.
    threshold : float
        Distance in world units (default 25 nm, as the CREMI challenge).

    Returns
    -------
    ndarray of bool
        ``True`` where the voxel is ignored.

    Examples
    --------
    >>> cremi_border_mask(np.array([[1, 1, 1, 2, 2, 2]]), voxel_size=(1, 1), threshold=1).tolist()
    [[False, True, True, True, True, False]]
    """
    g = _volume(gt, "gt")
    vs = CREMI_VOXEL_SIZE if voxel_size is None else tuple(float(v) for v in voxel_size)
    if len(vs) < 2 or min(vs[-2:]) <= 0:
        raise InputError(
            f"cremi_border_mask: voxel_size needs positive (y, x) spacing, got {voxel_size}"
        )
    if threshold < 0:
        raise InputError(f"cremi_border_mask: threshold must be >= 0, got {threshold}")
    g3 = g[None] if g.ndim == 2 else g
    p = np.pad(g3, ((0, 0), (1, 1), (1, 1)), mode="edge")
    c = p[:, 1:-1, 1:-1]
    interior = (c == p[:, :-2, 1:-1]) & (c == p[:, 2:, 1:-1]) & (c == p[:, 1:-1, :-2])
    interior &= c == p[:, 1:-1, 2:]
    out = np.empty(g3.shape, bool)
    for z in range(g3.shape[0]):  # loop over sections (2-D EDT each), not voxels
        if interior[z].all():
            out[z] = False
            continue
        d = ndimage.distance_transform_edt(interior[z], sampling=vs[-2:])
        out[z] = d <= threshold
    return out[0] if g.ndim == 2 else out


def apply_cremi_border_mask(
    gt: Any,
    voxel_size: tuple[float, ...] | None = None,
    threshold: float = CREMI_BORDER_NM,
    ignore_label: int = 0,
) -> np.ndarray:
    """A copy of ``gt`` with the CREMI border voxels set to ``ignore_label`` (default 0).

    Examples
    --------
    >>> apply_cremi_border_mask(np.array([[1, 1, 1, 2, 2, 2]]), (1, 1), threshold=1).tolist()
    [[1, 0, 0, 0, 0, 2]]
    """
    g = _volume(gt, "gt")
    out = g.copy()
    out[cremi_border_mask(g, voxel_size, threshold)] = ignore_label
    return out


# --------------------------------------------------------------------------- ISBI 2012
def _lut(step: int) -> np.ndarray:
    """Zhang-Suen deletion table over the 8-neighbour code (bit k = neighbour P(k+2))."""
    lut = np.zeros(256, bool)
    for code in range(256):
        p = [(code >> k) & 1 for k in range(8)]  # P2..P9: N, NE, E, SE, S, SW, W, NW
        b = sum(p)
        a = sum(p[k] == 0 and p[(k + 1) % 8] == 1 for k in range(8))
        n, e, s, w = p[0], p[2], p[4], p[6]
        if step == 0:
            cond = n * e * s == 0 and e * s * w == 0
        else:
            cond = n * e * w == 0 and n * s * w == 0
        lut[code] = 2 <= b <= 6 and a == 1 and cond
    return lut


_LUTS = (_lut(0), _lut(1))
_OFFSETS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def thin_boundaries(boundary: Any) -> np.ndarray:
    """Thin boundary masks to one-pixel-wide curves, section by section (Zhang-Suen).

    The table-driven two-sub-iteration thinning of Zhang & Suen (1984), as ImageJ's
    ``skeletonize`` used by the ISBI 2012 evaluation script; it keeps the boundary connected
    and never opens a gap between two regions. All sections are thinned together (vectorised
    over the stack). Pixels outside the image count as boundary, so a boundary that reaches
    the image edge stays attached to it (no region leaks around its end).

    Examples
    --------
    >>> m = np.zeros((5, 7), bool); m[:, 2:5] = True
    >>> thin_boundaries(m).sum(axis=1).tolist()
    [1, 1, 1, 1, 1]
    """
    m = np.asarray(_to_numpy(boundary)).astype(bool)
    two_d = m.ndim == 2
    m = (m[None] if two_d else m).copy()
    weights = [1 << k for k in range(8)]
    while True:
        changed = False
        for lut in _LUTS:
            p = np.pad(m, ((0, 0), (1, 1), (1, 1)), constant_values=True)
            code = np.zeros(m.shape, np.uint8)
            for (dy, dx), w in zip(_OFFSETS, weights, strict=True):
                code |= p[:, 1 + dy : p.shape[1] - 1 + dy, 1 + dx : p.shape[2] - 1 + dx] * np.uint8(
                    w
                )
            delete = m & lut[code]
            if delete.any():
                m &= ~delete
                changed = True
        if not changed:
            return m[0] if two_d else m


class ISBIScores(NamedTuple):
    """Foreground-restricted ISBI 2012 scores (higher is better, 1 = perfect)."""

    v_rand: float
    v_rand_split: float
    v_rand_merge: float
    v_info: float
    v_info_split: float
    v_info_merge: float


def _regions(x: Any, name: str, threshold: float, thin: bool) -> np.ndarray:
    """Section-wise 4-connected regions of the non-boundary pixels (0 = boundary).

    Integer inputs: 0 is boundary; float inputs: interior where ``value > threshold``.
    """
    a = _volume(x, name)
    interior = a > threshold if a.dtype.kind == "f" else a != 0
    a3 = interior[None] if a.ndim == 2 else interior
    if thin:
        a3 = ~thin_boundaries(~a3)
    cross = np.zeros((3, 3, 3), bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)  # in-section 4-connectivity only
    lab, _ = ndimage.label(a3, structure=cross)
    return lab


def isbi2012_scores(
    gt: Any,
    pred: Any,
    *,
    threshold: float = 0.5,
    thin: bool = True,
    table: ContingencyTable | None = None,
) -> ISBIScores:
    """ISBI 2012 ``V_rand`` and ``V_info`` (foreground-restricted, after border thinning).

    1. Both maps become boundary masks (integer maps: 0 is boundary, e.g. the challenge's
       0/255 labels or instance ids with 0 between cells; float maps: boundary where
       ``value <= threshold``), the boundaries are thinned to one pixel per section
       (:func:`thin_boundaries`) and the regions are the 4-connected components of the
       remaining pixels in each section (objects never span sections).
    2. Only gt-region pixels count (foreground restriction). Pred boundary pixels there are
       singletons. With ``n_ij`` the overlaps, ``a_i`` / ``b_j`` the gt / pred region sizes
       and ``c`` the number of pred-boundary pixels on gt regions:
       ``V_rand_split = (sum n_ij^2 + c) / sum a_i^2``,
       ``V_rand_merge = (sum n_ij^2 + c) / (sum b_j^2 + c)``, ``V_rand`` = their harmonic
       mean (the Fiji script's ``foregroundRestrictedStatsN2`` F-score).
    3. ``V_info_split = I(S; T) / H(T)``, ``V_info_merge = I(S; T) / H(S)`` (S = gt, T = pred
       with singletons) and ``V_info = 2 I / (H(S) + H(T))``, their harmonic mean.

    All sections are pooled (pairs within a section, as the challenge's sums over slices).
    ``thin=False`` skips the thinning (regions are still the connected components). A given
    ``table`` (of region maps, 0 = boundary) is scored as it is.

    Examples
    --------
    >>> g = np.array([[1, 1, 1, 0, 2, 2, 2]]); p = np.array([[5, 0, 5, 5, 5, 5, 5]])
    >>> round(isbi2012_scores(g, p, thin=False).v_rand, 6)
    0.666667
    """
    if table is None:
        g = _regions(gt, "gt", threshold, thin)
        p = _regions(pred, "pred", threshold, thin)
        if g.shape != p.shape:
            raise InputError(f"isbi2012_scores: gt shape {g.shape} and pred shape {p.shape} differ")
        table = contingency_table(g, p)
    t = table.mask(ignore_gt=[0])
    if t.n == 0:
        return ISBIScores(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    zero = t.pred_ids == 0
    c = int(t.counts[zero].sum())
    fg = t.mask(ignore_pred=[0]) if c else t
    a = t.gt_sizes()[1].astype(np.float64)
    b = fg.pred_sizes()[1].astype(np.float64) if len(fg) else np.zeros(0)
    nij = fg.counts.astype(np.float64)
    snn = float(nij @ nij) + c
    split = snn / float(a @ a)
    merge = snn / (float(b @ b) + c)
    v_rand = 2 * split * merge / (split + merge)
    n = float(t.n)

    def ent(sizes: np.ndarray, singles: int) -> float:
        q = sizes / n
        return float(-(q @ np.log(q))) + singles * math.log(n) / n

    h_s, h_t, h_st = ent(a, 0), ent(b, c), ent(nij, c)
    mi = max(0.0, h_s + h_t - h_st)
    i_split = mi / h_t if h_t > 0 else 1.0
    i_merge = mi / h_s if h_s > 0 else 1.0
    v_info = 2 * mi / (h_s + h_t) if h_s + h_t > 0 else 1.0
    return ISBIScores(v_rand, split, merge, v_info, i_split, i_merge)


def apply_convention(
    name: str | None,
    gt: Any,
    pred: Any,
    *,
    voxel_size: tuple[float, ...] | None = None,
    border_threshold: float = CREMI_BORDER_NM,
    threshold: float = 0.5,
) -> tuple[Any, Any, dict[str, Any]]:
    """``(gt, pred, meta)`` prepared for a leaderboard convention (see :data:`CONVENTIONS`).

    ``"default"``/None: unchanged. ``"snemi3d"``: both cropped by :func:`snemi3d_crop` (lazy
    volumes stay lazy). ``"cremi"``: gt border voxels set to 0 (:func:`apply_cremi_border_mask`;
    0 must be ignored). ``"isbi2012"``: both replaced by their thinned section-wise regions
    (0 = thinned boundary), the inputs of :func:`isbi2012_scores`. ``meta`` records what was
    done (crop bounds, voxel size and threshold, masked voxel count).

    Examples
    --------
    >>> apply_convention("snemi3d", np.zeros((3, 9, 9)), np.zeros((3, 9, 9)))[2]["crop"]
    [[0, 3], [2, 7], [2, 7]]
    """
    conv = "default" if name is None else str(name).lower()
    if conv not in CONVENTIONS:
        raise InputError(f"unknown convention {name!r}; expected one of {', '.join(CONVENTIONS)}")
    meta: dict[str, Any] = {"name": conv}
    if conv == "default":
        return gt, pred, meta
    gt = gt if hasattr(gt, "shape") else np.asarray(gt)
    pred = pred if hasattr(pred, "shape") else np.asarray(pred)
    gshape, pshape = tuple(gt.shape), tuple(pred.shape)
    if gshape != pshape:
        raise InputError(f"convention {conv!r}: gt shape {gshape} and pred shape {pshape} differ")
    if conv == "snemi3d":
        crop = snemi3d_crop(gshape)
        meta["crop"] = [[s.start, s.stop] for s in crop]
        meta["crop_fraction_of_section"] = SNEMI3D_CROP_FRACTION
        return gt[crop], pred[crop], meta
    if conv == "cremi":
        vs = CREMI_VOXEL_SIZE if voxel_size is None else tuple(float(v) for v in voxel_size)
        g = _volume(gt, "gt")
        mask = cremi_border_mask(g, vs, border_threshold)
        out = g.copy()
        out[mask] = 0
        meta.update(
            voxel_size=list(vs), border_threshold=border_threshold, masked_voxels=int(mask.sum())
        )
        return out, pred, meta
    meta["threshold"] = threshold
    return _regions(gt, "gt", threshold, True), _regions(pred, "pred", threshold, True), meta
