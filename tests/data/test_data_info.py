"""``neurons-data info``: config composition, exact statistics, montage, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.measure import label as sk_label

from neurons.data.info import describe_datamodule, load_config, main
from neurons.io import write_volume

ISBI = Path(__file__).resolve().parents[3] / "shared" / "data" / "isbi2012"
SHIPPED = ("default", "synthetic", "snemi3d", "cremi3d", "microns", "mitoem2", "combine", "isbi2012",
           "volumes")


def test_composition_equals_hydra():
    compose_config = pytest.importorskip("neurons.train").compose_config
    over = ["data.root=/x/isbi", "data.patch_size=[128,128]", "++data.options.gap=2"]
    mine = load_config("isbi2012", over)
    hydra = compose_config("isbi2012", over)
    for key in ("name", "root", "patch_size", "batch_size", "samples_per_epoch", "val_patches",
                "augment", "options"):
        assert mine["data"][key] == hydra.data[key], key
    assert mine["seed"] == hydra.seed


@pytest.fixture
def blocks(tmp_path):
    """Instance labels of known sizes: 2 blocks per z-slab, one 'ignore' strip, raw = labels."""
    seg = np.zeros((10, 20, 30), np.uint64)
    seg[0:4, 0:5, 0:5] = 2**63 + 1         # 100 voxels
    seg[2:10, 10:20, 10:30] = 7            # 1600 voxels
    seg[6:10, 0:3, 0:3] = 9                # 36 voxels (held out below)
    seg[:, :, 29] = 5                      # 200 voxels, value 5 = ignore
    write_volume(tmp_path / "b.h5:raw", (seg % 200).astype(np.uint8))
    write_volume(tmp_path / "b.h5:seg", seg)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(
        "defaults: [volumes, _self_]\n"
        "data:\n"
        f"  root: {tmp_path}\n"
        "  patch_size: [2, 8, 8]\n"
        "  options:\n"
        "    volumes: [{name: b, raw: 'b.h5:raw', labels: 'b.h5:seg', ignore_label: 5}]\n"
        "    train: [{volume: b, z: [0, 6]}]\n"
        "    val: [{volume: b, box: [[6, 10], [0, 20], [0, 20]]}]\n"
    )
    return tmp_path, seg, cfg


def _brute(seg):
    ids, counts = np.unique(seg[(seg != 0) & (seg != 5)], return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist(), strict=True))


def test_statistics_are_exact_across_slabs(blocks, monkeypatch):
    from neurons.data.info import build_from_config

    d, seg, cfg = blocks
    for max_voxels in (1 << 20, 600):  # whole regions, then slabs of one section
        s = describe_datamodule(build_from_config(load_config(str(cfg))), max_voxels=max_voxels)
        tr, va = s["splits"]["train"], s["splits"]["val"]
        want_tr, want_va = _brute(seg[0:6]), _brute(seg[6:10, :, 0:20])
        assert tr["instances"]["count"] == len(want_tr) == 2
        assert tr["instances"]["max"] == max(want_tr.values()) and tr["instances"]["min"] == 100
        assert va["instances"]["count"] == 2 and va["instances"]["min"] == 36
        assert va["instances"]["max"] == want_va[7] == 4 * 10 * 10
        assert tr["classes"]["ignore"] == 6 * 20 and va["classes"]["ignore"] == 0
        assert tr["classes"]["neuron"] == sum(want_tr.values())
        assert tr["classes"]["background"] == 6 * 20 * 30 - 120 - sum(want_tr.values())
        assert sum(tr["class_frequency"].values()) == pytest.approx(1.0)
    assert s["volumes"][0]["annotated"] == ["background", "neuron"]
    assert [r["box"] for r in s["regions"]] == [[[0, 6], [0, 20], [0, 30]], [[6, 10], [0, 20], [0, 20]]]


def test_cli_text_json_and_montage(blocks, capsys):
    d, seg, cfg = blocks
    png = d / "m.png"
    assert main(["info", str(cfg), "--json", str(d / "s.json"), "--montage", str(png)]) == 0
    out = capsys.readouterr().out
    assert "volumes/b" in out and "train: 1 region(s)" in out and "instances: 2" in out
    data = json.loads((d / "s.json").read_text())
    assert data["splits"]["val"]["instances"]["count"] == 2
    img = np.asarray(Image.open(png))
    assert img.shape == (192, 2 * 192, 3)  # one tile per region
    tile = img[:, :192]
    assert len(np.unique(tile.reshape(-1, 3), axis=0)) > 3  # coloured instances on grey raw
    assert not list(d.glob(".m.png.*"))  # no temporary left
    # an input file is never overwritten; a missing folder is named
    before = (d / "b.h5").read_bytes()
    assert main(["info", str(cfg), "--montage", str(d / "b.h5")]) == 2
    assert (d / "b.h5").read_bytes() == before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is one of the input volumes" in err


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/ folder here
    over = []
    if name == "isbi2012" and ISBI.is_dir():
        over = [f"data.root={ISBI}"]
    code = main(["info", name, *over])
    out, err = capsys.readouterr()
    if name in ("default", "synthetic") or over:
        assert code == 0, err
        assert "train: " in out and "val: " in out and "instances: " in out
    else:
        assert code == 2 and err.startswith("neurons-data: error: ") and err.count("\n") == 1


@pytest.mark.skipif(not ISBI.is_dir(), reason="ISBI 2012 data not present")
def test_isbi2012_counts_match_per_section_components(capsys):
    assert main(["info", "isbi2012", f"data.root={ISBI}", "--json", "-"]) == 0
    s = json.loads(capsys.readouterr().out)
    files = sorted((ISBI / "train" / "label").glob("*.png"), key=lambda p: int(p.stem))
    interior = np.stack([np.asarray(Image.open(f)) for f in files]) != 0
    count = sum(sk_label(interior[z], connectivity=1).max() for z in range(0, 23))
    assert s["splits"]["train"]["instances"]["count"] == count
    assert s["splits"]["train"]["classes"]["neuron"] == int(interior[:23].sum())


def test_bad_input_exits_2(tmp_path, capsys):
    assert main(["info", "nonsense_config"]) == 2
    assert "no config named 'nonsense_config'; available:" in capsys.readouterr().err
    assert main(["info", "volumes", f"data.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stack.h5 does not exist" in err
    assert main(["info", "synthetic", "data.options.bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
