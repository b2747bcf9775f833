"""evaluate / Report / evaluate_batch, the neurons-eval CLI, and real ISBI 2012 labels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from neurons.metrics import (
    InputError,
    adjusted_mutual_info,
    adjusted_rand_index,
    evaluate,
    evaluate_batch,
    variation_of_information,
)
from neurons.metrics.cli import main


def test_evaluate_default_report(pair, tmp_path):
    gt, pred = pair
    r = evaluate(gt, pred)
    for k in ("voi_split", "voi_merge", "voi_total", "arand_cremi", "arand_pairs", "cremi_score",
              "rand_index", "ari", "ami", "nmi", "axi", "f1", "ap50", "ap75", "map", "pq", "splits",
              "merges", "n_voxels"):  # fmt: skip
        assert k in r, k
    assert r["voi_split"] == pytest.approx(variation_of_information(gt, pred).split)
    assert r["ari"] == pytest.approx(adjusted_rand_index(gt, pred))
    assert r["ami"] == pytest.approx(adjusted_mutual_info(gt, pred))
    assert r["cremi_score"] == pytest.approx(math.sqrt(r["arand_cremi"] * r["voi_total"]))
    data = json.loads(r.to_json(tmp_path / "out" / "r.json"))
    assert data["metrics"]["ari"] == pytest.approx(r["ari"])
    assert json.loads((tmp_path / "out" / "r.json").read_text()) == data
    md = r.to_markdown()
    assert md.startswith("| metric | value |") and "| voi_split |" in md
    assert "ted_total" not in r


def test_evaluate_selected_groups_and_errors(pair):
    gt, pred = pair
    r = evaluate(gt, pred, metrics="voi,ted,dice")
    assert "ted_total" in r and "dice_mean" in r and "ari" not in r
    with pytest.raises(InputError, match="unknown metric"):
        evaluate(gt, pred, metrics=["nope"])
    assert set(evaluate(gt, pred, metrics="all")) >= {"ted_total", "iou_mean", "ami"}


PERFECT = {  # README "degenerate inputs": nothing to disagree on / nothing to find
    "voi_total": 0.0, "arand_cremi": 0.0, "arand_pairs": 0.0, "cremi_score": 0.0,
    "rand_index": 1.0, "ari": 1.0, "ami": 1.0, "nmi": 1.0, "axi": 1.0, "precision": 1.0,
    "recall": 1.0, "f1": 1.0, "accuracy": 1.0, "ap50": 1.0, "map": 1.0, "pq": 1.0, "sq": 1.0,
    "rq": 1.0, "splits": 0, "merges": 0, "edit_false_positives": 0, "edit_false_negatives": 0,
    "ted_total": 0, "dice_mean": 1.0, "iou_mean": 1.0,
}  # fmt: skip


@pytest.mark.parametrize(
    "gt,pred",
    [
        (np.zeros((2, 3, 3), int), np.zeros((2, 3, 3), int)),  # all background
        (np.zeros((0, 3, 3), int), np.zeros((0, 3, 3), int)),  # empty
        (np.ones((2, 3, 3), int), np.full((2, 3, 3), 1, int)),  # single label, identical
    ],
)
def test_evaluate_degenerate_documented_values(gt, pred):
    r = evaluate(gt, pred, metrics="all")
    json.loads(r.to_json())  # allow_nan=False: raises on NaN/inf
    for k, v in PERFECT.items():
        assert r[k] == v, k
    if gt.any():
        assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 0)
    else:
        assert (r["tp"], r["fp"], r["fn"], r["n_gt_labels"]) == (0, 0, 0, 0)


def test_evaluate_degenerate_one_sided():
    z = np.zeros(8, int)
    r = evaluate(z, np.arange(8), metrics="matching,ap,pq,edits")  # only false positives
    assert (r["tp"], r["fp"], r["fn"], r["f1"], r["map"], r["pq"]) == (0, 7, 0, 0.0, 0.0, 0.0)
    assert r["edit_false_positives"] == 7
    r = evaluate(np.arange(8), z, metrics="matching,ap,pq,edits")  # nothing predicted
    assert (r["tp"], r["fn"], r["recall"], r["map"], r["pq"]) == (0, 7, 0.0, 0.0, 0.0)
    assert r["edit_false_negatives"] == 7


def test_batch_averages_every_sample():
    g = np.array([[1, 1, 2, 2], [1, 1, 1, 1]])
    p = np.array([[1, 1, 2, 2], [1, 2, 3, 4]])  # sample 2: ARI 0 (single gt cluster)
    r = evaluate_batch(g, p, metrics="ari,voi")
    assert r["ari"] == 0.5  # the zero is not dropped
    assert r["voi_total"] == pytest.approx(np.mean([0.0, 2.0]))
    assert len(r.meta["samples"]) == 2


def test_cli_npy_and_hdf5(tmp_path, pair, capsys):
    io = pytest.importorskip("neurons.io")
    gt, pred = pair
    np.save(tmp_path / "gt.npy", gt)
    io.write_volume(tmp_path / "pred.h5", pred.astype(np.uint64), key="seg")
    out = tmp_path / "r.json"
    rc = main([str(tmp_path / "gt.npy"), str(tmp_path / "pred.h5"), "--pred-key", "seg",
               "--metrics", "voi,arand,ari", "--json", str(out), "--block-size", "100", "-q"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "| voi_split |" in text
    data = json.loads(out.read_text())["metrics"]
    assert data["ari"] == pytest.approx(adjusted_rand_index(gt, pred))
    assert main([str(tmp_path / "gt.npy"), str(tmp_path / "missing.h5"), "-q"]) == 2
    np.save(tmp_path / "small.npy", gt[:1])
    assert main([str(tmp_path / "gt.npy"), str(tmp_path / "small.npy"), "-q"]) == 2
    assert "shape" in capsys.readouterr().err


def isbi_instances(isbi2012_dir, n=3, crop=256):
    from PIL import Image
    from scipy import ndimage

    files = sorted((isbi2012_dir / "label").glob("*.png"))[:n]
    labels = []
    offset = 0
    for f in files:
        interior = np.asarray(Image.open(f))[:crop, :crop] > 127
        lab, k = ndimage.label(interior)
        labels.append(np.where(lab > 0, lab + offset, 0))
        offset += k
    return np.stack(labels).astype(np.uint64)


def test_real_isbi2012_labels(isbi2012_dir):
    sk = pytest.importorskip("sklearn.metrics")
    skm = pytest.importorskip("skimage.metrics")
    from scipy import ndimage

    gt = isbi_instances(isbi2012_dir)
    # a plausible "prediction": membranes thinned by a dilation of the cells (merges some)
    grown = ndimage.grey_dilation(gt, size=(1, 3, 3))
    pred = np.where(gt > 0, gt, grown) * np.uint64(2**40) + np.uint64(2**63)
    g, p = gt.ravel(), pred.ravel()
    fg = g != 0
    g, p = np.unique(g[fg], return_inverse=True)[1], np.unique(p[fg], return_inverse=True)[1]
    assert adjusted_rand_index(gt, pred) == pytest.approx(sk.adjusted_rand_score(g, p), abs=1e-10)
    assert adjusted_mutual_info(gt, pred) == pytest.approx(
        sk.adjusted_mutual_info_score(g, p), abs=1e-8
    )
    gs = np.unique(gt, return_inverse=True)[1].reshape(gt.shape)  # skimage: dense by raw id
    ps = np.unique(pred, return_inverse=True)[1].reshape(gt.shape) + 1
    split, merge = skm.variation_of_information(gs, ps, ignore_labels=[0])
    v = variation_of_information(gt, pred)
    assert (v.split, v.merge) == pytest.approx((split, merge), abs=1e-10)
    r = evaluate(gt, pred, block_size=50_000)
    assert r["n_gt_labels"] > 50 and 0 <= r["arand_cremi"] < 1
    assert r["ari"] == pytest.approx(adjusted_rand_index(gt, pred))


def test_ignore_gt_label_is_not_an_instance():
    # hand-computed: gt 255 is ignored, so pred 2 (covering only 255) is a false positive
    gt = np.array([[1, 1, 1, 255, 255, 255]])
    pred = np.array([[1, 1, 1, 2, 2, 2]])
    r = evaluate(gt, pred, metrics="matching,ap,pq,edits,ted", ignore_gt=(0, 255), ted_tolerance=0)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 0)
    assert r["pq"] == pytest.approx(1 / 1.5)  # SQ 1, RQ = 1 / (1 + 0.5)
    assert r["ap50"] == pytest.approx(1.0)  # ranked by size tie -> pred 1 first: recall 1 at prec 1
    assert (r["edit_false_positives"], r["ted_false_positives"]) == (1, 1)
    assert r["ted_total"] == 1
    # without ignoring 255 it is an instance matched perfectly
    r0 = evaluate(gt, pred, metrics="matching,pq,edits", ignore_gt=(0,))
    assert (r0["tp"], r0["fp"], r0["pq"], r0["edit_false_positives"]) == (2, 0, 1.0, 0)


def test_ignore_gt_equals_relabelling_to_background(pair):
    gt, pred = pair
    gt = np.where(gt == 3, 255, gt)
    ref = evaluate(np.where(gt == 255, 0, gt), pred, metrics="matching,ap,pq,edits")
    r = evaluate(gt, pred, metrics="matching,ap,pq,edits", ignore_gt=(0, 255))
    for k in ("tp", "fp", "fn", "f1", "ap50", "map", "pq", "splits", "merges",
              "edit_false_positives", "edit_false_negatives"):  # fmt: skip
        assert r[k] == ref[k], k
    assert r["tp"] + r["fn"] == np.setdiff1d(np.unique(gt), [0, 255]).size
