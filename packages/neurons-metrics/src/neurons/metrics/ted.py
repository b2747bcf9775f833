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
    opt_c: list[np.ndarray] = []  # (candidate cell, alternative pred index) pairs
    opt_l: list[np.ndarray] = []
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
            for s, e in zip(starts, ends, strict=True):  # one distance transform per label
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
                opt_c.append(ok)
                opt_l.append(np.full(ok.size, lab, np.int64))
    oc = np.concatenate(opt_c).astype(np.int64) if opt_c else np.zeros(0, np.int64)
    ol = np.concatenate(opt_l) if opt_l else np.zeros(0, np.int64)
    if allow_background and pb is not None and oc.size:
        bg_j = int(np.searchsorted(pids, pb))
        bg_present = bg_j < pids.size and pids[bg_j] == pb
        with_opt = np.unique(oc)
        has_bg = np.zeros(n_cells, bool)
        has_bg[oc[ol == bg_j]] = True
        add = with_opt[(cell_pj[with_opt] != bg_j) & ~has_bg[with_opt]]
        oc = np.concatenate([oc, add])
        ol = np.concatenate([ol, np.full(add.size, bg_j if bg_present else -1, np.int64)])
    n_cand = int(np.unique(oc).size)

    chosen = cell_pj.copy()
    optimal = True
    if oc.size:
        chosen, optimal = _solve(cell_g, cell_pj, cell_size, oc, ol, gb, pids, pb, time_limit)
    # chosen == -1 (pred background absent from pred) -> last entry
    label_of = np.concatenate([pids, np.array([pb if pb is not None else 0], pids.dtype)])
    tab = ContingencyTable(cell_g, label_of[chosen], cell_size)
    counts = _counts_from_pairs(tab.gt_ids, tab.pred_ids, gb, pb)
    relab = label_of[chosen[cells]] if return_relabelled else None
    return TEDResult(
        counts.splits, counts.merges, counts.false_positives, counts.false_negatives,
        optimal, n_cand, relab,
    )  # fmt: skip


def _solve(
    cell_g: np.ndarray,
    cell_pj: np.ndarray,
    cell_size: np.ndarray,
    opt_c: np.ndarray,
    opt_l: np.ndarray,
    gb: int | None,
    pids: np.ndarray,
    pb: int | None,
    time_limit: float | None,
) -> tuple[np.ndarray, bool]:
    """Build and solve the TED integer program; returns the chosen pred index per cell.

    ``opt_c``/``opt_l`` list the alternative pred index of each candidate cell (``-1``: pred
    background absent from the prediction). The constraint matrix is assembled with numpy
    from coordinate arrays (no loop over variables or labels).
    """
    n_cells = cell_g.size
    cand = np.unique(opt_c)
    # x variables: candidate cells x options, own label first within each cell
    xc = np.concatenate([cand, opt_c])
    xl = np.concatenate([cell_pj[cand].astype(np.int64), opt_l])
    o = np.argsort(xc, kind="stable")
    xc, xl = xc[o], xl[o]
    nx = xc.size
    fixed = np.ones(n_cells, bool)
    fixed[cand] = False
    g_u, g_of_cell = np.unique(cell_g, return_inverse=True)
    g_of_cell = g_of_cell.ravel().astype(np.int64)
    ng = g_u.size
    # m variables: every reachable (g, label) pair, keyed g * L + (label + 1)
    span = np.int64(pids.size + 1)
    fkey = g_of_cell[fixed] * span + cell_pj[fixed].astype(np.int64) + 1
    xkey = g_of_cell[xc] * span + xl + 1
    mkeys = np.unique(np.concatenate([fkey, xkey]))
    nm = mkeys.size
    m_g, m_l = mkeys // span, mkeys % span - 1
    x_m = np.searchsorted(mkeys, xkey)
    m_fixed = np.zeros(nm, bool)
    m_fixed[np.searchsorted(mkeys, fkey)] = True
    labels_u, m_li = np.unique(m_l, return_inverse=True)
    m_li = m_li.ravel()
    nl = labels_u.size
    # variable layout: [x (nx) | m (nm) | s (ng) | t (nl)]
    om, os_, ot = nx, nx + nm, nx + nm + ng
    nv = ot + nl
    gb_idx = -1
    if gb is not None:
        k = int(np.searchsorted(g_u, gb))
        gb_idx = k if k < ng and g_u[k] == gb else -1
    pb_j = -1
    if pb is not None:
        j = int(np.searchsorted(pids, pb))
        pb_j = j if j < pids.size and pids[j] == pb else -1
    m_pbg = (m_l == -1) | ((m_l == pb_j) if pb_j >= 0 else False)
    lab_pbg = (labels_u == -1) | ((labels_u == pb_j) if pb_j >= 0 else False)
    m_gbg = m_g == gb_idx
    ix, im = np.arange(nx), np.arange(nm)
    blocks = []  # (row, col, val) triples per constraint family, plus bounds
    # (1) one label per candidate cell: sum_l x[c, l] == 1
    r1 = np.searchsorted(cand, xc)
    blocks.append((r1, ix, np.ones(nx), np.ones(cand.size), np.ones(cand.size)))
    # (2) m[g, l] - x[c, l] >= 0
    blocks.append((np.r_[ix, ix], np.r_[om + x_m, ix], np.r_[np.ones(nx), -np.ones(nx)],
                   np.zeros(nx), np.full(nx, np.inf)))  # fmt: skip
    # (3) m[g, l] - sum_c x[c, l] <= 0 for pairs not fixed by non-candidate cells
    free = np.flatnonzero(~m_fixed)
    row_of = np.full(nm, -1)
    row_of[free] = np.arange(free.size)
    xs = np.flatnonzero(~m_fixed[x_m])
    blocks.append((np.r_[row_of[free], row_of[x_m[xs]]], np.r_[om + free, xs],
                   np.r_[np.ones(free.size), -np.ones(xs.size)],
                   np.full(free.size, -np.inf), np.zeros(free.size)))  # fmt: skip
    # (4) splits: sum_l m[g, l] - s_g <= 1 for g not background
    gs = np.flatnonzero(np.arange(ng) != gb_idx)
    grow = np.full(ng, -1)
    grow[gs] = np.arange(gs.size)
    ms = im[~m_gbg]
    blocks.append((np.r_[grow[m_g[ms]], grow[gs]], np.r_[om + ms, os_ + gs],
                   np.r_[np.ones(ms.size), -np.ones(gs.size)],
                   np.full(gs.size, -np.inf), np.ones(gs.size)))  # fmt: skip
    # (5) merges: sum_g m[g, l] - t_l <= 1 over non-background g, for l not pred background
    ls = np.flatnonzero(~lab_pbg)
    lrow = np.full(nl, -1)
    lrow[ls] = np.arange(ls.size)
    mt = im[~m_gbg & ~lab_pbg[m_li]]
    blocks.append((np.r_[lrow[m_li[mt]], lrow[ls]], np.r_[om + mt, ot + ls],
                   np.r_[np.ones(mt.size), -np.ones(ls.size)],
                   np.full(ls.size, -np.inf), np.ones(ls.size)))  # fmt: skip
    rows, cols, vals, lo, hi, base = [], [], [], [], [], 0
    for br, bc, bv, blo, bhi in blocks:
        rows.append(br + base)
        cols.append(bc)
        vals.append(bv)
        lo.append(blo)
        hi.append(bhi)
        base += blo.size
    a = sparse.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(base, nv)
    )
    cost = np.zeros(nv)
    cost[os_:] = 1.0  # splits and merges
    cost[om:os_] = ((m_gbg & ~m_pbg) | (~m_gbg & m_pbg)).astype(float)  # false pos / neg
    own = xl == cell_pj[xc]
    changeable = float(cell_size[cand].sum())
    cost[:nx] = np.where(own, 0.0, cell_size[xc] / (changeable + 1.0))
    lb = np.zeros(nv)
    lb[om:os_][m_fixed] = 1.0
    ub = np.full(nv, np.inf)
    ub[: nx + nm] = 1.0
    integrality = np.zeros(nv)
    integrality[: nx + nm] = 1
    opts = {"disp": False}
    if time_limit is not None:
        opts["time_limit"] = float(time_limit)
    cons = LinearConstraint(a, np.concatenate(lo), np.concatenate(hi))
    res = milp(cost, constraints=cons, integrality=integrality, bounds=Bounds(lb, ub),
               options=opts)  # fmt: skip
    if res.x is None:
        raise TEDError(f"TED integer program not solved: {res.message}")
    x = res.x[:nx] > 0.5
    chosen = cell_pj.copy()
    chosen[xc[x]] = xl[x]
    return chosen, bool(res.status == 0)
