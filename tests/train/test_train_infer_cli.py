"""neurons-infer end to end on a real (untrained) Vista checkpoint: files, previews, scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurons.io import read_volume, write_volume
from neurons.train.inference import InferenceError, run_inference, settings_from_config
from neurons.train.inference.cli import main


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _checkpoint(path, overrides):
    """A checkpoint in the layout neurons-train writes (config in hparams, 'model.' weights)."""
    from neurons.train import build_model_from_cfg, compose_config
    from neurons.train.config import to_plain_dict

    cfg = to_plain_dict(compose_config("synthetic", overrides))
    torch.manual_seed(0)
    model = build_model_from_cfg(cfg)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": cfg}}, path)
    return cfg


@pytest.fixture(scope="module")
def volume_files(tmp_path_factory):
    from neurons.data import make_synthetic_volume

    d = tmp_path_factory.mktemp("infer")
    v = make_synthetic_volume((12, 48, 40), seed=5)
    write_volume(d / "vol.h5:raw", v["raw"], voxel_size=v["voxel_size"])
    write_volume(d / "vol.h5:instance", v["instance"])
    return d, v


def test_cli_writes_segmentation_previews_and_scores(tmp_path, volume_files, capsys):
    d, v = volume_files
    ckpt = tmp_path / "model.ckpt"
    _checkpoint(ckpt, ["data.patch_size=[8,32,32]"])
    out = tmp_path / "seg.h5"
    code = main(
        [
            str(ckpt),
            str(d / "vol.h5:raw"),
            str(out),
            "--block-size",
            "8",
            "32",
            "32",
            "--overlap",
            "2",
            "4",
            "4",
            "--scheduler",
            "threads",
            "--workers",
            "2",
            "--gt",
            str(d / "vol.h5"),
            "--gt-key",
            "instance",
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "| voi_split |" in text and "| arand_cremi |" in text and "Mvoxel/s" in text
    seg = read_volume(out, "segmentation")
    sem = read_volume(out, "semantic")
    assert seg.shape == sem.shape == v["raw"].shape and seg.dtype == np.uint64
    for kind in ("raw", "pred", "semantic", "gt", "panel"):
        assert (tmp_path / f"seg.preview-{kind}.png").stat().st_size > 0
        assert f"preview {kind}:" in text
    scores = json.loads((tmp_path / "seg.scores.json").read_text())["metrics"]
    assert {"voi_split", "voi_merge", "arand_cremi"} <= set(scores)


@pytest.mark.slow
def test_processes_scheduler_loads_the_checkpoint_in_workers(tmp_path, volume_files):
    """Worker processes load the checkpoint themselves and give the threads result exactly."""
    d, _ = volume_files
    ckpt = tmp_path / "model.ckpt"
    _checkpoint(ckpt, ["data.patch_size=[8,32,32]"])
    common = ["--block-size", "8", "32", "32", "--overlap", "2", "4", "4", "--workers", "2",
              "--quiet", "--device", "cpu", "--no-previews"]  # fmt: skip
    outs = {}
    for scheduler in ("threads", "processes"):
        out = tmp_path / f"seg_{scheduler}.h5"
        argv = [str(ckpt), str(d / "vol.h5:raw"), str(out), "--scheduler", scheduler, *common]
        assert main(argv) == 0
        outs[scheduler] = read_volume(out, "segmentation")
    assert outs["threads"].max() > 0
    np.testing.assert_array_equal(outs["processes"], outs["threads"])


def test_2d_model_on_a_stack_runs_section_by_section(tmp_path, volume_files):
    d, v = volume_files
    ckpt = tmp_path / "model2d.ckpt"
    cfg = _checkpoint(ckpt, ["model.name=vista2d", "data.patch_size=[32,32]"])
    assert settings_from_config(cfg, 2).window.window == (32, 32)
    run = run_inference(
        ckpt,
        d / "vol.h5:raw",
        tmp_path / "seg2d.h5",
        block_size=(4, 48, 40),
        overlap=(0, 8, 8),
        scheduler="sync",
        device="cpu",
        previews=False,
        decoder="watershed",
        tta="flips",
    )
    seg = read_volume(tmp_path / "seg2d.h5", "segmentation")
    assert seg.shape == v["raw"].shape
    # decoded per section: no id spans two sections
    z_of = {}
    for z in range(seg.shape[0]):
        for i in np.unique(seg[z][seg[z] > 0]).tolist():
            assert z_of.setdefault(i, z) == z
    assert run.result.num_blocks == 3


def test_cli_reports_errors(tmp_path, volume_files, capsys):
    d, _ = volume_files
    code = main(
        [str(tmp_path / "missing.ckpt"), str(d / "vol.h5:raw"), str(tmp_path / "o.h5"), "--quiet"]
    )
    assert code == 2
    assert "missing.ckpt" in capsys.readouterr().err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main([str(bad), str(d / "vol.h5:raw"), str(tmp_path / "o.h5"), "--quiet"]) == 2
    assert "bad.ckpt" in capsys.readouterr().err
    with pytest.raises(InferenceError, match="needs a checkpoint"):
        run_inference(None, d / "vol.h5:raw", tmp_path / "o.h5")


class _Recorder(torch.nn.Module):
    """Stands in for the network: remembers every window it is given, predicts background."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        b, _, *sp = x.shape
        sem = torch.zeros((b, 5, *sp))
        sem[:, 0] = 10.0
        return {"semantic": sem, "instance": torch.zeros((b, 4, *sp))}


def _one_window(shape):
    """run_inference options that predict the whole volume as one window, one block."""
    return dict(
        window=shape,
        block_size=shape,
        overlap=(0, 0, 0),
        scheduler="sync",
        device="cpu",
        previews=False,
        decoder="watershed",
    )


@pytest.mark.parametrize(
    ("dtype", "lo", "hi"),
    [(np.uint16, 1000, 5000), (np.float32, -3.0, 7.0)],
)
def test_inference_normalises_like_the_training_pipeline(tmp_path, dtype, lo, hi):
    """A non-uint8 volume reaches the network scaled exactly as training scales it."""
    from neurons.data import ArraySource, LabeledVolume

    rng = np.random.default_rng(3)
    raw = rng.uniform(lo, hi, (6, 20, 24)).astype(dtype)
    raw.flat[0], raw.flat[-1] = lo, hi  # the range is non-trivial and known
    write_volume(tmp_path / "vol.h5:raw", raw)
    # what the training datamodules feed the network: LabeledVolume over the file
    train_vol = LabeledVolume(
        name="v", dataset="test", image=ArraySource.from_file(tmp_path / "vol.h5", "raw")
    )
    expected = train_vol.read()["image"]
    assert expected.min() == 0.0 and expected.max() == 1.0

    cfg = {"data": {"patch_size": list(raw.shape)}, "inference": {"intensity_range": None}}
    model = _Recorder()
    run_inference(
        None,
        tmp_path / "vol.h5:raw",
        tmp_path / "seg.h5",
        model=model,
        cfg=cfg,
        **_one_window(raw.shape),
    )
    assert len(model.inputs) == 1
    got = model.inputs[0][0, 0].numpy()
    np.testing.assert_array_equal(got, expected)


def test_inference_intensity_range_from_config_and_cli_override(tmp_path):
    raw = np.arange(6 * 8 * 8, dtype=np.uint16).reshape(6, 8, 8) * 10
    write_volume(tmp_path / "vol.h5:raw", raw)
    kw = _one_window(raw.shape)
    cfg = {"data": {"patch_size": list(raw.shape)}, "inference": {"intensity_range": [100, 1100]}}
    model = _Recorder()
    run_inference(None, tmp_path / "vol.h5:raw", tmp_path / "a.h5", model=model, cfg=cfg, **kw)
    want = np.clip((raw.astype(np.float32) - 100) * np.float32(1 / 1000), 0, 1)
    np.testing.assert_array_equal(model.inputs[0][0, 0].numpy(), want)
    model = _Recorder()
    run_inference(
        None,
        tmp_path / "vol.h5:raw",
        tmp_path / "b.h5",
        model=model,
        cfg=cfg,
        intensity_range=(0, 20000),
        **kw,
    )
    np.testing.assert_allclose(model.inputs[0][0, 0].numpy(), raw / 20000, rtol=1e-6)
    with pytest.raises(InferenceError, match="lo < hi"):
        run_inference(
            None,
            tmp_path / "vol.h5:raw",
            tmp_path / "c.h5",
            model=_Recorder(),
            cfg=cfg,
            intensity_range=(5, 5),
            **kw,
        )
