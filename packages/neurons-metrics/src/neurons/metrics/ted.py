"""Tolerant edit distance (Funke et al. 2017, TPAMI) and the plain split/merge edit count.

TED is the minimal number of split and merge edits that turn the prediction into the ground
truth after the prediction's boundaries may shift by up to ``tolerance`` (world units with
``voxel_size``; voxels by default):

1. Cells: connected components (26-connectivity in 3-D, 8 in 2-D) of the pair volume
   (gt, pred): each cell has one gt and one pred label.
2. Pred boundary: voxels with a 6-/4-neighbour of another pred label, and the volume faces
   (z faces only when depth > 1).
3. A cell may take another pred label L when **every** voxel of it lies within ``tolerance`` of
   a boundary voxel labelled L (anisotropic Euclidean distance). A cell with an alternative may
   also become pred background (``allow_background=True``, as pyted).
4. Integer program (``scipy.optimize.milp``, HiGHS): one label per cell; match indicators
   m[g, r]; splits s_g >= sum_r m[g, r] - 1, merges t_r >= sum_g m[g, r] - 1; minimise
   splits + merges + false positives + false negatives + (changed voxels)/(changeable voxels+1)
   (the last term breaks ties toward the fewest relabelled voxels and never outweighs an edit).
5. Counts from the optimal relabelling: ``splits`` = sum over gt labels (not background) of
   partners - 1 (a part relabelled as pred background counts as a split too), ``merges`` = sum
   over pred labels (not background) of non-background gt partners - 1, ``false_positives`` =
   pred labels overlapping gt background, ``false_negatives`` = gt labels overlapping pred
   background.

With ``tolerance=0`` no cell can change and TED equals :func:`split_merge_edits`, which counts
the same quantities directly on the contingency table (any volume size).

Size limits: cells are found with a sparse graph over all voxels and each candidate label needs
a distance transform of its boundary's bounding box, so memory is ~150 bytes/voxel and time
grows with (#pred labels x their boundary box volume). Default ``max_voxels`` = 8 Mi (e.g.
32 x 512 x 512); the ILP has one binary per (cell, option) and is usually solved by presolve
in seconds for up to ~1e4 candidate cells; ``time_limit`` bounds it (result flagged
non-optimal).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage, sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse.csgraph import connected_components

from ._common import resolve_table
from .errors import InputError, TEDError
from .table import ContingencyTable, _canonical_ids, _to_numpy

__all__ = ["EditCounts", "TEDResult", "split_merge_edits", "tolerant_edit_distance"]


class EditCounts(NamedTuple):
    """Split/merge edit counts (plus background false positives/negatives)."""

    splits: int
    merges: int
    false_positives: int
    false_negatives: int

    @property
    def total(self) -> int:
        """All edits: ``splits + merges + false_positives + false_negatives``."""
        return self.splits + self.merges + self.false_positives + self.false_negatives


class TEDResult(NamedTuple):
    """Tolerant edit distance result."""

    splits: int
    merges: int
    false_positives: int
    false_negatives: int
    #: True when HiGHS proved optimality (False: time limit hit, counts are an upper bound)
    optimal: bool
    #: number of cells that could change label / voxels in them
    n_candidate_cells: int
    #: the prediction after the optimal tolerated relabelling (only with ``return_relabelled``)
    relabelled: np.ndarray | None = None

    @property
    def total(self) -> int:
        """All edits: ``splits + merges + false_positives + false_negatives``."""
        return self.splits + self.merges + self.false_positives + self.false_negatives


def _counts_from_pairs(
    g: np.ndarray, p: np.ndarray, gt_background: int | None, pred_background: int | None
) -> EditCounts:
    """Edit counts from the list of unique overlapping (gt, pred) label pairs."""
    gbg = np.zeros(g.size, bool) if gt_background is None else g == gt_background
    pbg = np.zeros(p.size, bool) if pred_background is None else p == pred_background
    # splits: per gt (non-bg) number of partners - 1
    gg = g[~gbg]
    _, n_part = np.unique(gg, return_counts=True)
    splits = int((n_part - 1).sum())
    sel = ~gbg & ~pbg
    _, n_gp = np.unique(p[sel], return_counts=True)
    merges = int((n_gp - 1).sum())
    fp = int(np.unique(p[gbg & ~pbg]).size)
    fn = int(np.unique(g[~gbg & pbg]).size)
    return EditCounts(splits, merges, fp, fn)


def split_merge_edits(
    gt: Any,
    pred: Any = None,
    *,
    gt_background: int | None = 0,
    pred_background: int | None = 0,
    min_overlap: int = 1,
    **table_kwargs: Any,
) -> EditCounts:
    """Plain split/merge edit count from the contingency table (TED with tolerance 0).

    ``splits`` = sum over gt labels (except ``gt_background``) of (#pred partners - 1),
    ``merges`` = sum over pred labels (except ``pred_background``) of (#gt partners other than
    the gt background - 1), ``false_positives`` = #pred labels overlapping gt background,
    ``false_negatives`` = #gt labels overlapping pred background. Overlaps smaller than
    ``min_overlap`` voxels are ignored.

    Examples
    --------
    >>> split_merge_edits(np.array([1, 1, 2, 2]), np.array([5, 6, 6, 6]))
    EditCounts(splits=1, merges=1, false_positives=0, false_negatives=0)
    """
    t = resolve_table(gt, pred, **table_kwargs)
    keep = t.counts >= min_overlap
    g, p = t.gt_ids[keep], t.pred_ids[keep]
    gb = gt_background if gt_background is not None and _fits(gt_background, g) else None
    pb = pred_background if pred_background is not None and _fits(pred_background, p) else None
    return _counts_from_pairs(g, p, gb, pb)


def _fits(v: int, a: np.ndarray) -> bool:
    info = np.iinfo(a.dtype)
    return info.min <= int(v) <= info.max


def _cells(pair: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Connected components of equal ``pair`` values (flat cell index per voxel)."""
    shape = pair.shape
    n = pair.size
    idx = np.arange(n, dtype=np.int64).reshape(shape)
    struct = ndimage.generate_binary_structure(pair.ndim, connectivity)
    offsets = [o for o in np.argwhere(struct) - 1 if tuple(o) > (0,) * pair.ndim]
    rows, cols = [], []
    for o in offsets:
        src = tuple(slice(max(0, -d), s - max(0, d)) for d, s in zip(o, shape, strict=True))
        dst = tuple(slice(max(0, d), s - max(0, -d)) for d, s in zip(o, shape, strict=True))
        same = pair[src] == pair[dst]
        rows.append(idx[src][same])
        cols.append(idx[dst][same])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    graph = sparse.coo_array((np.ones(r.size, np.int8), (r, c)), shape=(n, n)).tocsr()
    ncomp, lab = connected_components(graph, directed=False)
    return lab.reshape(shape), int(ncomp)


def _boundary(pred: np.ndarray) -> np.ndarray:
    b = np.zeros(pred.shape, bool)
    for ax in range(pred.ndim):
        n = pred.shape[ax]
        if n > 1:
            lo = [slice(None)] * pred.ndim
            hi = [slice(None)] * pred.ndim
            lo[ax] = slice(0, n - 1)
            hi[ax] = slice(1, n)
            d = pred[tuple(lo)] != pred[tuple(hi)]
            b[tuple(lo)] |= d
            b[tuple(hi)] |= d
            first = [slice(None)] * pred.ndim
            last = [slice(None)] * pred.ndim
            first[ax] = 0
            last[ax] = n - 1
            b[tuple(first)] = True
            b[tuple(last)] = True
    return b


def tolerant_edit_distance(
    gt: Any,
    pred: Any,
    *,
    tolerance: float = 10.0,
    voxel_size: tuple[float, ...] | None = None,
    gt_background: int | None = 0,
    pred_background: int | None = 0,
    allow_background: bool = True,
    connectivity: int | None = None,
    max_voxels: int = 1 << 23,
    time_limit: float | None = 60.0,
    return_relabelled: bool = False,
) -> TEDResult:
    """Tolerant edit distance of Funke et al. 2017 (see the module docstring for the model).

    Parameters
    ----------
    gt, pred : array-like
        Label volumes (2-D or 3-D) of equal shape; read fully into memory.
    tolerance : float
        Maximal boundary shift, in the units of ``voxel_size`` (voxels when None).
    voxel_size : tuple of float, optional
        Anisotropic voxel pitch ``(z, y, x)``.
    gt_background, pred_background : int or None
        Background labels (None: no background).
    allow_background : bool
        A cell with an alternative label may also become pred background (pyted default).
    connectivity : int, optional
        Cell connectivity for ``ndimage.generate_binary_structure`` (default: full).
    max_voxels : int
        Refuse larger inputs (:class:`TEDError`): see the size limits in the module docstring.
    time_limit : float, optional
        HiGHS time limit in seconds.
    return_relabelled : bool
        Also return the optimally relabelled prediction.

    Returns
    -------
    TEDResult

    Examples
    --------
    >>> gt = np.zeros((1, 6, 6), int); gt[:, :, 3:] = 1
    >>> pred = gt.copy(); pred[:, :, 3] = 0   # boundary shifted by one voxel
    >>> tolerant_edit_distance(gt + 1, pred + 1, tolerance=1, gt_background=None,
    ...                        pred_background=None).total
    0
    """
    g = _canonical_ids(np.asarray(_to_numpy(gt)), "gt")
    p = _canonical_ids(np.asarray(_to_numpy(pred)), "pred")
    if g.shape != p.shape:
        raise InputError(f"gt and pred must have the same shape, got {g.shape} and {p.shape}")
    if g.size > max_voxels:
        raise TEDError(
            f"tolerant_edit_distance: input of shape {g.shape} ({g.size} voxels) exceeds "
            f"max_voxels={max_voxels}; crop it, or raise max_voxels (memory ~150 B/voxel)"
        )
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0, got {tolerance}")
    gb = gt_background if gt_background is not None and _fits(gt_background, g) else None
    pb = pred_background if pred_background is not None and _fits(pred_background, p) else None
    if g.size == 0:
        return TEDResult(0, 0, 0, 0, True, 0, p.copy() if return_relabelled else None)
    res = np.ones(g.ndim) if voxel_size is None else np.asarray(voxel_size, float)
    if res.size != g.ndim:
        raise InputError(f"voxel_size {tuple(res)} does not match a {g.ndim}-D volume")

    table = ContingencyTable.from_arrays(g, p)
    # pair id per voxel: rank of (g, p) among the table's sorted unique pairs
    gi = np.searchsorted(table.gt_sizes()[0], g)
    pids = table.pred_sizes()[0]
    pj = np.searchsorted(pids, p)
    pair = gi.astype(np.int64) * pids.size + pj
    cells, n_cells = _cells(pair, connectivity if connectivity is not None else g.ndim)
    flat_cells = cells.ravel()
    cell_size = np.bincount(flat_cells, minlength=n_cells)
    first = np.zeros(n_cells, np.int64)
    first[flat_cells[::-1]] = np.arange(flat_cells.size - 1, -1, -1)
    cell_g = g.ravel()[first]
    cell_pj = pj.ravel()[first]

    # candidate cells: max distance to the pred boundary <= tolerance
    bnd = _boundary(p)
    options: dict[int, list[int]] = {}
    if tolerance > 0 and n_cells:
        dist = (
            ndimage.distance_transform_edt(~bnd, sampling=res)
            if (~bnd).any()
            else np.zeros(g.shape)
        )
        maxd = ndimage.maximum(dist, cells, index=np.arange(n_cells))
        cand = np.flatnonzero(np.asarray(maxd) <= tolerance + 1e-9)
        if cand.size:
            is_cand = np.zeros(n_cells, bool)
            is_cand[cand] = True
            reach = np.minimum(np.ceil(tolerance / res).astype(int), np.array(g.shape) - 1)
            bl = pj[bnd]
            bpos = np.argwhere(bnd)
            order = np.argsort(bl, kind="stable")
            bl, bpos = bl[order], bpos[order]
            starts = np.flatnonzero(np.r_[True, bl[1:] != bl[:-1]])
            ends = np.r_[starts[1:], bl.size]
            for s, e in zip(starts, ends, strict=True):
                lab = int(bl[s])
                pts = bpos[s:e]
                lo = np.maximum(pts.min(0) - reach, 0)
                hi = np.minimum(pts.max(0) + reach + 1, g.shape)
                box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
                cb = cells[box]
                cells_here = np.unique(cb)
                cells_here = cells_here[is_cand[cells_here] & (cell_pj[cells_here] != lab)]
                if not cells_here.size:
                    continue
                src = np.ones(cb.shape, bool)
                src[tuple((pts - lo).T)] = False
                near = ndimage.distance_transform_edt(src, sampling=res) <= tolerance + 1e-9
                inside = np.bincount(cb[near], minlength=n_cells)
                ok = cells_here[inside[cells_here] == cell_size[cells_here]]
                for c in ok.tolist():
                    options.setdefault(c, []).append(lab)
        if allow_background and pb is not None and options:
            bg_j = int(np.searchsorted(pids, pb))
            bg_present = bg_j < pids.size and pids[bg_j] == pb
            for c, labs in options.items():
                if cell_pj[c] != bg_j and bg_j not in labs:
                    labs.append(bg_j if bg_present else -1)

    chosen = cell_pj.copy()
    optimal = True
    if options:
        chosen, optimal = _solve(cell_g, cell_pj, cell_size, options, gb, pids, pb, time_limit)
    # chosen == -1 (pred background absent from pred) -> last entry
    label_of = np.concatenate([pids, np.array([pb if pb is not None else 0], pids.dtype)])
    tab = ContingencyTable(cell_g, label_of[chosen], cell_size)
    counts = _counts_from_pairs(tab.gt_ids, tab.pred_ids, gb, pb)
    relab = label_of[chosen[cells]] if return_relabelled else None
    return TEDResult(
        counts.splits, counts.merges, counts.false_positives, counts.false_negatives,
        optimal, len(options), relab,
    )  # fmt: skip


def _solve(
    cell_g: np.ndarray,
    cell_pj: np.ndarray,
    cell_size: np.ndarray,
    options: dict[int, list[int]],
    gb: int | None,
    pids: np.ndarray,
    pb: int | None,
    time_limit: float | None,
) -> tuple[np.ndarray, bool]:
    """Build and solve the TED integer program; returns the chosen pred index per cell."""
    n_cells = cell_g.size
    # x variables: candidate cells x options (own label first)
    xc, xl = [], []
    for c, labs in options.items():
        for lab in [int(cell_pj[c]), *labs]:
            xc.append(c)
            xl.append(lab)
    xc = np.asarray(xc, np.int64)
    xl = np.asarray(xl, np.int64)
    nx = xc.size
    fixed = np.ones(n_cells, bool)
    fixed[list(options)] = False
    # gt label index per cell
    g_u, g_of_cell = np.unique(cell_g, return_inverse=True)
    # m variables: every (g, label) reachable
    mg = np.concatenate([g_of_cell[fixed], g_of_cell[xc]])
    ml = np.concatenate([cell_pj[fixed], xl])
    mkey = np.unique(np.stack([mg, ml], 1), axis=0)
    nm = mkey.shape[0]
    m_index = {(int(a), int(b)): i for i, (a, b) in enumerate(mkey.tolist())}
    fixed_pairs = {
        (int(a), int(b))
        for a, b in zip(g_of_cell[fixed].tolist(), cell_pj[fixed].tolist(), strict=True)
    }
    labels_u = np.unique(mkey[:, 1])
    ng, nl = g_u.size, labels_u.size
    # variable layout: [x (nx) | m (nm) | s (ng) | t (nl)]
    ox, om, os_, ot = 0, nx, nx + nm, nx + nm + ng
    nv = ot + nl
    gb_idx = int(np.searchsorted(g_u, gb)) if gb is not None else -1
    if gb is not None and not (gb_idx < ng and g_u[gb_idx] == gb):
        gb_idx = -1
    pb_j = -1
    if pb is not None:
        j = int(np.searchsorted(pids, pb))
        pb_j = j if j < pids.size and pids[j] == pb else -1

    def is_pbg(lab: int) -> bool:
        return lab == -1 or (pb_j >= 0 and lab == pb_j)

    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0
    # (1) one label per candidate cell
    cell_rows = {}
    for i, c in enumerate(xc.tolist()):
        if c not in cell_rows:
            cell_rows[c] = r
            r += 1
            lo.append(1)
            hi.append(1)
        rows.append(cell_rows[c])
        cols.append(ox + i)
        vals.append(1.0)
    # (2) m[g, l] >= x[c, l]
    for i, (c, lab) in enumerate(zip(xc.tolist(), xl.tolist(), strict=True)):
        mi = m_index[(int(g_of_cell[c]), lab)]
        rows += [r, r]
        cols += [om + mi, ox + i]
        vals += [1.0, -1.0]
        lo.append(0)
        hi.append(np.inf)
        r += 1
    # (3) m[g, l] <= sum_c x[c, l] (pairs not fixed by non-candidate cells)
    by_pair: dict[tuple[int, int], list[int]] = {}
    for i, (c, lab) in enumerate(zip(xc.tolist(), xl.tolist(), strict=True)):
        by_pair.setdefault((int(g_of_cell[c]), lab), []).append(i)
    for key, xs in by_pair.items():
        if key in fixed_pairs:
            continue
        rows.append(r)
        cols.append(om + m_index[key])
        vals.append(1.0)
        for i in xs:
            rows.append(r)
            cols.append(ox + i)
            vals.append(-1.0)
        lo.append(-np.inf)
        hi.append(0)
        r += 1
    # (4) splits: sum_l m[g, l] - s_g <= 1 (g not background); (5) merges
    lab_pos = {int(v): i for i, v in enumerate(labels_u.tolist())}
    for gi in range(ng):
        if gi == gb_idx:
            continue
        sel = np.flatnonzero(mkey[:, 0] == gi)
        rows += [r] * (sel.size + 1)
        cols += [*(om + sel).tolist(), os_ + gi]
        vals += [1.0] * sel.size + [-1.0]
        lo.append(-np.inf)
        hi.append(1)
        r += 1
    for lab, li in lab_pos.items():
        if is_pbg(lab):
            continue
        sel = np.flatnonzero((mkey[:, 1] == lab) & (mkey[:, 0] != gb_idx))
        rows += [r] * (sel.size + 1)
        cols += [*(om + sel).tolist(), ot + li]
        vals += [1.0] * sel.size + [-1.0]
        lo.append(-np.inf)
        hi.append(1)
        r += 1
    cost = np.zeros(nv)
    cost[os_:ot] = 1.0
    cost[ot:] = 1.0
    for (gi, lab), mi in m_index.items():
        if gi == gb_idx and not is_pbg(lab):
            cost[om + mi] += 1.0  # false positive
        elif gi != gb_idx and is_pbg(lab):
            cost[om + mi] += 1.0  # false negative
    own = xl == cell_pj[xc]
    changeable = float(cell_size[list(options)].sum())
    cost[ox : ox + nx] = np.where(own, 0.0, cell_size[xc] / (changeable + 1.0))
    lb = np.zeros(nv)
    ub = np.full(nv, np.inf)
    ub[: nx + nm] = 1.0
    for key in fixed_pairs:
        lb[om + m_index[key]] = 1.0
    integrality = np.zeros(nv)
    integrality[: nx + nm] = 1
    a = sparse.csr_array((vals, (rows, cols)), shape=(r, nv))
    opts = {"disp": False}
    if time_limit is not None:
        opts["time_limit"] = float(time_limit)
    res = milp(cost, constraints=LinearConstraint(a, lo, hi), integrality=integrality,
               bounds=Bounds(lb, ub), options=opts)  # fmt: skip
    if res.x is None:
        raise TEDError(f"TED integer program not solved: {res.message}")
    x = res.x[:nx] > 0.5
    chosen = cell_pj.copy()
    chosen[xc[x]] = xl[x]
    return chosen, bool(res.status == 0)
