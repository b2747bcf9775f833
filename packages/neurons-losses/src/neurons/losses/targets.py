"""Training targets derived from instance label maps, batched torch on the labels' device.

Every function takes ``labels (B, *spatial)`` (2-D ``(B, H, W)`` or 3-D ``(B, D, H, W)``,
integer ids, ``<= 0`` = background) and works for both dimensionalities.  Vector targets use
the array axis order (``(z, y, x)`` in 3-D, ``(y, x)`` in 2-D) in voxel units.  Nothing loops
over instances in Python: per-instance quantities are segment reductions or label-aware
(separable) passes in which a voxel only sees voxels of its own instance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from ._core import LossConfigError, LossInputError, Segments, check_labels, segment_instances

__all__ = [
    "compact_labels",
    "boundary_map",
    "instance_edt",
    "normalized_edt",
    "edt_gradient",
    "centroids",
    "centroid_directions",
    "skeletonize",
    "nearest_skeleton",
    "skeleton_directions",
    "structure_tensor",
    "geometry_targets",
    "skeleton_targets",
]

_INF = float("inf")


def _labels(labels: Tensor) -> Tensor:
    return check_labels(labels, "labels")


def compact_labels(labels: Tensor, seg: Segments | None = None) -> tuple[Tensor, Segments]:
    """Renumber a batch to ``1..K`` over the whole batch (0 = background), as int64.

    Examples
    --------
    >>> compact_labels(torch.tensor([[[0, 2**60, 5]]]))[0].tolist()
    [[[0, 2, 1]]]
    """
    labels = _labels(labels)
    seg = segment_instances(labels) if seg is None else seg
    idx = seg.index.reshape(labels.shape)
    return torch.where(idx == seg.num, torch.zeros_like(idx), idx + 1), seg


def boundary_map(labels: Tensor, seg: Segments | None = None) -> Tensor:
    """Morphological gradient of the label map: ``max != min`` over the full 3^S window.

    Marks voxels whose 8/26-neighbourhood (replicate padding at the patch border) holds a
    different label, background included.  Ids are compacted first, so the float pooling is exact.

    Returns
    -------
    Tensor
        ``(B, *spatial)`` bool.

    Examples
    --------
    >>> boundary_map(torch.tensor([[[1, 1, 2, 2]]])).int().tolist()
    [[[0, 1, 1, 0]]]
    """
    comp, seg = compact_labels(labels, seg)
    s = comp.dim() - 1
    dtype = torch.float32 if seg.num < 2**24 else torch.float64
    x = comp.to(dtype).unsqueeze(1)
    x = F.pad(x, (1, 1) * s, mode="replicate")
    pool = F.max_pool2d if s == 2 else F.max_pool3d
    hi = pool(x, 3, stride=1)
    lo = -pool(-x, 3, stride=1)
    return (hi != lo)[:, 0]


# --------------------------------------------------------------------------- EDT


def _edt_pass(f: Tensor | None, lab: Tensor, axis: int, spacing: float, chunk: int) -> Tensor:
    """One label-aware pass of the separable exact EDT along ``axis`` (squared distances).

    ``new(x) = min( min_{y in run(x)} (x-y)^2 h^2 + f(y),  (distance to the run's ends)^2 )``
    where a run is a maximal segment of equal labels along the axis.  Voxels beyond a
    different label can never be closer than that label's voxel (cost 0), so this is the
    exact per-instance update.
    """
    lm = lab.movedim(axis, -1)
    out_shape = lm.shape
    n = out_shape[-1]
    lines = lm.reshape(-1, n)
    dev = lab.device
    pos = torch.arange(n, device=dev)
    start = torch.ones_like(lines, dtype=torch.bool)
    start[:, 1:] = lines[:, 1:] != lines[:, :-1]
    end = torch.ones_like(lines, dtype=torch.bool)
    end[:, :-1] = lines[:, :-1] != lines[:, 1:]
    run_start = torch.cummax(torch.where(start, pos, 0), dim=1).values
    run_end = torch.cummin(torch.where(end, pos, n - 1).flip(1), dim=1).values.flip(1)
    fdt = torch.float32
    left = torch.where(run_start > 0, (pos - run_start + 1).to(fdt), _INF)
    right = torch.where(run_end < n - 1, (run_end + 1 - pos).to(fdt), _INF)
    res = torch.minimum(left, right).pow_(2).mul_(spacing * spacing)
    if f is not None:
        fl = f.movedim(axis, -1).reshape(-1, n)
        run_id = torch.cumsum(start, 1)
        # the optimum y satisfies (x-y)^2 h^2 <= min(f(x), ends(x)): bound the search window
        bound = torch.minimum(fl, res)
        fin = bound[torch.isfinite(bound)]
        hi = float(fin.max()) if fin.numel() and bool(torch.isfinite(bound).all()) else _INF
        r = n - 1 if not math.isfinite(hi) else min(n - 1, int(math.sqrt(hi) / spacing) + 1)
        w = 2 * r + 1
        t = torch.arange(-r, r + 1, device=dev)
        d2 = t.to(fdt).pow(2) * (spacing * spacing)
        fpad = F.pad(fl, (r, r), value=_INF)
        rpad = F.pad(run_id, (r, r), value=-1)
        rows = max(1, chunk // (n * w))
        inner = torch.empty_like(res)
        for r0 in range(0, lines.shape[0], rows):  # chunks of lines (memory bound), not instances
            r1 = min(r0 + rows, lines.shape[0])
            cost = fpad[r0:r1].unfold(1, w, 1) + d2
            cost = cost.masked_fill(rpad[r0:r1].unfold(1, w, 1) != run_id[r0:r1].unsqueeze(2), _INF)
            inner[r0:r1] = cost.amin(-1)
        res = torch.minimum(res, inner)
    return res.reshape(out_shape).movedim(-1, axis)


def _sampling(sampling: float | Sequence[float] | None, s: int) -> tuple[float, ...]:
    if sampling is None:
        return (1.0,) * s
    if isinstance(sampling, int | float):
        return (float(sampling),) * s
    sp = tuple(float(v) for v in sampling)
    if len(sp) != s or any(v <= 0 for v in sp):
        raise LossConfigError(
            f"sampling={sampling!r}: expected {s} positive spacings in array axis order"
        )
    return sp


def instance_edt(
    labels: Tensor,
    sampling: float | Sequence[float] | None = None,
    *,
    squared: bool = False,
    chunk: int = 2**24,
    seg: Segments | None = None,
) -> Tensor:
    """Exact Euclidean distance transform of every instance, all at once.

    For a voxel of instance k: the distance to the nearest voxel (inside the patch) whose
    label is not k — exactly ``scipy.ndimage.distance_transform_edt(labels == k)`` on the
    instance's voxels.  Background is 0.  An instance that fills the whole patch (no other
    label anywhere) gets 0, where SciPy's result is undefined.

    Parameters
    ----------
    labels : Tensor
        ``(B, *spatial)`` integer ids.
    sampling : float or sequence of float, optional
        Voxel spacing per axis (array order), as SciPy's ``sampling``.
    squared : bool
        Return squared distances.
    chunk : int
        Max elements of one temporary ``(lines, L, L)`` block (memory bound).

    Returns
    -------
    Tensor
        ``(B, *spatial)`` float32.

    Examples
    --------
    >>> instance_edt(torch.tensor([[[0, 3, 3, 3, 0]]])).tolist()
    [[[0.0, 1.0, 2.0, 1.0, 0.0]]]
    """
    labels = _labels(labels)
    s = labels.dim() - 1
    sp = _sampling(sampling, s)
    lab, _ = compact_labels(labels, seg)
    f = None
    for a in range(s):
        f = _edt_pass(f, lab, a + 1, sp[a], chunk)
    assert f is not None
    fg = lab > 0
    f = torch.where(fg & torch.isfinite(f), f, torch.zeros_like(f))
    return f if squared else f.sqrt()


def _segment_max(values: Tensor, seg: Segments) -> Tensor:
    out = values.new_zeros(seg.num + 1)
    return out.scatter_reduce(0, seg.index, values.reshape(-1), "amax", include_self=True)


def normalized_edt(
    labels: Tensor,
    sampling: float | Sequence[float] | None = None,
    edt: Tensor | None = None,
    seg: Segments | None = None,
) -> Tensor:
    """Per-instance EDT divided by that instance's maximum (values in [0, 1], 0 on background).

    Examples
    --------
    >>> normalized_edt(torch.tensor([[[0, 3, 3, 3, 0]]])).tolist()
    [[[0.0, 0.5, 1.0, 0.5, 0.0]]]
    """
    labels = _labels(labels)
    seg = segment_instances(labels) if seg is None else seg
    d = instance_edt(labels, sampling, seg=seg) if edt is None else edt
    mx = _segment_max(d, seg)
    den = mx[seg.index].reshape(d.shape)
    return torch.where(den > 0, d / den.clamp_min(1e-12), torch.zeros_like(d))


def _shift_same(lab: Tensor, axis: int, step: int) -> tuple[Tensor, Tensor]:
    """(neighbour has same label, neighbour index valid) for the neighbour at +step along axis."""
    n = lab.shape[axis]
    nb = torch.roll(lab, -step, dims=axis)
    idx = torch.arange(n, device=lab.device)
    inside = (idx + step >= 0) & (idx + step < n)
    shape = [1] * lab.dim()
    shape[axis] = n
    inside = inside.reshape(shape)
    return (nb == lab) & inside, inside.expand_as(lab)


def edt_gradient(
    labels: Tensor,
    edt: Tensor | None = None,
    sampling: float | Sequence[float] | None = None,
) -> Tensor:
    """Gradient of each instance's own EDT (``numpy.gradient`` of ``EDT_k``, zero outside k).

    Central differences inside the patch, one-sided at its border; a neighbour of another
    label contributes 0, exactly as the gradient of the per-instance distance map.

    Returns
    -------
    Tensor
        ``(B, S, *spatial)`` in array axis order; 0 on background.

    Examples
    --------
    >>> edt_gradient(torch.tensor([[[0, 3, 3, 3, 0]]]))[0, :, 0].tolist()
    [[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, -1.0, 0.0]]
    """
    labels = _labels(labels)
    s = labels.dim() - 1
    sp = _sampling(sampling, s)
    d = instance_edt(labels, sp) if edt is None else edt
    fg = labels > 0
    out = []
    for a in range(s):
        ax = a + 1
        n = labels.shape[ax]
        if n == 1:
            out.append(torch.zeros_like(d))
            continue
        same_p, in_p = _shift_same(labels, ax, 1)
        same_m, in_m = _shift_same(labels, ax, -1)
        vp = torch.where(same_p, torch.roll(d, -1, dims=ax), torch.zeros_like(d))
        vm = torch.where(same_m, torch.roll(d, 1, dims=ax), torch.zeros_like(d))
        g = torch.where(in_p & in_m, (vp - vm) / (2 * sp[a]),
                        torch.where(in_p, (vp - d) / sp[a], (d - vm) / sp[a]))
        out.append(torch.where(fg, g, torch.zeros_like(g)))
    return torch.stack(out, 1)


# ------------------------------------------------------------------- centroids


def _coords(shape: Sequence[int], device: torch.device, dtype=torch.float32) -> Tensor:
    """``(N, S)`` voxel coordinates of a spatial shape, array order."""
    axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape))


def centroids(labels: Tensor) -> tuple[Tensor, Segments]:
    """Per-instance centroids ``(K, S)`` (array order) and the :class:`Segments` they index.

    Examples
    --------
    >>> c, seg = centroids(torch.tensor([[[0, 4, 4, 4]]]))
    >>> c.tolist()
    [[0.0, 2.0]]
    """
    labels = _labels(labels)
    seg = segment_instances(labels)
    b = labels.shape[0]
    xyz = _coords(labels.shape[1:], labels.device, torch.float64).repeat(b, 1)
    sums = xyz.new_zeros(seg.num + 1, xyz.shape[1]).index_add_(0, seg.index, xyz)
    return (sums[: seg.num] / seg.counts.double().clamp_min(1).unsqueeze(1)).float(), seg


def _unit(v: Tensor, dim: int = 1, eps: float = 1e-6) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=dim, keepdim=True).clamp_min(eps)


def centroid_directions(labels: Tensor) -> Tensor:
    """Unit vectors from each voxel to its instance's centroid, ``(B, S, *spatial)``.

    The centroid voxel itself (distance < 1e-6) and background get 0.

    Examples
    --------
    >>> centroid_directions(torch.tensor([[[0, 4, 4, 4]]]))[0, 1, 0].tolist()
    [0.0, 1.0, 0.0, -1.0]
    """
    labels = _labels(labels)
    c, seg = centroids(labels)
    b, sp = labels.shape[0], labels.shape[1:]
    xyz = _coords(sp, labels.device).repeat(b, 1)
    cpad = torch.cat([c, c.new_zeros(1, c.shape[1])])
    v = cpad[seg.index] - xyz
    v = torch.where((seg.index < seg.num).unsqueeze(1), v, torch.zeros_like(v))
    v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(1e-6)
    return v.reshape(b, *sp, -1).movedim(-1, 1).contiguous()


# -------------------------------------------------------------------- skeleton


@lru_cache(maxsize=4)
def _cube(s: int) -> dict[str, object]:
    """Bit layout of the 3^S neighbourhood (bit ``sum_a (o_a + 1) 3^(S-1-a)``) and masks."""
    offs = list(itertools.product((-1, 0, 1), repeat=s))
    bit = {o: sum((c + 1) * 3 ** (s - 1 - a) for a, c in enumerate(o)) for o in offs}
    centre = 1 << bit[(0,) * s]
    n18 = sum(1 << bit[o] for o in offs if 0 < sum(map(abs, o)) <= 2)
    face = sum(1 << bit[o] for o in offs if sum(map(abs, o)) == 1)
    shifts = []
    for a in range(s):
        up = sum(1 << bit[o] for o in offs if o[a] < 1)  # may move to o_a + 1
        down = sum(1 << bit[o] for o in offs if o[a] > -1)
        shifts.append((3 ** (s - 1 - a), up, down))
    return {"offsets": offs, "bits": [bit[o] for o in offs], "centre": centre,
            "n18": n18, "face": face, "shifts": shifts}


def _dilate(b: Tensor, shifts: list[tuple[int, int, int]], box: bool) -> Tensor:
    """Bitboard dilation inside the 3^S cube: full box (26/8-adjacency) or faces (6/4)."""
    out = b
    for st, up, down in shifts:
        src = out if box else b
        out = out | ((src & up) << st) | ((src & down) >> st)
    return out


def _flood(seed: Tensor, allowed: Tensor, shifts: list[tuple[int, int, int]], box: bool) -> Tensor:
    cur = seed
    for _ in range(27):  # at most the number of cube voxels; usually 2-4 steps
        nxt = _dilate(cur, shifts, box) & allowed
        if torch.equal(nxt, cur):
            break
        cur = nxt
    return cur


def _simple(packed: Tensor, s: int) -> Tensor:
    """Simple-point test (Bertrand) on bit-packed neighbourhoods, vectorised over candidates.

    Simple iff the foreground of the punctured neighbourhood is one 26(8)-connected component
    and exactly one 6(4)-connected background component of N18* (N8* in 2-D) touches a face
    neighbour of the centre.
    """
    t = _cube(s)
    shifts = t["shifts"]  # type: ignore[assignment]
    fg = packed & ~t["centre"]  # type: ignore[operator]
    seed = fg & -fg
    ok_fg = (fg != 0) & (_flood(seed, fg, shifts, True) == fg)  # type: ignore[arg-type]
    bg = ~packed & t["n18"]  # type: ignore[operator]
    face_bg = bg & t["face"]
    seed = face_bg & -face_bg
    reach = _flood(seed, bg, shifts, False)  # type: ignore[arg-type]
    ok_bg = (face_bg != 0) & ((reach & face_bg) == face_bg)
    return ok_fg & ok_bg


def skeletonize(labels: Tensor, max_iter: int | None = None) -> Tensor:
    """Topology-preserving curve skeletons of all instances at once (2-D and 3-D).

    Directional parallel sub-field thinning: each iteration visits the 2S face directions and,
    for each, the 2^S parity sub-fields; in one sub-field no two voxels are neighbours, so all
    its *simple* border voxels of that direction (Bertrand's
    test, 26/6 connectivity in 3-D, 8/4 in 2-D, evaluated on bit-packed neighbourhoods) that
    are not end points (one neighbour) are deleted simultaneously without changing any
    instance's topology.  Voxels of other instances count as background for a voxel, so all
    instances are thinned independently in the same pass; the patch border counts as
    background.  Stops when an iteration deletes nothing, so every remaining voxel is an end
    point or non-simple and the result is a fixed point (``skeletonize(ids * skel) == skel``).
    A full ``2^S`` block therefore survives only where each of its voxels is topologically
    needed (e.g. it separates one-voxel holes); none occurs on smooth hole-free shapes (tested).

    Parameters
    ----------
    labels : Tensor
        ``(B, *spatial)`` integer ids.
    max_iter : int, optional
        Upper bound on iterations (default: until stable).

    Returns
    -------
    Tensor
        ``(B, *spatial)`` bool skeleton; each instance's skeleton lies inside it and has the same
        number of (26/8-connected) components.

    Examples
    --------
    >>> skeletonize(torch.ones(1, 5, 9, dtype=torch.long))[0].sum(0).tolist()
    [0, 0, 1, 1, 1, 1, 1, 0, 0]
    """
    labels = _labels(labels)
    s = labels.dim() - 1
    t = _cube(s)
    comp, _ = compact_labels(labels)
    lab = F.pad(comp, (1, 1) * s)
    pshape = lab.shape
    flat = lab.reshape(-1).clone()
    dev = lab.device
    strides = lab.stride()[1:]
    offs = torch.tensor(t["offsets"], device=dev)  # type: ignore[arg-type]
    off_flat = (offs * torch.tensor(strides, device=dev)).sum(1)
    weights = torch.tensor([1 << b for b in t["bits"]], device=dev)  # type: ignore[union-attr]
    face_offs = [sg * strides[a] for a in range(s) for sg in (-1, 1)]
    per_sample = math.prod(pshape[1:])
    alive = torch.nonzero(flat).squeeze(1)
    iters = 0
    while alive.numel():
        iters += 1
        alive = alive[flat[alive] != 0]
        own = flat[alive]
        border = torch.zeros_like(own, dtype=torch.bool)
        for o in face_offs:
            border |= flat[alive + o] != own
        cand = alive[border]
        rem = cand % per_sample
        parity = torch.zeros_like(cand)
        for a in range(s):
            parity |= ((torch.div(rem, strides[a], rounding_mode="floor") % pshape[a + 1]) % 2) << a
        deleted = 0
        for fo, sub in itertools.product(face_offs, range(2**s)):
            c = cand[parity == sub]
            if c.numel() == 0:
                continue
            cl = flat[c]
            ok = (cl != 0) & (flat[c + fo] != cl)  # border in this direction now
            c, cl = c[ok], cl[ok]
            nb = flat[c.unsqueeze(1) + off_flat] == cl.unsqueeze(1)
            packed = (nb.long() * weights).sum(1)
            test = (nb.sum(1) >= 3) & (cl != 0)  # centre + >= 2 neighbours: not an end point
            gone = c[test & _simple(packed, s)]
            if gone.numel():
                flat[gone] = 0
                deleted += gone.numel()
        if deleted == 0 or (max_iter is not None and iters >= max_iter):
            break
    out = flat.reshape(pshape)
    inner = tuple([slice(None)] + [slice(1, -1)] * s)
    return out[inner] != 0


def _nearest_pass(
    f: Tensor, src: Tensor, lab: Tensor, axis: int, spacing: float, chunk: int
) -> tuple[Tensor, Tensor]:
    """One pass of the separable nearest-seed transform along ``axis`` within label runs.

    ``f`` (B, *sp) squared distance to the seed ``src`` (S, B, *sp) found so far (inf: none);
    returns ``min_{y in run(x)} f(y) + (x - y)^2 h^2`` and that ``y``'s seed.
    """
    lm = lab.movedim(axis, -1)
    shape = lm.shape
    n = shape[-1]
    lines = lm.reshape(-1, n)
    fl = f.movedim(axis, -1).reshape(-1, n)
    sl = src.movedim(axis + 1, -1).reshape(src.shape[0], -1, n)
    dev = lab.device
    start = torch.ones_like(lines, dtype=torch.bool)
    start[:, 1:] = lines[:, 1:] != lines[:, :-1]
    run_id = torch.cumsum(start, 1)
    pos = torch.arange(n, device=dev)
    run_start = torch.cummax(torch.where(start, pos, 0), dim=1).values
    finite = torch.isfinite(fl)
    if bool(((fl == 0) | ~finite).all()):  # seeds only (first pass): nearest seed left / right
        return _seed_pass(fl, sl, lines, run_start, pos, spacing, lab, src, axis)
    longest = int((pos - run_start).max()) if lines.numel() else 0
    r = max(0, min(n - 1, longest))
    if bool(finite.any()):  # the optimum y has (x - y)^2 h^2 <= f(x): bound the window by it
        r = min(r, int(math.sqrt(float(fl[finite].max())) / spacing) + 1)
    w = 2 * r + 1
    d2 = torch.arange(-r, r + 1, device=dev, dtype=fl.dtype).pow(2) * (spacing * spacing)
    fpad = F.pad(fl, (r, r), value=_INF)
    rpad = F.pad(run_id, (r, r), value=-1)
    spad = F.pad(sl, (r, r))
    out_f = torch.empty_like(fl)
    out_s = torch.empty_like(sl)
    rows = max(1, chunk // max(1, n * w))
    for r0 in range(0, lines.shape[0], rows):  # chunks of lines (memory bound), not instances
        r1 = min(r0 + rows, lines.shape[0])
        cost = fpad[r0:r1].unfold(1, w, 1) + d2
        cost = cost.masked_fill(rpad[r0:r1].unfold(1, w, 1) != run_id[r0:r1].unsqueeze(2), _INF)
        val, idx = cost.min(-1)
        out_f[r0:r1] = val
        at = (idx + pos).unsqueeze(0).expand(sl.shape[0], -1, -1)
        out_s[:, r0:r1] = spad[:, r0:r1].gather(2, at)
    f_new = out_f.reshape(shape).movedim(-1, axis)
    s_new = out_s.reshape(src.shape[0], *shape).movedim(-1, axis + 1)
    return f_new, s_new


def _seed_pass(
    fl: Tensor, sl: Tensor, lines: Tensor, run_start: Tensor, pos: Tensor, spacing: float,
    lab: Tensor, src: Tensor, axis: int,
) -> tuple[Tensor, Tensor]:
    """First pass (``f`` is 0 on seeds, inf elsewhere): the nearest seed in the same run on
    either side, by running max / min of seed positions (no window)."""
    n = lines.shape[1]
    seed = fl == 0
    end = torch.ones_like(seed)
    end[:, :-1] = lines[:, :-1] != lines[:, 1:]
    run_end = torch.cummin(torch.where(end, pos, n - 1).flip(1), dim=1).values.flip(1)
    left = torch.cummax(torch.where(seed, pos, -1), dim=1).values
    right = torch.cummin(torch.where(seed, pos, n).flip(1), dim=1).values.flip(1)
    left_ok = left >= run_start
    right_ok = right <= run_end
    dl = torch.where(left_ok, (pos - left).to(fl.dtype), _INF)
    dr = torch.where(right_ok, (right - pos).to(fl.dtype), _INF)
    use_right = dr < dl
    y = torch.where(use_right, right, left).clamp(0, n - 1)
    f_new = torch.minimum(dl, dr).pow(2) * (spacing * spacing)
    s_new = sl.gather(2, y.unsqueeze(0).expand(sl.shape[0], -1, -1))
    shape = lab.movedim(axis, -1).shape
    return (f_new.reshape(shape).movedim(-1, axis),
            s_new.reshape(src.shape[0], *shape).movedim(-1, axis + 1))


def _separable_nearest(labels: Tensor, sk: Tensor, sp: Sequence[float], chunk: int) -> Tensor:
    """Nearest own-instance seed by separable passes (one per axis, within label runs)."""
    s = labels.dim() - 1
    spatial = labels.shape[1:]
    grid = _coords(spatial, labels.device).T.reshape(s, 1, *spatial)
    best_f, best_src = None, None
    for order in (range(s), range(s - 1, -1, -1)):  # two staircase orders reach more voxels
        src = grid.expand(s, *labels.shape).clone()
        f = torch.where(sk, 0.0, _INF)
        for a in order:
            f, src = _nearest_pass(f, src, labels, a + 1, sp[a], chunk)
        if best_f is None or best_src is None:
            best_f, best_src = f, src
        else:
            closer = f < best_f
            best_f = torch.where(closer, f, best_f)
            best_src = torch.where(closer.unsqueeze(0), src, best_src)
    f, src = best_f, best_src.movedim(0, 1)
    fg = labels > 0
    lost = fg & ~torch.isfinite(f)  # no seed on a staircase: left to the exact search
    src = torch.where(fg.unsqueeze(1) & ~lost.unsqueeze(1), src, torch.zeros_like(src))
    return src, lost


def nearest_skeleton(
    labels: Tensor,
    skeleton: Tensor | None = None,
    sampling: float | Sequence[float] | None = None,
    chunk: int = 2**22,
    method: str = "exact",
) -> Tensor:
    """Coordinates of the nearest skeleton voxel *of the same instance*, ``(B, S, *spatial)``.

    ``method="exact"`` (Euclidean, optional anisotropic ``sampling``; ties -> lowest skeleton
    index): each instance voxel is compared with its own instance's skeleton voxels only, as one
    block-sparse batch of (voxel, skeleton voxel) pairs processed in memory-bounded chunks; its
    cost grows with (voxels x skeleton voxels) per instance.  ``method="separable"``: one
    label-aware 1-D pass per axis, as :func:`instance_edt` (each pass searches only within
    runs of equal label along the axis), so the seed found is the nearest one reachable by an
    axis-ordered staircase inside the instance: exact on box-like parts, at most slightly
    farther near concave ones (the tests bound the excess); the few voxels no staircase reaches
    get the exact search. Far cheaper: the training default.
    Background gets 0.  An instance with no voxel in a supplied ``skeleton`` uses all its own
    voxels as skeleton (every voxel maps to its own coordinates).

    Examples
    --------
    >>> lab = torch.tensor([[[1, 1, 1, 1, 1]]])
    >>> nearest_skeleton(lab, skeleton=torch.tensor([[[False, False, True, False, False]]]))[0, 1, 0].tolist()
    [2.0, 2.0, 2.0, 2.0, 2.0]
    """
    labels = _labels(labels)
    s = labels.dim() - 1
    sp = torch.tensor(_sampling(sampling, s), device=labels.device)
    if method not in ("exact", "separable"):
        raise LossConfigError(f"method={method!r}: expected 'exact' or 'separable'")
    if skeleton is None:
        skeleton = skeletonize(labels)
    b, spatial = labels.shape[0], labels.shape[1:]
    n = math.prod(spatial)
    seg = segment_instances(labels)
    out = torch.zeros(b * n, s, device=labels.device)
    if seg.num == 0:
        return out.reshape(b, *spatial, s).movedim(-1, 1).contiguous()
    coords = _coords(spatial, labels.device)
    inside = seg.index < seg.num
    sk = skeleton.reshape(-1).to(torch.bool) & inside
    # an instance without any skeleton voxel (possible in a caller-supplied skeleton) falls
    # back to its own voxels, so each of its voxels is its own nearest point
    has_sk = torch.bincount(seg.index[sk], minlength=seg.num + 1)[seg.index] > 0
    sk = sk | (inside & ~has_sk)
    only = None
    if method == "separable":
        sep, lost = _separable_nearest(labels, sk.reshape(labels.shape), sp.tolist(), chunk)
        if not bool(lost.any()):
            return sep
        out = sep.movedim(1, -1).reshape(b * n, s).contiguous()
        only = lost.reshape(-1)  # the few voxels no staircase reached: exact search for them
    sk_pos = torch.nonzero(sk).squeeze(1)
    sk_seg = seg.index[sk_pos]
    order = torch.argsort(sk_seg, stable=True)
    sk_pos, sk_seg = sk_pos[order], sk_seg[order]
    sk_cnt = torch.bincount(sk_seg, minlength=seg.num)
    sk_start = torch.cumsum(sk_cnt, 0) - sk_cnt
    sk_xyz = coords[sk_pos % n]
    vox = torch.nonzero((seg.index < seg.num) if only is None else only).squeeze(1)
    vseg = seg.index[vox]
    nper = sk_cnt[vseg]
    has = nper > 0
    vox, vseg, nper = vox[has], vseg[has], nper[has]
    csum = torch.cumsum(nper, 0)
    bounds = [0]
    total = int(csum[-1]) if csum.numel() else 0
    target = chunk
    while target < total:  # chunk boundaries over voxels (memory bound), not instances
        i = int(torch.searchsorted(csum, torch.tensor(target, device=csum.device)))
        i = max(i, bounds[-1] + 1)
        if i >= vox.numel():
            break
        bounds.append(i)
        target = int(csum[i - 1]) + chunk
    bounds.append(vox.numel())
    for v0, v1 in itertools.pairwise(bounds):
        if v1 <= v0:
            continue
        cnt = nper[v0:v1]
        rep = torch.repeat_interleave(torch.arange(v1 - v0, device=labels.device), cnt)
        first = torch.cumsum(cnt, 0) - cnt
        j = sk_start[vseg[v0:v1]][rep] + (torch.arange(rep.numel(), device=labels.device) - first[rep])
        diff = (coords[vox[v0:v1] % n][rep] - sk_xyz[j]) * sp
        d2 = (diff * diff).sum(1)
        best = d2.new_full((v1 - v0,), _INF).scatter_reduce(0, rep, d2, "amin")
        cand = torch.where(d2 == best[rep], j, torch.full_like(j, sk_pos.numel()))
        jbest = torch.full((v1 - v0,), sk_pos.numel(), device=labels.device, dtype=torch.long)
        jbest = jbest.scatter_reduce(0, rep, cand, "amin")
        out[vox[v0:v1]] = sk_xyz[jbest]
    return out.reshape(b, *spatial, s).movedim(-1, 1).contiguous()


def skeleton_directions(labels: Tensor, nearest: Tensor | None = None) -> Tensor:
    """Unit vectors from each voxel to its nearest same-instance skeleton voxel (0 on it / bg)."""
    labels = _labels(labels)
    if nearest is None:
        nearest = nearest_skeleton(labels)
    s = labels.dim() - 1
    grid = _coords(labels.shape[1:], labels.device).T.reshape(1, s, *labels.shape[1:])
    v = torch.where((labels > 0).unsqueeze(1), nearest - grid, torch.zeros_like(nearest))
    return v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(1e-6)


# ------------------------------------------------------------ structure tensor


def _gauss(sigma: float, truncate: float, device: torch.device) -> Tensor:
    r = max(1, int(truncate * sigma + 0.5))
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def _label_smooth(v: Tensor, lab: Tensor, kernel: Tensor) -> Tensor:
    """Separable smoothing ``(C, B, *sp)`` where every 1-D pass only mixes same-label voxels.

    Passes run along axis 0, 1, ... in turn; taps beyond the patch are dropped (zero padding).
    Per instance ``k`` (mask ``m``) this is ``m (G_{S-1} * (m ... (G_0 * (m f))))``: voxel ``q``
    reaches ``p`` only if its staircase path ``q -> (p_0, q_1, ...) -> (p_0, p_1, q_2, ...) ->
    ... -> p`` stays in ``k``.  This equals the exact ``G * (m f)`` at ``p`` when every voxel of
    ``k`` in the kernel window of ``p`` has its staircase in ``k`` (always for box-shaped
    instances); axis-convexity is not enough (see :func:`structure_tensor`).
    """
    r = (kernel.numel() - 1) // 2
    s = lab.dim() - 1
    for a in range(s):
        ax = a + 1
        n = lab.shape[ax]
        out = v * kernel[r]
        for t in range(1, min(r, n - 1) + 1):  # loop over filter taps, vectorised over voxels
            for sgn in (1, -1):
                k = sgn * t
                dst = [slice(None)] * lab.dim()
                src = [slice(None)] * lab.dim()
                dst[ax] = slice(max(0, -k), n - max(0, k))
                src[ax] = slice(max(0, k), n + min(0, k))
                same = (lab[tuple(src)] == lab[tuple(dst)]).to(v.dtype) * kernel[r + k]
                out[(slice(None), *dst)].addcmul_(v[(slice(None), *src)], same.unsqueeze(0))
        v = out
    return v


def structure_tensor(
    labels: Tensor,
    *,
    sigma: float = 5.0,
    truncate: float = 3.0,
    sampling: float | Sequence[float] | None = None,
    edt: Tensor | None = None,
) -> Tensor:
    """EDT structure tensor per voxel, blended to isotropy towards the medial axis.

    ``g`` = gradient of the instance's own EDT (:func:`edt_gradient`, physical units with
    ``sampling``); ``J = g g^T``; ``T = smooth(J) / max(smooth(1), 1e-10)``; with
    ``w = (D / D_max)^2``: diagonal ``(1 - w) T_ii + w trace(T)/S``, off-diagonal
    ``(1 - w) T_ij``.  Row-major ``S x S`` flattening in array axis order; background 0.

    ``smooth`` is an instance-restricted separable Gaussian (:func:`_label_smooth`): one 1-D
    pass per axis (axis 0 first) with the normalised kernel ``exp(-t^2 / 2 sigma^2)``,
    ``|t| <= r = int(truncate * sigma + 0.5)`` (``sigma`` in voxels on every axis; ``sampling``
    does not rescale it), zero padding at the patch border, each tap mixing only voxels of equal
    label.  For voxel ``p`` of instance ``k`` it sums ``G(p - q) f(q)`` over the voxels ``q``
    of ``k`` whose staircase path ``q -> (p_0, q_1, ..) -> (p_0, p_1, q_2, ..) -> .. -> p``
    stays inside ``k``.

    **Relation to the exact definition.**  The exact per-instance mask-normalised smoothing is
    ``T_exact = G * (J m_k) / G * m_k`` (``scipy.ndimage.gaussian_filter(..., sigma,
    truncate=truncate, mode="constant")`` on the mask ``m_k``).  ``T`` equals ``T_exact`` at
    every voxel ``p`` for which all voxels of ``k`` within the ``(2r+1)^S`` window of ``p``
    have their staircase inside ``k`` -- at all voxels of box-shaped instances (products of
    intervals), and at voxels at Chebyshev distance ``> r`` from every concave part of their
    instance.  Elsewhere it generally differs: it is a path-restricted average (voxels reached
    only around a concave corner, across a hole or between branches are dropped from both the
    numerator and the denominator).  Axis-convexity is *not* sufficient: an L-shaped instance
    differs near its inner corner.  It is always symmetric, positive semi-definite (a positive
    weighted mean of ``g g^T``, blended with an isotropic term), finite, and 0 off instances.
    An exact version is not used: without a loop over instances it needs a ``(2r+1)^S``-tap
    window sum per voxel (~30 000 taps at ``sigma=5`` in 3-D) or one full Gaussian per colour
    class of nearby instances, both far above the separable cost.

    Returns
    -------
    Tensor
        ``(B, S*S, *spatial)`` float32.
    """
    labels = _labels(labels)
    s = labels.dim() - 1
    d = instance_edt(labels, sampling) if edt is None else edt
    g = edt_gradient(labels, d, sampling)
    fg = (labels > 0).to(g.dtype)
    pairs = [(i, j) for i in range(s) for j in range(i, s)]
    chans = torch.stack([g[:, i] * g[:, j] for i, j in pairs] + [fg], 0)
    lab, _ = compact_labels(labels)
    sm = _label_smooth(chans, lab, _gauss(sigma, truncate, labels.device))
    den = sm[-1].clamp_min(1e-10)
    t = {p: sm[n] / den * fg for n, p in enumerate(pairs)}
    w = normalized_edt(labels, edt=d).pow(2)
    trace = sum(t[(i, i)] for i in range(s)) / s
    out = []
    for i in range(s):
        for j in range(s):
            v = t[(min(i, j), max(i, j))]
            out.append((1 - w) * v + w * trace * fg if i == j else (1 - w) * v)
    return torch.stack(out, 1)


# ------------------------------------------------------------------- bundles


def skeleton_targets(
    labels: Tensor,
    sampling: float | Sequence[float] | None = None,
    *,
    given: Mapping[str, Tensor] | None = None,
    method: str = "separable",
) -> dict[str, Tensor]:
    """Targets of :class:`~neurons.losses.SkeletonEmbeddingLoss`.

    Parameters
    ----------
    labels : Tensor
        ``(B, *spatial)`` ids.
    sampling : float or sequence, optional
        Voxel size for the EDT and the skeleton distances.
    given : mapping, optional
        Targets already at hand: they are returned as they are and only the missing ones are
        computed (``nearest`` from a given ``skeleton`` when there is one).
    method : {"separable", "exact"}
        :func:`nearest_skeleton` method (``"separable"``: fast, the training default).

    Returns
    -------
    dict
        ``skeleton`` (B, *sp) bool, ``nearest`` (B, S, *sp) nearest skeleton coordinates,
        ``edt_norm`` (B, *sp), ``edt_grad`` (B, S, *sp).
    """
    labels = _labels(labels)
    out = dict(given or {})
    if "nearest" not in out:
        if "skeleton" not in out:
            out["skeleton"] = skeletonize(labels)
        out["nearest"] = nearest_skeleton(labels, out["skeleton"], sampling, method=method)
    if "edt_norm" not in out or "edt_grad" not in out:
        d = instance_edt(labels, sampling)
        if "edt_norm" not in out:
            out["edt_norm"] = normalized_edt(labels, edt=d)
        if "edt_grad" not in out:
            out["edt_grad"] = edt_gradient(labels, d, sampling)
    return out


def geometry_targets(
    labels: Tensor,
    image: Tensor | None = None,
    *,
    dir_target: str = "centroid",
    direction: bool = True,
    structure: bool = True,
    sigma: float = 5.0,
    sampling: float | Sequence[float] | None = None,
    method: str = "separable",
) -> dict[str, Tensor]:
    """Targets of the geometry head / projection heads for a batch of label maps.

    Parameters
    ----------
    labels : Tensor
        ``(B, *spatial)`` ids.
    image : Tensor, optional
        ``(B, 1, *spatial)`` intensities; gives ``raw`` = ``[img, img, img, fg]`` (img in [0, 1]).
    dir_target : {"centroid", "skeleton"}
    direction, structure : bool
        Which targets to compute.
    sigma : float
        Structure-tensor smoothing (voxels).
    sampling : float or sequence, optional
        Voxel size (array order) for distances: anisotropic data, e.g. ``(30, 6, 6)``.
    method : {"separable", "exact"}
        :func:`nearest_skeleton` method for ``dir_target="skeleton"``.

    Returns
    -------
    dict
        ``direction`` (B, S, *sp), ``structure`` (B, S*S, *sp), ``raw`` (B, 4, *sp) as requested.

    Examples
    --------
    >>> t = geometry_targets(torch.randint(0, 3, (1, 8, 8)))
    >>> t["direction"].shape, t["structure"].shape
    (torch.Size([1, 2, 8, 8]), torch.Size([1, 4, 8, 8]))
    """
    labels = _labels(labels)
    if dir_target not in ("centroid", "skeleton"):
        raise LossConfigError(f"dir_target={dir_target!r}: expected 'centroid' or 'skeleton'")
    out: dict[str, Tensor] = {}
    if direction:
        if dir_target == "centroid":
            out["direction"] = centroid_directions(labels)
        else:
            near = nearest_skeleton(labels, sampling=sampling, method=method)
            out["direction"] = skeleton_directions(labels, near)
    if structure:
        out["structure"] = structure_tensor(labels, sigma=sigma, sampling=sampling)
    if image is not None:
        if image.dim() == labels.dim():
            image = image.unsqueeze(1)
        if tuple(image.shape[2:]) != tuple(labels.shape[1:]) or image.shape[1] != 1:
            raise LossInputError(
                f"image: shape {tuple(image.shape)} does not match labels {tuple(labels.shape)}; "
                "expected (B, 1, *spatial)"
            )
        img = image.float().clamp(0, 1)
        fg = (labels > 0).unsqueeze(1).to(img.dtype)
        out["raw"] = torch.cat([img, img, img, fg], 1)
    return out
