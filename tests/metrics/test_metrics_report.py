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


def test_evaluate_degenerate_report_is_json_safe():
    z = np.zeros((2, 3, 3), int)
    r = evaluate(z, z, metrics="all")
    json.loads(r.to_json())  # allow_nan=False: raises on NaN/inf


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
