"""Expected mutual information: scikit-learn agreement where it runs, and every fast path
(factorial-moment series, Chebyshev rectangles, pair-by-pair recursion) against the plain
pair-by-pair recursion at connectomics N, where scikit-learn cannot run."""

from __future__ import annotations

import math
from fractions import Fraction
from math import comb

import numpy as np
import pytest
from scipy.sparse import coo_array

import neurons.metrics.emi as emi
from neurons.metrics import evaluate, expected_mutual_information


def _table_with_marginals(a: np.ndarray, b: np.ndarray) -> coo_array:
    """A contingency table with row sums ``a`` and column sums ``b`` (north-west corner rule)."""
    rows, cols, vals = [], [], []
    a, b = a.copy(), b.copy()
    i = j = 0
    while i < a.size and j < b.size:
        m = min(a[i], b[j])
        rows.append(i), cols.append(j), vals.append(m)
        a[i] -= m
        b[j] -= m
        i += a[i] == 0
        j += b[j] == 0
    return coo_array((vals, (rows, cols)), shape=(a.size, b.size))


def _sizes(rng, n_a, lo_a, hi_a, n_b, lo_b, hi_b):
    a = rng.integers(lo_a, hi_a, n_a)
    b = rng.integers(lo_b, hi_b, n_b)
    total = int(a.sum())
    # rescale b to the same total, fix the last cluster
    b = np.maximum(1, np.round(b * total / b.sum()).astype(np.int64))
    b[-1] += total - b.sum()
    assert b[-1] > 0
    return a, b


def _count_cheb(monkeypatch):
    used = {"n": 0}
    orig = emi._project

    def spy(*args):
        used["n"] += 1
        return orig(*args)

    monkeypatch.setattr(emi, "_project", spy)
    return used


def test_emi_against_sklearn_on_the_chebyshev_path(monkeypatch):
    from sklearn.metrics.cluster._expected_mutual_info_fast import (
        expected_mutual_information as ref,
    )

    rng = np.random.default_rng(3)
    a, b = _sizes(rng, 250, 50, 400, 300, 20, 400)
    used = _count_cheb(monkeypatch)
    got = expected_mutual_information(a, b)
    assert used["n"] > 0  # interpolated rectangles were used
    expect = ref(_table_with_marginals(a, b), int(a.sum()))
    # scikit-learn's log-gamma differences carry ~1e-10 relative error at this N (the exact
    # big-integer reference below agrees with our recursion to 1e-15)
    assert got == pytest.approx(expect, rel=1e-9)
    assert got == pytest.approx(_plain(a, b), rel=1e-13)


def _plain(a: np.ndarray, b: np.ndarray) -> float:
    """EMI with every distinct size pair by the ratio recursion (no series, no interpolation)."""
    n = float(a.sum())
    ua, wa = np.unique(a[a >= 2], return_counts=True)
    ub, wb = np.unique(b[b >= 2], return_counts=True)
    x = np.repeat(ua, ub.size).astype(np.float64)
    y = np.tile(ub, ua.size).astype(np.float64)
    s = float(np.dot(np.outer(wa, wb).ravel(), emi._expect_klnk(x, y, n)))
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    h = np.log(n) - (fa @ np.log(fa) + fb @ np.log(fb)) / n
    return float(h + s / n)


def test_emi_fast_paths_equal_plain_recursion_at_large_n(monkeypatch):
    rng = np.random.default_rng(5)
    # N ~ 2.6e7, sizes spread over 3 decades: series (lambda <= 1), Chebyshev and exact pairs
    a, b = _sizes(rng, 400, 2_000, 130_000, 1500, 30, 35_000)
    used = _count_cheb(monkeypatch)
    got = expected_mutual_information(a, b)
    assert used["n"] > 0
    assert got == pytest.approx(_plain(a, b), rel=1e-12, abs=1e-14)


def _exact_klnk(a: int, b: int, n: int) -> float:
    """E[K ln K] from exact big-integer hypergeometric probabilities (math.comb)."""
    den = comb(n, b)
    terms = [
        Fraction(comb(a, k) * comb(n - a, b - k), den)
        for k in range(max(2, a + b - n), min(a, b) + 1)
    ]
    ks = range(max(2, a + b - n), min(a, b) + 1)
    return math.fsum(float(p) * k * math.log(k) for p, k in zip(terms, ks, strict=True))


def test_emi_recursion_against_exact_big_integers():
    rng = np.random.default_rng(8)
    a, b = _sizes(rng, 6, 100, 900, 8, 50, 600)
    n = int(a.sum())
    for x in a.tolist():
        for y in b.tolist()[:4]:
            got = float(emi._expect_klnk(np.array([float(x)]), np.array([float(y)]), float(n))[0])
            assert got == pytest.approx(_exact_klnk(x, y, n), rel=1e-13, abs=1e-300)


def _exact_emi(a: np.ndarray, b: np.ndarray) -> float:
    """Vinh et al.'s EMI term by term with exact big-integer probabilities."""
    n = int(a.sum())
    total = []
    for x in a.tolist():
        for y in b.tolist():
            den = comb(n, y)
            for k in range(max(1, x + y - n), min(x, y) + 1):
                p = float(Fraction(comb(x, k) * comb(n - x, y - k), den))
                total.append(p * k / n * math.log(n * k / (x * y)))
    return math.fsum(total)


def test_emi_small_cases_against_exact_and_sklearn():
    from sklearn.metrics.cluster._expected_mutual_info_fast import (
        expected_mutual_information as ref,
    )

    for a, b in [([30, 70], [45, 55]), ([50, 150, 300], [250, 250]), ([7, 993], [1, 999])]:
        a, b = np.array(a), np.array(b)
        exact = _exact_emi(a, b)
        # absolute: EMI is H_a + H_b - ln N + (E[K ln K] terms), small values cancel at 1e-16
        assert expected_mutual_information(a, b) == pytest.approx(exact, rel=1e-12, abs=1e-14)
        # scikit-learn's log-gamma pmf: ~1e-11 relative here
        expect = ref(_table_with_marginals(a, b), int(a.sum()))
        assert expected_mutual_information(a, b) == pytest.approx(expect, rel=1e-9, abs=1e-15)


def test_report_computes_ami_once(monkeypatch):
    import neurons.metrics.partition as part

    calls = {"n": 0}
    orig = part.expected_mutual_information

    def spy(*args, **kwargs):
        calls["n"] += 1
        return orig(*args, **kwargs)

    monkeypatch.setattr(part, "expected_mutual_information", spy)
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, (4, 16, 16))
    pred = rng.integers(0, 7, (4, 16, 16))
    r = evaluate(gt, pred)
    assert calls["n"] == 1 and "ami" in r and "axi" in r
    assert r["axi"] == pytest.approx(np.sqrt(max(r["ari"], 0) * max(r["ami"], 0)))
