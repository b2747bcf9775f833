"""Issue 11: every shipped recipe trains through the CLI on files laid out and sized like the real
downloads (real depths, tiny XY), and the recipe-level fixes (voxel size, 2-D SegResNet, instance
loss selection, CREMI decoding) hold."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from neurons.train import ConfigError, compose_config, run_training
from neurons.train.builders import build_loss_from_cfg, build_model_from_cfg, dataset_voxel_size
from neurons.train.cli import train_main

os.environ.setdefault("WANDB_MODE", "disabled")

XY = 40  # tiny in-plane size; the depths are the real ones


# ------------------------------------------------------------------------------------------------
# generated files in the real layouts and depths
# ------------------------------------------------------------------------------------------------
def _cells(shape, rng, block=(5, 10, 10), dense=False):
    """Box-shaped cells (membranes between them unless ``dense``) and an EM-like image."""
    z, y, x = np.indices(shape)
    bz, by, bx = block
    ids = (z // bz) * 10000 + (y // by) * 100 + (x // bx) + 1
    membrane = (y % by == 0) | (x % bx == 0)
    if not dense:
        ids = np.where(membrane, 0, ids)
    raw = np.where(membrane, 40, 190) + rng.normal(0, 12, shape)
    return np.clip(raw, 0, 255).astype(np.uint8), ids


def write_snemi3d(root: Path) -> Path:
    import tifffile

    root.mkdir(parents=True, exist_ok=True)
    raw, ids = _cells((100, XY, XY), np.random.default_rng(1))  # AC4: 100 sections
    tifffile.imwrite(root / "train-input.tif", raw)
    tifffile.imwrite(root / "train-labels.tif", ids.astype(np.uint32))
    tifffile.imwrite(root / "test-input.tif", raw[:16])
    return root


def write_cremi3d(root: Path) -> Path:
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    nodata = np.iinfo(np.uint64).max
    rng = np.random.default_rng(2)
    for i, v in enumerate("ABC"):  # 125 sections each, dense neuron labels
        raw, ids = _cells((125, XY, XY), rng, dense=True)
        ids = ids.astype(np.uint64) + np.uint64(1_000_000 * i)
        ids[:, :, :2] = nodata
        clefts = np.full(ids.shape, nodata, dtype=np.uint64)
        clefts[:, 9:11, 12:30] = 7
        with h5py.File(root / f"sample_{v}_20160501.hdf", "w") as f:
            f.create_dataset("volumes/raw", data=raw).attrs["resolution"] = (40.0, 4.0, 4.0)
            f.create_dataset("volumes/labels/neuron_ids", data=ids)
            f.create_dataset("volumes/labels/clefts", data=clefts)
    return root


def write_microns(root: Path) -> Path:
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    raw, ids = _cells((64, XY, XY), np.random.default_rng(3), dense=True)  # download default Z
    seg = ids.astype(np.uint64) + np.uint64(864691135000000000)
    with h5py.File(root / "minnie65_mip1_crop_64_volume.h5", "w") as f:
        f.create_dataset("main", data=raw)
    with h5py.File(root / "minnie65_mip1_crop_64_v1300_segmentation.h5", "w") as f:
        f.create_dataset("main", data=seg)
    return root


def write_mitoem2(root: Path) -> Path:
    import nibabel as nib
    from scipy import ndimage

    rng = np.random.default_rng(4)
    sub = root / "Dataset001_ME2-Beta"
    (sub / "imagesTr").mkdir(parents=True, exist_ok=True)
    (sub / "labelsTr").mkdir(parents=True, exist_ok=True)
    for case in ("beta_0", "beta_1"):
        raw, ids = _cells((100, XY, XY), rng, block=(8, 13, 13))
        mito = (ids > 0) & (ids % 3 == 0)
        lab = mito.astype(np.uint8)
        lab[mito & ~ndimage.binary_erosion(mito)] = 2
        affine = np.diag([16.0, 16.0, 16.0, 1.0])
        nib.save(nib.Nifti1Image(raw.T.copy(), affine), sub / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab.T.copy(), affine), sub / "labelsTr" / f"{case}.nii.gz")
    return root


def write_isbi2012(root: Path) -> Path:
    from PIL import Image

    for part in ("image", "label"):
        (root / "train" / part).mkdir(parents=True, exist_ok=True)
    raw, ids = _cells((30, 64, 64), np.random.default_rng(5), block=(1, 16, 16))  # 30 sections
    for i in range(30):
        Image.fromarray(raw[i]).save(root / "train" / "image" / f"{i:02d}.png")
        Image.fromarray(np.where(ids[i] > 0, 255, 0).astype(np.uint8)).save(
            root / "train" / "label" / f"{i:02d}.png"
        )
    return root


WRITERS = {
    "snemi3d": write_snemi3d,
    "cremi3d": write_cremi3d,
    "microns": write_microns,
    "mitoem2": write_mitoem2,
    "isbi2012": write_isbi2012,
}


@pytest.fixture(scope="module")
def real_roots(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("real_layouts")
    for name, writer in WRITERS.items():
        writer(base / name)
    return base


def _run_overrides(name: str, base: Path, out: Path) -> list[str]:
    cfg = compose_config(name)
    patch = list(cfg.data.patch_size)
    small = [32, 32] if len(patch) == 2 else [patch[0], 32, 32]  # the recipe's depth, tiny XY
    root = base if name == "combine" else base / name
    ov = [
        f"data.root={root}",
        f"data.patch_size=[{','.join(map(str, small))}]",
        "data.num_workers=0",
        "data.pin_memory=false",
        "data.samples_per_epoch=4",
        "data.val_patches=1",
        "model.preset=tiny",
        "training.max_steps=2",
        "training.num_sanity_val_steps=0",
        "training.limit_val_batches=1",
        "training.cpu_threads=1",
        "training.precision=32-true",
        "training.accelerator=cpu",
        f"training.output_dir={out}",
        "logging.loggers=[]",
        "logging.progress_bar=none",
        "logging.model_summary=false",
        "checkpoint.enabled=false",
    ]
    if name == "synthetic":
        ov = [o for o in ov if not o.startswith("data.root")]
        ov.append("++data.options.shape=[32,40,40]")
    return ov


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------
# every recipe starts and trains through the CLI
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["snemi3d", "cremi3d", "microns", "mitoem2", "isbi2012", "synthetic", "combine"]
)
def test_recipe_trains_through_the_cli(name, real_roots, tmp_path, capsys):
    code = train_main(["--config-name", name, *_run_overrides(name, real_roots, tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()


def test_recipe_val_slab_fits_the_patch_depth(real_roots):
    """SNEMI3D AC4 (100 sections) with the recipe's 32-deep patches: val slab 32, not 20."""
    from neurons.train.builders import build_datamodule_from_cfg

    cfg = compose_config("snemi3d", _run_overrides("snemi3d", real_roots, real_roots / "o"))
    dm = build_datamodule_from_cfg(cfg, setup_stage="fit")
    (val,) = dm.val_regions
    (train,) = dm.train_regions
    assert (val.z0, val.z1) == (68, 100) and (train.z0, train.z1) == (0, 64)
    assert len(dm.val_set) >= 1 and dm.val_set[0]["image"].shape[1] == 32


def test_patch_deeper_than_the_data_exits_2_with_one_line(real_roots, tmp_path, capsys):
    ov = _run_overrides("snemi3d", real_roots, tmp_path / "run") + ["data.patch_size=[60,32,32]"]
    code = train_main(["--config-name", "snemi3d", *ov])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert "val_fraction" in lines[0] and "patch_size" in lines[0]


# ------------------------------------------------------------------------------------------------
# instance loss selection: each trains from its config
# ------------------------------------------------------------------------------------------------
def _synthetic(tmp_path, *extra: str) -> list[str]:
    return [
        f"training.output_dir={tmp_path / 'run'}",
        "data.patch_size=[8,32,32]",
        "data.samples_per_epoch=4",
        "data.val_patches=1",
        "data.augment=false",
        "++data.options.shape=[16,40,40]",
        "model.preset=tiny",
        "training.max_steps=3",
        "training.modes=[automatic]",
        "training.num_sanity_val_steps=0",
        "training.limit_val_batches=1",
        "training.cpu_threads=1",
        "logging.loggers=[]",
        "logging.progress_bar=none",
        "logging.model_summary=false",
        "checkpoint.enabled=false",
        *extra,
    ]


class _Terms:
    """Collects the training-step loss terms."""

    def __init__(self):
        import lightning.pytorch as pl

        class CB(pl.Callback):
            def __init__(cb):
                cb.seen: list[dict[str, float]] = []
                cb.initial: dict[str, torch.Tensor] = {}

            def on_train_start(cb, trainer, module):
                cb.initial = {k: v.detach().clone() for k, v in module.loss.state_dict().items()}

            def on_train_batch_end(cb, trainer, module, outputs, batch, batch_idx):
                cb.seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})

        self.cb = CB()


def test_centroid_instance_loss_trains_its_projection_heads(tmp_path):
    cfg = compose_config("synthetic", _synthetic(tmp_path, "loss.instance=centroid",
                                                 "loss.weight_geometry=0.0"))
    terms = _Terms()
    result = run_training(cfg, extra_callbacks=[terms.cb])
    loss = result.module.loss.instance
    from neurons.losses import CentroidEmbeddingLoss

    assert isinstance(loss, CentroidEmbeddingLoss)
    assert loss.proj_dir.weight.shape == (3, 16) and loss.proj_cov.weight.shape == (9, 16)
    assert loss.proj_raw.weight.shape == (4, 16)
    # the heads are optimised with the model: they moved away from their initialisation
    for name in ("proj_dir", "proj_cov", "proj_raw"):
        start = terms.cb.initial[f"instance.{name}.weight"]
        assert not torch.equal(getattr(loss, name).weight.detach(), start), name
    opt_params = {id(p) for g in result.trainer.optimizers[0].param_groups for p in g["params"]}
    assert id(loss.proj_dir.weight) in opt_params and id(loss.proj_raw.weight) in opt_params
    logged = terms.cb.seen[-1]
    for key in ("pull", "push", "norm", "dir", "cov", "raw"):
        v = logged[f"train/automatic/loss_ins/{key}"]
        assert np.isfinite(v)
    assert logged["train/automatic/loss_ins/dir"] > 0


def test_skeleton_instance_loss_trains_offsets(tmp_path):
    with pytest.raises(ConfigError, match="model.emb_dim"):
        build_loss_from_cfg(compose_config("synthetic", ["loss.instance=skeleton"]))
    cfg = compose_config("synthetic", _synthetic(tmp_path, "loss.instance=skeleton",
                                                 "model.emb_dim=3"))
    terms = _Terms()
    result = run_training(cfg, extra_callbacks=[terms.cb])
    from neurons.losses import SkeletonEmbeddingLoss

    assert isinstance(result.module.loss.instance, SkeletonEmbeddingLoss)
    logged = terms.cb.seen[-1]
    for key in ("pull", "push", "penalty", "benefit"):
        assert np.isfinite(logged[f"train/automatic/loss_ins/{key}"])
    assert logged["train/automatic/loss_ins/pull"] > 0
    assert "val/loss" in result.trainer.logged_metrics


def test_unknown_instance_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="instance"):
        from neurons.train import VistaModule

        VistaModule(compose_config("synthetic", ["loss.instance=centroids"]))


# ------------------------------------------------------------------------------------------------
# SegResNet dimensionality, voxel size
# ------------------------------------------------------------------------------------------------
def test_segresnet_with_a_2d_config_is_2d_and_trains(tmp_path):
    cfg = compose_config("isbi2012", ["model.name=segresnet", "model.preset=tiny"])
    model = build_model_from_cfg(cfg)
    assert model.spatial_dims == 2
    out = model(torch.rand(1, 1, 32, 32))
    assert out["semantic"].shape == (1, 16, 32, 32)
    from neurons.train.config import to_plain_dict

    plain = to_plain_dict(compose_config("isbi2012"))
    plain["model"]["name"] = "segresnet3d"  # a registry name the config schema does not list
    with pytest.raises(ConfigError, match="data.patch_size"):
        build_model_from_cfg(plain)
    with pytest.raises(ConfigError, match="spatial_dims"):
        build_model_from_cfg(compose_config("isbi2012", ["model.name=segresnet",
                                                         "+model.options.spatial_dims=3"]))
    cfg = compose_config("synthetic", _synthetic(tmp_path, "model.name=segresnet",
                                                 "data.patch_size=[32,32]", "training.max_steps=2"))
    result = run_training(cfg)
    assert result.trainer.global_step == 2


def test_voxel_size_reaches_model_and_geometry_targets():
    from neurons.train import VistaModule

    cfg = compose_config("snemi3d", ["model.preset=tiny"])
    assert dataset_voxel_size(cfg) == (30.0, 6.0, 6.0)
    module = VistaModule(cfg)  # the dataset's voxel size is resolved into the stored config
    assert module.hparams["cfg"]["data"]["voxel_size"] == [30.0, 6.0, 6.0]
    aniso = module.model
    assert tuple(aniso.config["resolution"]) == (30.0, 6.0, 6.0)
    assert module.loss.geometry.sampling == (30.0, 6.0, 6.0)
    # a checkpoint of an older run (no voxel size in its config) rebuilds its isotropic model
    assert "resolution" not in build_model_from_cfg(cfg).config
    cfg = compose_config("snemi3d", ["model.preset=tiny", "data.voxel_size=[30,6,6]"])
    iso = build_model_from_cfg(compose_config("snemi3d", ["model.preset=tiny",
                                                          "data.voxel_size=[6,6,6]"]))
    # anisotropic data: in-plane-only downsampling first, so z is divided less than y and x
    fz, fy, fx = aniso.shape_factor()
    assert fz < fy == fx and iso.shape_factor() == (4, 4, 4)
    loss = build_loss_from_cfg(cfg)
    assert loss.geometry.sampling == (30.0, 6.0, 6.0)
    # the sampling changes the targets: distances along z weigh 5x
    from neurons.losses import targets as T

    lab = torch.zeros(1, 9, 9, 9, dtype=torch.long)
    lab[0, 1:8, 1:8, 1:8] = 1
    a = T.instance_edt(lab, loss.geometry.sampling)[0, 4, 4, 4]
    b = T.instance_edt(lab)[0, 4, 4, 4]
    assert float(a) == pytest.approx(4 * 6.0) and float(b) == pytest.approx(4.0)
    cremi = compose_config("cremi3d", ["model.preset=tiny", "data.voxel_size=[40,4,4]"])
    assert tuple(build_model_from_cfg(cremi).config["resolution"]) == (40.0, 4.0, 4.0)
    assert dataset_voxel_size(compose_config("mitoem2")) is None  # differs per sub-dataset


# ------------------------------------------------------------------------------------------------
# CREMI: touching neurons, clefts
# ------------------------------------------------------------------------------------------------
def _cremi_case():
    """Dense neuron ids (no membrane) of 4 touching neurons and a cleft at one contact."""
    ids = np.zeros((6, 24, 24), np.uint64)
    ids[:, :12, :12] = 11
    ids[:, :12, 12:] = 12
    ids[:, 12:, :12] = 2**63 + 13  # ids beyond float precision
    ids[:, 12:, 12:] = 14
    ids[:, 0, :] = np.iinfo(np.uint64).max  # no data
    clefts = np.full(ids.shape, np.iinfo(np.uint64).max, np.uint64)
    clefts[:, 3:8, 11:13] = 5  # on the 11 | 12 contact
    return ids, clefts


def test_cremi_perfect_semantic_prediction_scores_perfectly():
    from neurons.data.labels import cremi_to_unified
    from neurons.train.evaluation import decode_components, score_patch

    ids, clefts = _cremi_case()
    inst, sem = cremi_to_unified(ids, clefts)
    # cleft voxels carry an id of their own, not a neuron's
    cleft = sem == 2
    assert cleft.any() and not np.isin(inst[cleft], ids[sem == 1]).any()
    assert len(np.unique(inst[cleft])) == 1
    pred = decode_components(sem, min_size=1)
    s = score_patch(inst, pred, sem, sem)
    assert s["ari"] > 0.999 and s["voi"] < 1e-6 and s["arand"] < 1e-6
    # the old mapping (every labelled voxel "neuron", cleft keeping the neuron id) merges them
    old_sem = np.where(ids == np.iinfo(np.uint64).max, 255, 1).astype(np.uint8)
    old_pred = decode_components(old_sem, min_size=1)
    old = score_patch(np.where(old_sem == 255, 0, ids), old_pred, old_sem, old_sem)
    assert old["ari"] < 0.1 and old["voi"] > 1.0


def test_embedding_decoder_groups_an_instance_across_classes():
    """Validation rule = loss rule: one instance id over several classes is one object."""
    from neurons.train.evaluation import decode_embedding

    sem = np.zeros((1, 20, 20), np.int64)
    sem[0, 2:10, 2:10] = 4  # mitochondrion rim ...
    sem[0, 4:8, 4:8] = 3  # ... and interior, one id
    sem[0, 12:18, 12:18] = 1
    emb = torch.zeros(2, 1, 20, 20)
    emb[0][torch.from_numpy(np.isin(sem, (3, 4)))] = 3.0
    emb[1][torch.from_numpy(sem == 1)] = 3.0
    fg = torch.from_numpy(sem > 0)
    pred = decode_embedding(emb, fg, bandwidth=0.5, min_size=1)
    mito = pred[np.isin(sem, (3, 4))]
    assert len(np.unique(mito)) == 1 and mito[0] > 0
    assert pred[sem == 1][0] not in (0, mito[0])


@pytest.mark.slow
def test_geometry_targets_come_from_the_data_pipeline():
    """The loss's targets are computed once per item in the DataLoader (workers), not per step."""
    from neurons.losses import targets as T
    from neurons.train.builders import build_datamodule_from_cfg

    cfg = compose_config("synthetic", [
        "data.patch_size=[8,24,24]", "++data.options.shape=[12,32,32]", "data.augment=false",
        "loss.weight_geometry=1.0", "loss.dir_target=skeleton", "model.preset=tiny",
        "data.samples_per_epoch=2", "data.val_patches=1",
    ])
    dm = build_datamodule_from_cfg(cfg, setup_stage="fit")
    batch = next(iter(dm.train_dataloader()))
    ref = T.geometry_targets(batch["instance"], dir_target="skeleton")  # oracle: same function
    torch.testing.assert_close(batch["direction"], ref["direction"])
    torch.testing.assert_close(batch["structure"], ref["structure"])
    loss = build_loss_from_cfg(cfg)
    with torch.no_grad():
        out = build_model_from_cfg(cfg)(batch["image"])
    with_pre = loss(out, batch)
    without = loss(out, {k: batch[k] for k in ("image", "semantic", "instance", "semantic_ids")})
    torch.testing.assert_close(with_pre["loss_geom"], without["loss_geom"])
    # the loss used the batch's targets: corrupting them changes the direction term
    bad = dict(batch, direction=-batch["direction"])
    assert float(loss(out, bad)["loss_geom/dir"]) != pytest.approx(float(with_pre["loss_geom/dir"]))


def test_instance_weights_come_from_the_data_pipeline():
    from neurons.losses.vista import instance_weights
    from neurons.train.builders import GeometryTargets

    cfg = compose_config("synthetic", ["data.patch_size=[6,16,16]"])
    gt = GeometryTargets.from_cfg(cfg)  # synthetic: geometry off, vista weights 10 / 10
    assert gt is not None and gt.weights == (10.0, 10.0) and not gt.direction
    lab = torch.zeros(6, 16, 16, dtype=torch.long)
    lab[:, 2:9, 2:12] = 1
    lab[:, 10:15, 3:14] = 2
    item = gt({"instance": lab})
    ref = instance_weights(lab[None], 10.0, 10.0).reshape(lab.shape)
    torch.testing.assert_close(item["instance_weights"], ref)
    loss = build_loss_from_cfg(cfg)
    emb = torch.randn(1, 16, 6, 16, 16)
    tg = {"semantic": (lab > 0).long()[None], "instance": lab[None]}
    a = loss._instance_terms(emb, tg)["loss"]
    b = loss._instance_terms(emb, dict(tg, instance_weights=item["instance_weights"][None]))
    torch.testing.assert_close(a, b["loss"])
    flat = loss._instance_terms(emb, dict(tg, instance_weights=torch.ones(1, 6, 16, 16)))
    assert float(flat["loss"]) != pytest.approx(float(a))  # the supplied weights are used
