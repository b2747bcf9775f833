"""Leaderboard conventions: SNEMI3D crop, CREMI border mask, ISBI 2012 thinned V_rand / V_info
(hand-computed cases, brute-force references, real ISBI labels, evaluate and CLI)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from neurons.metrics import (
    InputError,
    apply_cremi_border_mask,
    cremi_border_mask,
    evaluate,
    isbi2012_scores,
    snemi3d_crop,
    thin_boundaries,
)
from neurons.metrics.cli import main


# --------------------------------------------------------------------------- SNEMI3D
def test_snemi3d_crop_hand_computed():
    # side round(1024 / sqrt(3)) = 591, centred: (1024 - 591) // 2 = 216
    assert snemi3d_crop((100, 1024, 1024)) == (slice(0, 100), slice(216, 807), slice(216, 807))
    # 9: round(5.20) = 5 from 2; 12: round(6.93) = 7 from (12 - 7) // 2 = 2
    assert snemi3d_crop((3, 9, 12)) == (slice(0, 3), slice(2, 7), slice(2, 9))
    assert snemi3d_crop((9, 9), fraction=1.0) == (slice(0, 9), slice(0, 9))
    with pytest.raises(InputError, match="fraction"):
        snemi3d_crop((4, 4), fraction=0)


def test_evaluate_snemi3d_scores_the_crop(make_pair):
    gt, pred = make_pair(1, shape=(6, 30, 30))
    r = evaluate(gt, pred, "voi,arand", convention="snemi3d")
    crop = snemi3d_crop(gt.shape)
    ref = evaluate(gt[crop], pred[crop], "voi,arand")
    assert r["voi_total"] == ref["voi_total"] and r["arand_cremi"] == ref["arand_cremi"]
    assert r["n_voxels"] == gt[crop].size < gt.size
    assert r.meta["convention"] == {
        "name": "snemi3d", "crop": [[0, 6], [6, 23], [6, 23]], "crop_fraction_of_section": 1 / 3
    }  # fmt: skip
    assert r.to_markdown().endswith(
        "convention: snemi3d (crop=[[0, 6], [6, 23], [6, 23]], crop_fraction_of_section=0.3333333333333333)"
    )
    plain = evaluate(gt, pred, "voi")
    assert (
        plain.meta["convention"] == {"name": "default"} and "convention" not in plain.to_markdown()
    )


# --------------------------------------------------------------------------- CREMI
def _border_mask_brute(gt, spacing, threshold):
    """Per section: every pixel within ``threshold`` of a pixel whose 4-neighbour differs."""
    out = np.zeros(gt.shape, bool)
    for z in range(gt.shape[0]):
        s = gt[z]
        border = []
        for y in range(s.shape[0]):
            for x in range(s.shape[1]):
                for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < s.shape[0] and 0 <= xx < s.shape[1] and s[yy, xx] != s[y, x]:
                        border.append((y, x))
                        break
        for y in range(s.shape[0]):
            for x in range(s.shape[1]):
                out[z, y, x] = any(
                    math.hypot((y - by) * spacing[0], (x - bx) * spacing[1]) <= threshold
                    for by, bx in border
                )
    return out


def test_cremi_border_mask_hand_computed():
    # boundary between columns 9 and 10; 4 nm pixels, 25 nm = 6.25 px: columns 3..16 masked
    gt = np.zeros((2, 3, 20), np.uint64)
    gt[:, :, 10:] = 7
    m = cremi_border_mask(gt, voxel_size=(40, 4, 4))
    assert m[0, 0].nonzero()[0].tolist() == list(range(3, 17))
    assert (m == m[:1, :1]).all()  # same in every row and section
    g = apply_cremi_border_mask(gt + 1, (40, 4, 4))
    assert (g[m] == 0).all() and (g[~m] == (gt + 1)[~m]).all()
    # no label change in a section: nothing masked there
    assert not cremi_border_mask(np.ones((1, 4, 4), int)).any()


def test_cremi_border_mask_brute_force(rng):
    g = np.kron(rng.integers(0, 4, (2, 4, 5)), np.ones((1, 3, 3), int))
    for spacing, thr in [((4.0, 4.0), 25.0), ((3.0, 5.0), 9.0), ((1.0, 1.0), 0.0)]:
        got = cremi_border_mask(g, voxel_size=(40.0, *spacing), threshold=thr)
        assert np.array_equal(got, _border_mask_brute(g, spacing, thr))


def test_evaluate_cremi_convention_ignores_the_border(make_pair):
    gt, pred = make_pair(2, shape=(3, 24, 24), bg=False)
    r = evaluate(gt, pred, "voi,arand,cremi", convention="cremi", voxel_size=(40, 4, 4))
    masked = apply_cremi_border_mask(gt, (40, 4, 4))
    ref = evaluate(masked, pred, "voi,arand,cremi")
    assert r["voi_total"] == ref["voi_total"] and r["cremi_score"] == ref["cremi_score"]
    assert r["n_voxels_scored"] == int((masked != 0).sum()) < gt.size
    meta = r.meta["convention"]
    assert meta["name"] == "cremi" and meta["border_threshold"] == 25.0
    assert meta["voxel_size"] == [40.0, 4.0, 4.0]
    assert meta["masked_voxels"] == int((masked == 0).sum() - (gt == 0).sum())


# --------------------------------------------------------------------------- ISBI 2012
def test_isbi_scores_hand_computed():
    g = np.array([[1, 1, 1, 0, 2, 2, 2]])  # gt regions {0,1,2} and {4,5,6}; pixel 3 is membrane
    p = np.array([[5, 0, 5, 5, 5, 5, 5]])  # pred regions {0} and {2..6}; pixel 1 is membrane
    s = isbi2012_scores(g, p, thin=False)
    # on the 6 gt pixels: n = {(1,A): 1, (1,B): 1, (2,B): 3} and one pred-membrane singleton:
    # sum n^2 + c = 12, sum a^2 = 18, sum b^2 + c = 1 + 16 + 1 = 18
    assert s.v_rand_split == pytest.approx(2 / 3) and s.v_rand_merge == pytest.approx(2 / 3)
    assert s.v_rand == pytest.approx(2 / 3)
    h = lambda *q: -sum(x * math.log(x) for x in q)  # noqa: E731
    h_s, h_t, h_st = h(1 / 2, 1 / 2), h(1 / 6, 4 / 6, 1 / 6), h(1 / 6, 1 / 6, 1 / 6, 1 / 2)
    mi = h_s + h_t - h_st
    assert s.v_info == pytest.approx(2 * mi / (h_s + h_t))
    assert s.v_info_split == pytest.approx(mi / h_t) and s.v_info_merge == pytest.approx(mi / h_s)
    merged = isbi2012_scores(np.array([[1, 1, 0, 2, 2]]), np.full((1, 5), 9), thin=False)
    assert merged.v_rand_split == 1.0 and merged.v_rand_merge == 0.5  # sum n^2 = 8, sum b^2 = 16
    perfect = isbi2012_scores(g, g * 5, thin=False)
    assert perfect.v_rand == 1.0 and perfect.v_info == pytest.approx(1.0)


def test_thinning_makes_boundary_width_irrelevant():
    # the same two cells, separated by a 1-pixel and by a 5-pixel wide membrane
    thin = np.full((12, 15), 255, np.uint8)
    thin[:, 7] = 0
    thick = np.full((12, 15), 255, np.uint8)
    thick[:, 5:10] = 0
    s = isbi2012_scores(thin, thick)
    assert s.v_rand == 1.0 and s.v_info == pytest.approx(1.0)
    raw = isbi2012_scores(thin, thick, thin=False)  # without thinning: 8 gt pixels per row lost
    assert raw.v_rand < 1.0
    t = thin_boundaries(thick == 0)
    assert t.sum(axis=1).tolist() == [1] * 12  # one pixel wide, still spanning every row


def test_thinning_preserves_regions_on_real_isbi(isbi2012_dir):
    from PIL import Image

    files = sorted((isbi2012_dir / "label").glob("*.png"))[:2]
    lab = np.stack([np.asarray(Image.open(f))[:256, :256] for f in files])
    boundary = lab == 0
    thinned = thin_boundaries(boundary)
    assert (thinned <= boundary).all() and thinned.sum() < boundary.sum() / 2
    cross = np.zeros((3, 3, 3), bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)
    assert ndimage.label(~thinned, cross)[1] == ndimage.label(~boundary, cross)[1]
    assert isbi2012_scores(lab, lab) == (1.0,) * 6
    # the gt with membranes grown by 2 px (a few small cells vanish): thinning removes most of
    # the width penalty, which the unthinned scores carry as pure split error
    grown = ndimage.binary_dilation(boundary, structure=cross, iterations=2)
    wide = np.where(grown, 0, 255).astype(np.uint8)
    s, raw = isbi2012_scores(lab, wide), isbi2012_scores(lab, wide, thin=False)
    assert s.v_rand > 0.98 and s.v_info > 0.97
    assert raw.v_rand_merge == 1.0 and raw.v_rand < s.v_rand - 0.05 and raw.v_info < s.v_info - 0.1


def test_evaluate_isbi_convention_and_probability_maps():
    g = np.full((10, 12), 255, np.uint8)
    g[:, 5] = 0
    prob = np.where(g > 0, 0.9, 0.1)
    prob[:, 4:7] = 0.2  # thicker predicted membrane
    prob[4, 5] = 0.8  # one leaking pixel merges the two cells
    r = evaluate(g, prob, "voi", convention="isbi2012")
    s = isbi2012_scores(g, prob, threshold=0.5)
    assert r["v_rand"] == s.v_rand < 1.0 and r["v_info"] == s.v_info
    assert r.meta["convention"] == {"name": "isbi2012", "threshold": 0.5}
    with pytest.raises(InputError, match="convention"):
        evaluate(g, g, convention="snemi")


# --------------------------------------------------------------------------- CLI
def test_cli_conventions(tmp_path, make_pair, capsys):
    gt, pred = make_pair(3, shape=(3, 24, 24), bg=False)
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "pred.npy", pred)
    args = [str(tmp_path / "gt.npy"), str(tmp_path / "pred.npy"), "--metrics", "voi", "-q"]
    out = tmp_path / "r.json"
    assert (
        main([*args, "--convention", "cremi", "--voxel-size", "40", "4", "4", "--json", str(out)])
        == 0
    )
    data = json.loads(out.read_text())
    assert data["meta"]["convention"]["name"] == "cremi"
    ref = evaluate(apply_cremi_border_mask(gt, (40, 4, 4)), pred, "voi")
    assert data["metrics"]["voi_total"] == pytest.approx(ref["voi_total"])
    assert main([*args, "--convention", "snemi3d"]) == 0
    assert main([*args, "--convention", "isbi2012"]) == 0
    assert "| v_rand |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main([*args, "--convention", "nope"])
    assert e.value.code == 2
    capsys.readouterr()
    assert main([*args, "--convention", "cremi", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be combined with --scheduler" in err[0]
