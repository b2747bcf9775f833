"""Exact expected mutual information under the hypergeometric (permutation) model.

``EMI = sum_i sum_j sum_k (k/N) ln(N k / (a_i b_j)) P(k; N, a_i, b_j)`` (Vinh et al. 2010, the
formula of scikit-learn's ``expected_mutual_information``), in nats.

Fast evaluation, exact to ~1e-15 relative per term:

* ``sum_k k P(k) = a b / N`` for every pair, so the ``ln(N / (a b))`` part sums in closed form
  to ``H(a) + H(b) - ln N``; only ``E[K ln K]`` needs the distribution, and only for pairs with
  ``min(a, b) >= 2`` (``K ln K = 0`` for ``K <= 1``).
* Segments are grouped by size: the sum runs over distinct ``(a, b)`` size pairs with weights
  ``count(a) * count(b)``, and the pairs are cut into rectangles (sizes growing by at most
  ``_RATIO`` along each side).
* Pairs with ``lambda = a b / N <= 1`` use Newton's forward-difference series of ``k ln k``,
  exact at integers: ``E[K ln K] = sum_r c_r E[(K)_r]`` with the separable falling factorial
  moments ``E[(K)_r] = (a)_r (b)_r / (N)_r <= lambda^r``; over a rectangle the double sum
  factorises, so it costs ``O(terms x (#a + #b))`` instead of ``O(#a x #b)``; 24 terms leave
  less than ``1/24! ~ 2e-24``.
* Every other pair is evaluated through the pmf ratio recursion
  ``P(k+1)/P(k) = (a-k)(b-k) / ((k+1)(N-a-b+k+1))`` from the mode (relative value 1), upward
  and downward until the terms fall below ``1e-18`` of the mode's, normalised by the summed
  relative pmf. No log-gamma of numbers ~N is evaluated, so the accuracy does not degrade with
  N (scikit-learn's log-gamma differences lose ~8 digits at N = 1e8). The recursion is also
  defined for real sizes: ``E[K ln K](a, b)`` is a smooth function on a rectangle, so a large
  rectangle is interpolated with a tensor Chebyshev polynomial of degree ``_DEG`` whose node
  values come from the recursion; the weighted double sum then factorises. The interpolant
  is accepted only when its highest Chebyshev coefficients are below ``_CHEB_TOL`` (2e-15)
  of the values (they fall ~10x per degree on such rectangles); otherwise the rectangle is
  halved, down to pair-by-pair evaluation. The ~13 million distinct size pairs of the
  benchmark pair (100 x 1024 x 1024) cost a few tens of thousands of recursions, ~0.2 s.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, localcontext
from functools import lru_cache
from math import comb, factorial

import numpy as np

__all__ = ["expected_mutual_information"]

_TOL = 1e-18
_DEG = 15  # Chebyshev degree per size axis on a rectangle of pairs
_CHUNK = 1 << 16  # pairs per vectorised recursion call
_CHEB_TOL = 2e-15  # accepted size of the highest Chebyshev coefficients (relative)
_L = 1.0  # pairs with a*b/N <= _L use the factorial-moment series (no cancellation)
_RATIO = 1.5  # growth of the sizes along each side of one rectangle of pairs
_R = 24  # series terms: |c_r| E[(K)_r] <= L^r / r! < 2e-24 beyond


@lru_cache(maxsize=1)
def _newton_coefficients() -> np.ndarray:
    """``c_r = Delta^r f(0) / r!`` for ``f(k) = k ln k``, r = 0.._R (100-digit decimals).

    Newton's forward-difference formula is exact at integers, so
    ``E[K ln K] = sum_r c_r E[(K)_r]`` and for the hypergeometric distribution the falling
    factorial moments are separable: ``E[(K)_r] = (a)_r (b)_r / (N)_r``.
    """
    out = np.zeros(_R + 1)
    with localcontext() as ctx:
        ctx.prec = 50
        f = [Decimal(0)] + [Decimal(j) * Decimal(j).ln() for j in range(1, _R + 1)]
        for r in range(2, _R + 1):
            d = sum((-1) ** (r - j) * comb(r, j) * f[j] for j in range(r + 1))
            out[r] = float(d / factorial(r))
    return out


def _series_block(
    a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray, a_hi: float, beta: float, n: float
) -> float:
    """``sum_ij wa_i wb_j E[K ln K]`` over a rectangle of pairs with ``a_i b_j / N <= L``.

    ``E[(K)_r] = prod_{t<r} (a-t)(b-t)/(N-t) = U_r(a) V_r(b) M_r`` with ``U`` = prod of
    ``(a-t)/a_hi`` and ``V`` = prod of ``(b-t)/beta`` (both <= 1, no overflow) and
    ``M_r = prod_{t<r} a_hi beta / (N - t)``.
    """
    c = _newton_coefficients()
    r_max = int(min(_R, a.max(), b.max(), n))
    if r_max < 2:
        return 0.0
    t = np.arange(r_max, dtype=np.float64)[:, None]
    u = np.cumprod((a[None, :] - t) / a_hi, axis=0) @ wa  # row r-1 -> U_r
    v = np.cumprod((b[None, :] - t) / beta, axis=0) @ wb
    m = np.cumprod(a_hi * beta / (n - t[:, 0]))
    terms = c[1 : r_max + 1] * u * v * m
    return float(terms[1:].sum())


def _klnk(k: np.ndarray) -> np.ndarray:
    out = np.zeros_like(k)
    pos = k > 1
    np.log(k, out=out, where=pos)
    out *= k
    return out


def _sweep(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, mode: np.ndarray, up: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Relative pmf mass and ``sum q k ln k`` strictly above (``up``) or below the mode.

    ``q`` is the pmf relative to ``P(mode) = 1``. Stops per pair when ``q < _TOL`` and its
    term is below ``_TOL`` of the mode's; the pmf is log-concave, so the ratios keep falling
    and the remaining tail is below ``q r / (1 - r)`` with the current ratio ``r``.
    """
    m = a.size
    sq_out = np.zeros(m)
    acc_out = np.zeros(m)
    idx = np.arange(m)
    k = mode.copy()
    q = np.ones(m)
    sq = np.zeros(m)
    acc = np.zeros(m)
    ref = np.maximum(_klnk(mode), 1.0) * _TOL
    it = 0
    while idx.size:
        if up:  # P(k+1)/P(k) = (a-k)(b-k) / ((k+1)(N-a-b+k+1))
            r = (a - k) * (b - k)
            k = k + 1.0
            r /= k * (c + k)
        else:  # P(k-1)/P(k) = k (N-a-b+k) / ((a-k+1)(b-k+1))
            r = k * (c + k)
            r /= (a - k + 1.0) * (b - k + 1.0)
            k = k - 1.0
        np.maximum(r, 0.0, out=r)  # past the support (reached only in real-size evaluation)
        q *= r
        sq += q
        acc += q * _klnk(np.maximum(k, 0.0))
        it += 1
        if it % 4 == 0 or it == 1:
            done = ((q < _TOL) & (q * _klnk(np.maximum(k, 0.0)) < ref)) | (q == 0.0)
            if done.any():
                sq_out[idx[done]] = sq[done]
                acc_out[idx[done]] = acc[done]
                keep = ~done
                idx, a, b, c, k, q, sq, acc, ref = (
                    x[keep] for x in (idx, a, b, c, k, q, sq, acc, ref)
                )
    return sq_out, acc_out


def _expect_klnk(a: np.ndarray, b: np.ndarray, n: float) -> np.ndarray:
    """``E[K ln K]`` of each pair ``(a, b)`` (float64 arrays) by the ratio recursion.

    Also valid for real ``a``, ``b`` whose pmf is negligible near the support bounds (the
    smooth extension used by :func:`_cheb_rect`).
    """
    if a.size == 0:
        return np.zeros(0)
    c = n - a - b
    lo = np.maximum(0.0, a + b - n)
    hi = np.minimum(a, b)
    mode = np.clip(np.floor((a + 1.0) * (b + 1.0) / (n + 2.0)), np.ceil(lo), np.floor(hi))
    su, au = _sweep(a, b, c, mode, True)
    sd, ad = _sweep(a, b, c, mode, False)
    return (_klnk(mode) + au + ad) / (1.0 + su + sd)


def _expect_batched(a: np.ndarray, b: np.ndarray, n: float, n_threads: int) -> np.ndarray:
    """:func:`_expect_klnk` over chunks of pairs spread over threads (numpy releases the GIL)."""
    if a.size <= _CHUNK or n_threads <= 1:
        return _expect_klnk(a, b, n)
    bounds = list(range(0, a.size, _CHUNK))
    with ThreadPoolExecutor(min(n_threads, len(bounds))) as ex:
        parts = list(
            ex.map(lambda s: _expect_klnk(a[s : s + _CHUNK], b[s : s + _CHUNK], n), bounds)
        )
    return np.concatenate(parts)


def _axis_nodes(v: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Interpolation nodes of one size axis: the sizes themselves when there are few, else
    Chebyshev points of the first kind on ``[v[0], v[-1]]`` with their barycentric weights."""
    if v.size <= _DEG + 1:
        return v, None
    th = np.pi * (np.arange(_DEG + 1) + 0.5) / (_DEG + 1)
    x = 0.5 * (v[0] + v[-1]) + 0.5 * (v[-1] - v[0]) * np.cos(th)
    return x, (-1.0) ** np.arange(_DEG + 1) * np.sin(th)


def _project(v: np.ndarray, w: np.ndarray, nodes: np.ndarray, bw: np.ndarray | None) -> np.ndarray:
    """``sum_i w_i l_j(v_i)`` for every node j (Lagrange basis, barycentric formula)."""
    if bw is None:
        return w
    d = v[:, None] - nodes[None, :]
    hit = d == 0.0
    d[hit] = 1.0
    t = bw[None, :] / d
    lag = t / t.sum(axis=1, keepdims=True)
    rows = hit.any(axis=1)
    lag[rows] = hit[rows].astype(np.float64)
    return w @ lag


def _cheb_tail(g: np.ndarray, a_cheb: bool, b_cheb: bool) -> float:
    """Largest of the two highest-degree Chebyshev coefficients along the interpolated axes."""
    m = _DEG + 1
    th = np.pi * (np.arange(m) + 0.5) / m
    t = np.cos(np.arange(m)[:, None] * th[None, :]) * (2.0 / m)
    c = g
    if a_cheb:
        c = t @ c
    if b_cheb:
        c = c @ t.T
    tail = 0.0
    if a_cheb:
        tail = max(tail, float(np.abs(c[-2:, :]).max()))
    if b_cheb:
        tail = max(tail, float(np.abs(c[:, -2:]).max()))
    return tail


def _smooth_enough(a_lo: float, a_hi: float, b_lo: float, b_hi: float, n: float) -> bool:
    """Whether the pmf of every corner is negligible (12 sigma) far from the upper support end.

    The lower end k = 0 is reached exactly by the recursion for real sizes too; only
    ``a + b < N`` (no lower bound above 0) and a negligible pmf near ``min(a, b)`` are needed.
    """
    if a_hi + b_hi >= n:
        return False
    for a in (a_lo, a_hi):
        for b in (b_lo, b_hi):
            mu = a * b / n
            sd = math.sqrt(mu * (1 - a / n) * (1 - b / n))
            if mu + 12 * sd + 2 > min(a, b):
                return False
    return True


Rect = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _split(r: Rect) -> list[Rect]:
    ra, rw, cb, cw = r
    if ra.size >= cb.size:
        h = ra.size // 2
        return [(ra[:h], rw[:h], cb, cw), (ra[h:], rw[h:], cb, cw)]
    h = cb.size // 2
    return [(ra, rw, cb[:h], cw[:h]), (ra, rw, cb[h:], cw[h:])]


def _rects_sum(rects: list[Rect], n: float, n_threads: int) -> float:
    """``sum rw_i cw_j E[K ln K](ra_i, cb_j)`` over rectangles of size pairs.

    A large rectangle is Chebyshev-interpolated: ``E[K ln K]`` extends smoothly to real sizes
    (the same recursion), its values at ``(_DEG+1)^2`` nodes are computed exactly, and the
    weighted sum factorises into ``(rw @ La) G (Lb^T cw)``. The interpolant is accepted only when
    the two highest Chebyshev coefficients along each axis are below ``_CHEB_TOL`` of the
    largest node value (the coefficients fall ~10x per degree, so the error is of that order);
    otherwise the rectangle is halved. Small rectangles, those that keep failing and those
    whose pmf reaches a support bound are summed pair by pair. All node and pair evaluations
    of a round are batched into one vectorised call.
    """
    total = 0.0
    exact: list[Rect] = []
    todo = rects
    for depth in range(8):
        cand = []
        for r in todo:
            ra, _, cb, _ = r
            nodes_n = min(ra.size, _DEG + 1) * min(cb.size, _DEG + 1)
            if (
                depth == 7
                or ra.size * cb.size <= 2 * nodes_n
                or not _smooth_enough(ra[0], ra[-1], cb[0], cb[-1], n)
            ):
                exact.append(r)
            else:
                cand.append(r)
        if not cand:
            break
        grids = [(_axis_nodes(r[0]), _axis_nodes(r[2])) for r in cand]
        xa = np.concatenate([np.repeat(ga[0], gb[0].size) for ga, gb in grids])
        xb = np.concatenate([np.tile(gb[0], ga[0].size) for ga, gb in grids])
        g_flat = _expect_batched(xa, xb, n, n_threads)
        todo = []
        pos = 0
        for r, (ga, gb) in zip(cand, grids, strict=True):
            g = g_flat[pos : pos + ga[0].size * gb[0].size].reshape(ga[0].size, gb[0].size)
            pos += g.size
            if _cheb_tail(g, ga[1] is not None, gb[1] is not None) <= _CHEB_TOL * np.abs(g).max():
                total += float(_project(r[0], r[1], *ga) @ g @ _project(r[2], r[3], *gb))
            else:
                todo += _split(r)
    if exact:
        a = np.concatenate([np.repeat(ra, cb.size) for ra, _, cb, _ in exact])
        b = np.concatenate([np.tile(cb, ra.size) for ra, _, cb, _ in exact])
        w = np.concatenate([np.outer(rw, cw).ravel() for _, rw, _, cw in exact])
        total += float(np.dot(w, _expect_batched(a, b, n, n_threads)))
    return total


def expected_mutual_information(
    gt_sizes: np.ndarray, pred_sizes: np.ndarray, n_threads: int | None = None
) -> float:
    """Exact expected mutual information (nats) of two labellings with the given cluster sizes.

    Parameters
    ----------
    gt_sizes, pred_sizes : ndarray
        Voxel counts of every gt / pred cluster (each sums to N).
    n_threads : int, optional
        Worker threads (default: up to 2 per available CPU set).

    Returns
    -------
    float
        ``E[MI]`` under random permutations with fixed marginals.

    Examples
    --------
    >>> round(expected_mutual_information(np.array([2, 2]), np.array([2, 2])), 6)
    0.231049
    """
    a_all = np.asarray(gt_sizes, dtype=np.int64)
    b_all = np.asarray(pred_sizes, dtype=np.int64)
    a_all = a_all[a_all > 0]
    b_all = b_all[b_all > 0]
    n_int = int(a_all.sum())
    if n_int == 0 or a_all.size <= 1 and b_all.size <= 1:
        return 0.0
    n = float(n_int)
    fa = a_all.astype(np.float64)
    fb = b_all.astype(np.float64)
    # closed-form part: sum_ij E[K] ln(N/(ab)) / N = H(a) + H(b) - ln N
    h_a = np.log(n) - float(np.dot(fa, np.log(fa))) / n
    h_b = np.log(n) - float(np.dot(fb, np.log(fb))) / n
    closed = h_a + h_b - np.log(n)

    ua, wa = np.unique(a_all[a_all >= 2], return_counts=True)
    ub, wb = np.unique(b_all[b_all >= 2], return_counts=True)
    if ua.size == 0 or ub.size == 0:
        return float(closed)
    ua_f, wa_f = ua.astype(np.float64), wa.astype(np.float64)
    ub_f, wb_f = ub.astype(np.float64), wb.astype(np.float64)

    # pairs with lambda = ab/N <= _L: exact factorial-moment series on rectangles of pairs;
    # the remaining pairs (lambda > ~_L / _RATIO): rectangles of ratio _RATIO in both sizes,
    # Chebyshev-interpolated or pair by pair (see _rects_sum).
    series = 0.0
    rects = []
    i0 = 0
    while i0 < ua.size:
        i1 = int(np.searchsorted(ua_f, ua_f[i0] * _RATIO, side="right"))
        i1 = max(i1, i0 + 1)
        a_hi = ua_f[i1 - 1]
        beta = _L * n / a_hi
        jmax = int(np.searchsorted(ub_f, beta, side="right"))
        if jmax:
            series += _series_block(
                ua_f[i0:i1], wa_f[i0:i1], ub_f[:jmax], wb_f[:jmax], a_hi, beta, n
            )
        j0 = jmax
        while j0 < ub.size:
            j1 = max(int(np.searchsorted(ub_f, ub_f[j0] * _RATIO, side="right")), j0 + 1)
            rects.append((ua_f[i0:i1], wa_f[i0:i1], ub_f[j0:j1], wb_f[j0:j1]))
            j0 = j1
        i0 = i1

    if n_threads is None:
        from .table import _n_threads

        n_threads = _n_threads(None)
    s = _rects_sum(rects, n, n_threads) + series
    return float(closed + s / n)
