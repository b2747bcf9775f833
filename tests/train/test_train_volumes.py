"""Training on your own volumes (``data.name: volumes``) through the CLI, and the ISBI re-lay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from neurons.io import read_volume, write_volume
from neurons.train import compose_config
from neurons.train.builders import build_datamodule_from_cfg
from neurons.train.cli import train_main
from neurons.train.errors import TrainError

ISBI = Path(__file__).resolve().parents[3] / "shared" / "data" / "isbi2012"
QUIET = [
    "data.batch_size=2",
    "data.samples_per_epoch=4",
    "data.val_patches=2",
    "data.num_workers=0",
    "data.augment=false",
    "model.preset=tiny",
    "training.num_sanity_val_steps=0",
    "training.log_every_n_steps=1",
    "training.cpu_threads=1",
    "logging.progress_bar=none",
    "logging.model_summary=false",
    "calibration.enabled=false",
]


def _cells(shape, n, seed):
    """Voronoi neurites (ids 1..n) separated by 0-valued membranes; raw dark on membranes."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int64)
    seeds[tuple(rng.integers(0, s, n) for s in shape)] = np.arange(1, n + 1)
    idx = ndimage.distance_transform_edt(seeds == 0, sampling=(3, 1, 1), return_distances=False,
                                         return_indices=True)
    ids = seeds[tuple(idx)]
    edge = np.zeros(shape, bool)
    for ax in (1, 2):
        edge |= np.diff(ids, axis=ax, prepend=ids.take([0], axis=ax)) != 0
    ids[edge] = 0
    raw = np.where(ids > 0, 170, 40) + rng.normal(0, 8, shape)
    return np.clip(raw, 0, 255).astype(np.uint8), ids.astype(np.uint32)


@pytest.fixture
def my_data(tmp_path):
    """The layout configs/volumes.yaml expects: <root>/stack.h5 with 'raw' and 'labels'."""
    root = tmp_path / "my_volumes"
    root.mkdir()
    for name, seed in (("stack", 0), ("test", 1)):
        raw, ids = _cells((24, 48, 48), 30, seed)
        write_volume(root / f"{name}.h5:raw", raw, voxel_size=(30, 6, 6))
        write_volume(root / f"{name}.h5:labels", ids, voxel_size=(30, 6, 6))
    return root


def test_fast_dev_run_on_the_volumes_config(my_data, tmp_path):
    code = train_main(["--config-name", "volumes", f"data.root={my_data}", "data.patch_size=[8,32,32]",
                       f"training.output_dir={tmp_path / 'run'}", "training.fast_dev_run=true", *QUIET])
    assert code == 0


def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys):
    raw = np.zeros((24, 48, 48), np.uint8)
    for name, key, labels in (("shape", "labels", np.zeros((24, 48, 40), np.uint32)),
                              ("key", "seg", np.zeros((24, 48, 48), np.uint32)),
                              ("float", "labels", np.zeros((24, 48, 48), np.float32))):
        (tmp_path / name).mkdir()
        write_volume(tmp_path / name / "stack.h5:raw", raw)
        write_volume(f"{tmp_path / name}/stack.h5:{key}", labels)
    cases = [
        ("nowhere", "[8,32,32]", "stack.h5 does not exist"),
        ("shape", "[8,32,32]", f"labels {tmp_path}/shape/stack.h5:labels has shape (24, 48, 40) "
         f"but raw {tmp_path}/shape/stack.h5:raw has shape (24, 48, 48)"),
        ("key", "[8,32,32]", "'labels'"),  # the key asked for ...
        ("float", "[8,32,32]", "float32; labels must be integers"),
    ]
    (tmp_path / "fit").mkdir()
    write_volume(tmp_path / "fit" / "stack.h5:raw", raw)
    write_volume(tmp_path / "fit" / "stack.h5:labels", np.ones((24, 48, 48), np.uint32))
    cases.append(("fit", "[30,32,32]", "data.patch_size"))
    for i, (root, patch, message) in enumerate(cases):
        over = [f"data.root={tmp_path / root}", f"data.patch_size={patch}",
                f"training.output_dir={tmp_path / 'r'}", *QUIET]
        if i < 2:  # through the CLI: one line, exit 2
            code = train_main(["--config-name", "volumes", *over])
            err = capsys.readouterr().err
            assert code == 2, (root, err)
            assert err.count("\n") == 1 and message in err, (root, err)
            continue
        with pytest.raises(TrainError) as exc:  # what the CLI turns into exit 2
            build_datamodule_from_cfg(compose_config("volumes", over), setup_stage="fit")
        assert message in str(exc.value) and "\n" not in str(exc.value)
        if root == "key":
            assert "['raw', 'seg']" in str(exc.value)  # ... and the keys found
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.slow
def test_readme_train_infer_evaluate(my_data, tmp_path, capsys):
    """The three commands of the README's 'Train on your own data' section, as written there."""
    from neurons.metrics.cli import main as eval_main
    from neurons.train.inference.cli import main as infer_main

    out = tmp_path / "outputs" / "volumes"
    assert train_main(["--config-name", "volumes", f"data.root={my_data}", "data.patch_size=[8,32,32]",
                       "training.max_steps=3", f"training.output_dir={out}", *QUIET]) == 0
    ckpt = out / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    seg = out / "test_segmentation.h5"
    assert infer_main([str(ckpt), f"{my_data}/test.h5:raw", str(seg), "--quiet", "--workers", "1"]) == 0
    ids = read_volume(f"{seg}:segmentation")
    assert ids.shape == (24, 48, 48) and ids.dtype == np.uint64
    capsys.readouterr()
    scores = tmp_path / "scores.json"
    assert eval_main([f"{my_data}/test.h5", str(seg), "--gt-key", "labels", "--pred-key",
                      "segmentation", "--json", str(scores)]) == 0
    assert "voi_split" in scores.read_text()


def _relay_isbi(folder: Path) -> Path:
    from PIL import Image

    def stack(sub):
        files = sorted((ISBI / "train" / sub).glob("*.png"), key=lambda p: int(p.stem))
        return np.stack([np.asarray(Image.open(f)) for f in files])

    write_volume(folder / "isbi.h5:raw", stack("image"))
    write_volume(folder / "isbi.h5:membranes", stack("label"))
    cfg = folder / "isbi_relay.yaml"
    cfg.write_text(
        "defaults: [volumes, _self_]\n"
        "experiment_name: isbi_relay\n"
        "data:\n"
        f"  root: {folder}\n"
        "  patch_size: [128, 128]\n"
        "  options:\n"
        "    volumes:\n"
        "      - {name: isbi, raw: 'isbi.h5:raw', labels: 'isbi.h5:membranes', label_kind: mask,\n"
        "         label_class: neuron, connectivity: 2d, voxel_size: [50, 4, 4]}\n"
        "    train: [{volume: isbi, z: [0, 23]}]\n"
        "    val: [{volume: isbi, z: [24, 30]}]\n"
        "model: {name: vista2d, preset: tiny}\n"
    )
    return cfg


@pytest.mark.slow
@pytest.mark.skipif(not ISBI.is_dir(), reason="ISBI 2012 data not present")
def test_isbi2012_relaid_as_one_hdf5_volume_gives_the_same_batches(tmp_path):
    from omegaconf import OmegaConf

    cfg_file = _relay_isbi(tmp_path)
    common = ["data.batch_size=2", "data.samples_per_epoch=6", "data.val_patches=3", "data.num_workers=0",
              "data.patch_size=[128,128]", "seed=7", "loss.weight_geometry=0"]
    ref = build_datamodule_from_cfg(compose_config("isbi2012", [f"data.root={ISBI}", *common]),
                                    setup_stage="fit")
    mine_cfg = OmegaConf.to_container(compose_config("volumes", [*common, "model.name=vista2d"]))
    relay = OmegaConf.to_container(OmegaConf.load(cfg_file).data)
    mine_cfg["data"].update(root=relay["root"], options=relay["options"])
    mine = build_datamodule_from_cfg(mine_cfg, setup_stage="fit")
    assert mine.train_regions[0].shape == ref.train_regions[0].shape == (23, 512, 512)
    for loader, n in (("train_dataloader", 3), ("val_dataloader", 2)):
        a_batches, b_batches = list(getattr(ref, loader)()), list(getattr(mine, loader)())
        assert len(a_batches) == len(b_batches) == n
        for a, b in zip(a_batches, b_batches, strict=True):
            keys = {k for k, v in a.items() if torch.is_tensor(v)}
            assert keys >= {"image", "instance", "semantic", "semantic_ids"} and keys == {
                k for k, v in b.items() if torch.is_tensor(v)}
            for key in keys:
                assert torch.equal(a[key], b[key]), (loader, key)
    # and a few training steps through data.name: volumes
    code = train_main(["--config-dir", str(tmp_path), "--config-name", "isbi_relay",
                       "training.max_steps=3", f"training.output_dir={tmp_path / 'run'}",
                       *QUIET, "data.patch_size=[128,128]", "loss.weight_geometry=0"])
    assert code == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
