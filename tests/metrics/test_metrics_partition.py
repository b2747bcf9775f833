"""Partition metrics against scikit-learn, scikit-image, brute force and hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from neurons.metrics import (
    adapted_rand_error,
    adjusted_mutual_info,
    adjusted_rand_index,
    axi,
    contingency_table,
    cremi_score,
    expected_mutual_information,
    normalized_mutual_info,
    rand_index,
    variation_of_information,
)

sk = pytest.importorskip("sklearn.metrics")
skm = pytest.importorskip("skimage.metrics")


def test_against_sklearn(case):
    gt, pred = case
    g, p = gt.ravel(), pred.ravel()
    kw = {"ignore_gt": ()}  # sklearn has no ignore label
    assert adjusted_rand_index(gt, pred, **kw) == pytest.approx(
        sk.adjusted_rand_score(g, p), abs=1e-12
    )
    assert adjusted_mutual_info(gt, pred, **kw) == pytest.approx(
        sk.adjusted_mutual_info_score(g, p), abs=1e-10
    )
    assert normalized_mutual_info(gt, pred, **kw) == pytest.approx(
        sk.normalized_mutual_info_score(g, p), abs=1e-12
    )
    assert rand_index(gt, pred, **kw) == pytest.approx(sk.rand_score(g, p), abs=1e-12)


def test_emi_against_sklearn(rng):
    from sklearn.metrics.cluster import contingency_matrix
    from sklearn.metrics.cluster._expected_mutual_info_fast import (
        expected_mutual_information as ref,
    )

    for n, ka, kb in [(4, 2, 2), (60, 3, 7), (1000, 20, 40), (5000, 5, 300), (3000, 1, 5)]:
        x, y = rng.integers(0, ka, n), rng.integers(0, kb, n)
        expect = ref(contingency_matrix(x, y, sparse=True), n)
        got = expected_mutual_information(np.bincount(x), np.bincount(y))
        assert got == pytest.approx(expect, rel=1e-10, abs=1e-14)


def test_against_skimage(case):
    gt, pred = case
    split, merge = skm.variation_of_information(gt, pred, ignore_labels=[0])
    v = variation_of_information(gt, pred)
    assert (v.split, v.merge) == pytest.approx((split, merge), abs=1e-12)
    assert v.total == pytest.approx(split + merge)
    err, prec, rec = skm.adapted_rand_error(gt, pred, ignore_labels=[0])
    a = adapted_rand_error(gt, pred, convention="skimage")
    assert a.error == pytest.approx(err, abs=1e-12)
    # skimage swaps precision and recall (scikit-image #6485)
    assert (a.recall, a.precision) == pytest.approx((prec, rec), abs=1e-12)


def brute_pairs(gt, pred, ignore_gt=(0,), self_pairs=True):
    g, p = np.ravel(gt), np.ravel(pred)
    keep = ~np.isin(g, ignore_gt)
    g, p = g[keep].tolist(), p[keep].tolist()
    same_both = same_g = same_p = 0
    for i, j in itertools.product(range(len(g)), repeat=2):
        if i == j and not self_pairs:
            continue
        sg, sp = g[i] == g[j], p[i] == p[j]
        same_both += sg and sp
        same_g += sg
        same_p += sp
    return same_both, same_g, same_p


@pytest.mark.parametrize("seed", range(4))
def test_arand_pairs_and_skimage_brute_force(seed):
    rng = np.random.default_rng(seed)
    gt, pred = rng.integers(0, 4, 40), rng.integers(0, 5, 40)
    for conv, selfp in (("pairs", True), ("skimage", False)):
        nn, aa, bb = brute_pairs(gt, pred, self_pairs=selfp)
        r = adapted_rand_error(gt, pred, convention=conv)
        assert r.error == pytest.approx(1 - 2 * nn / (aa + bb), abs=1e-12)
        assert r.precision == pytest.approx(nn / bb) and r.recall == pytest.approx(nn / aa)


def cremi_brute(gt, pred):
    """The SNEMI3D/CREMI formula written out with dense loops (test reference)."""
    g, p = np.ravel(gt), np.ravel(pred)
    n = g.size
    gl = sorted(set(g.tolist()) - {0})
    pl = sorted(set(p.tolist()) - {0})
    nij = {(i, j): int(np.sum((g == i) & (p == j))) for i in gl for j in [0, *pl]}
    a = {i: sum(nij[(i, j)] for j in [0, *pl]) for i in gl}
    b = {j: sum(nij[(i, j)] for i in gl) for j in pl}
    c = sum(nij[(i, 0)] for i in gl)
    sum_a = sum(v * v for v in a.values())
    sum_b = sum(v * v for v in b.values()) + c / n
    sum_ab = sum(nij[(i, j)] ** 2 for i in gl for j in pl) + c / n
    prec, rec = sum_ab / sum_b, sum_ab / sum_a
    return 1 - 2 * prec * rec / (prec + rec), prec, rec


@pytest.mark.parametrize("seed", range(4))
def test_arand_cremi_brute_force(seed):
    rng = np.random.default_rng(seed)
    gt, pred = rng.integers(0, 4, 60), rng.integers(0, 5, 60)
    assert tuple(adapted_rand_error(gt, pred)) == pytest.approx(cremi_brute(gt, pred), abs=1e-12)


def test_hand_computed_arand_and_cremi_score():
    # gt two halves (no background), pred all 0: n = 4, a = [2, 2]
    gt, pred = np.array([1, 1, 2, 2]), np.zeros(4, int)
    # cremi: sumA = 8, c = 4, sumB = sumAB = 4/4 = 1 -> P = 1, R = 1/8, F = 2/9
    c = adapted_rand_error(gt, pred)
    assert c == pytest.approx((7 / 9, 1.0, 1 / 8))
    # pairs: sum n^2 = 8, sum a^2 = 8, sum b^2 = 16 -> 1 - 16/24
    assert adapted_rand_error(gt, pred, convention="pairs").error == pytest.approx(1 / 3)
    # VOI: split = 0, merge = H(gt | pred) = 1 bit -> CREMI score sqrt(7/9 * 1)
    assert cremi_score(gt, pred) == pytest.approx(math.sqrt(7 / 9))
    assert cremi_score(gt, pred, convention="pairs") == pytest.approx(math.sqrt(1 / 3))
    # all singletons vs one label, 24 voxels: 1 - 2*24/(24 + 24**2) = 0.92 (metric-definitions 1.8)
    assert adapted_rand_error(
        np.arange(1, 25), np.ones(24, int), convention="pairs"
    ).error == pytest.approx(0.92)
    assert adapted_rand_error(
        np.arange(1, 25), np.ones(24, int), convention="skimage"
    ).error == pytest.approx(1.0)


def test_voi_naming_hand_computed():
    gt = np.array([1, 1, 2, 2])
    over = np.array([1, 2, 3, 4])  # over-segmentation: only split errors
    assert variation_of_information(gt, over) == pytest.approx((1.0, 0.0))
    under = np.array([1, 1, 1, 1])
    assert variation_of_information(gt, under) == pytest.approx((0.0, 1.0))


def test_permutation_invariance(pair):
    gt, pred = pair
    rng = np.random.default_rng(1)
    perm_g = np.concatenate(([0], 1 + rng.permutation(gt.max())))  # keep background 0
    # pred 0 is special only in the CREMI convention (pred background): keep it fixed too
    perm_p = np.concatenate(([0], 1 + rng.permutation(pred.max()))).astype(np.uint64) * np.uint64(
        2**50
    )
    g2, p2 = perm_g[gt], perm_p[pred]
    for f in (
        adjusted_rand_index,
        adjusted_mutual_info,
        normalized_mutual_info,
        rand_index,
        cremi_score,
        axi,
    ):
        assert f(g2, p2) == pytest.approx(f(gt, pred), abs=1e-12), f.__name__
    assert tuple(variation_of_information(g2, p2)) == pytest.approx(
        tuple(variation_of_information(gt, pred))
    )
    assert tuple(adapted_rand_error(g2, p2, convention="pairs")) == pytest.approx(
        tuple(adapted_rand_error(gt, pred, convention="pairs"))
    )


def test_identical_partitions_are_perfect(pair):
    gt, _ = pair
    relabelled = (gt.astype(np.uint64) + np.uint64(2**63)) * (gt > 0)
    assert tuple(variation_of_information(gt, relabelled)) == (0.0, 0.0)
    for conv in ("cremi", "pairs", "skimage"):
        assert adapted_rand_error(gt, relabelled, convention=conv).error == pytest.approx(
            0.0, abs=1e-15
        )
    assert cremi_score(gt, relabelled) == pytest.approx(0.0, abs=1e-7)
    for f in (adjusted_rand_index, adjusted_mutual_info, normalized_mutual_info, rand_index, axi):
        assert f(gt, relabelled) == pytest.approx(1.0, abs=1e-12)


def test_large_uint64_ids_against_small_ids(pair):
    gt, pred = pair
    big_g = gt.astype(np.uint64) + np.uint64(2**63 + 12345)
    big_p = pred.astype(np.uint64) * np.uint64(2**40) + np.uint64(2**63)
    kw = {"ignore_gt": ()}
    assert adjusted_rand_index(big_g, big_p, **kw) == pytest.approx(
        adjusted_rand_index(gt, pred, **kw)
    )
    assert adjusted_mutual_info(big_g, big_p, **kw) == pytest.approx(
        adjusted_mutual_info(gt, pred, **kw)
    )


NOTHING = {  # nothing left after masking gt 0: distances 0, agreement 1 (module docstring)
    "voi": (0.0, 0.0), "cremi": (0.0, 1.0, 1.0), "pairs": (0.0, 1.0, 1.0),
    "skimage": (0.0, 1.0, 1.0), "cremi_score": 0.0, "ri": 1.0, "ari": 1.0, "ami": 1.0,
    "nmi": 1.0, "axi": 1.0,
}  # fmt: skip
_rec5 = (15 + 1 / 16) / 256  # cremi recall: 15 fg singletons + pred-0 term 1/16, sum a^2 = 256


@pytest.mark.parametrize(
    "gt,pred,expected",
    [
        (np.zeros(0, int), np.zeros(0, int), NOTHING),  # empty
        (np.zeros(16, int), np.zeros(16, int), NOTHING),  # both all background
        (np.zeros(16, int), np.arange(16), NOTHING),  # gt all background
        (np.ones(16, int), np.ones(16, int) * 3, {**NOTHING}),  # single label both: perfect
        (  # single gt label, every voxel its own pred label (pred 0 = one voxel)
            np.ones(16, int), np.arange(16),
            {"voi": (4.0, 0.0), "cremi": (1 - 2 * _rec5 / (1 + _rec5), 1.0, _rec5),
             "pairs": (1 - 32 / 272, 1.0, 1 / 16), "skimage": (1.0, 1.0, 0.0),
             "cremi_score": math.sqrt(4.0 * (1 - 2 * _rec5 / (1 + _rec5))), "ri": 0.0,
             "ari": 0.0, "ami": 0.0, "nmi": 0.0, "axi": 0.0},
        ),
    ],
)  # fmt: skip
def test_degenerate_inputs_documented_values(gt, pred, expected):
    got = {
        "voi": tuple(variation_of_information(gt, pred)),
        "cremi": tuple(adapted_rand_error(gt, pred)),
        "pairs": tuple(adapted_rand_error(gt, pred, convention="pairs")),
        "skimage": tuple(adapted_rand_error(gt, pred, convention="skimage")),
        "cremi_score": cremi_score(gt, pred), "ri": rand_index(gt, pred),
        "ari": adjusted_rand_index(gt, pred), "ami": adjusted_mutual_info(gt, pred),
        "nmi": normalized_mutual_info(gt, pred), "axi": axi(gt, pred),
    }  # fmt: skip
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    if gt.size and gt.any():  # gt has no 0 here, so sklearn (no ignore label) must agree
        assert got["ri"] == pytest.approx(sk.rand_score(gt, pred))
        assert got["ari"] == pytest.approx(sk.adjusted_rand_score(gt, pred))
        assert got["ami"] == pytest.approx(sk.adjusted_mutual_info_score(gt, pred))
        assert got["nmi"] == pytest.approx(sk.normalized_mutual_info_score(gt, pred))


def test_documented_degenerate_values():
    z = np.zeros(10, int)
    # nothing left after ignoring gt 0: distances 0, agreement 1
    assert tuple(variation_of_information(z, z)) == (0.0, 0.0)
    assert tuple(adapted_rand_error(z, z)) == (0.0, 1.0, 1.0)
    assert adjusted_rand_index(z, z) == 1.0 and adjusted_mutual_info(z, z) == 1.0
    # sklearn semantics without ignore: single cluster vs many -> 0
    assert adjusted_mutual_info(z, np.arange(10), ignore_gt=()) == 0.0
    assert adjusted_rand_index(z, np.arange(10), ignore_gt=()) == sk.adjusted_rand_score(
        z, np.arange(10)
    )
    assert normalized_mutual_info(np.ones(5, int), np.ones(5, int)) == 1.0


def test_table_input_equals_volume_input(pair):
    gt, pred = pair
    t = contingency_table(gt, pred)
    assert adjusted_rand_index(t) == adjusted_rand_index(gt, pred)
    assert variation_of_information(t) == variation_of_information(gt, pred)


def test_sum_squares_exact_beyond_int64():
    from neurons.metrics._common import sum_squares

    rng = np.random.default_rng(7)
    for hi in (1 << 33, 1 << 45, 1 << 62):  # totals far above the 3e9-voxel int64 fast path
        c = rng.integers(0, hi, 5000, dtype=np.int64)
        assert sum_squares(c) == sum(int(v) * int(v) for v in c.tolist())
    assert sum_squares(np.array([(1 << 62) + 12345], np.int64)) == ((1 << 62) + 12345) ** 2


def test_pair_metrics_on_huge_counts_against_python_ints():
    from fractions import Fraction
    from math import comb

    from neurons.metrics import ContingencyTable

    rng = np.random.default_rng(3)
    g = rng.integers(1, 6, 40)
    p = rng.integers(1, 7, 40)
    c = rng.integers(1, 10**10, 40)  # N ~ 2e11 voxels: exact path of sum_squares
    t = ContingencyTable(g, p, c)
    nij = [int(v) for v in t.counts]
    a = [int(v) for v in t.gt_sizes()[1]]
    b = [int(v) for v in t.pred_sizes()[1]]
    n = sum(nij)
    idx = sum(comb(v, 2) for v in nij)
    sa, sb = sum(comb(v, 2) for v in a), sum(comb(v, 2) for v in b)
    exp = Fraction(sa * sb, comb(n, 2))
    ari = (idx - exp) / (Fraction(sa + sb, 2) - exp)
    assert adjusted_rand_index(t) == pytest.approx(float(ari), rel=1e-12)
    ri = Fraction(comb(n, 2) + 2 * idx - sa - sb, comb(n, 2))
    assert rand_index(t) == pytest.approx(float(ri), rel=1e-12)
    prec = Fraction(sum(v * v for v in nij), sum(v * v for v in b))
    assert adapted_rand_error(t, convention="pairs").precision == pytest.approx(float(prec))
