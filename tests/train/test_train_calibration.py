"""Decoder calibration: search, storage, training hook, neurons-tune and neurons-infer defaults."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from neurons.train.calibration import (
    CALIBRATION_KEY,
    CalibrationError,
    CalibrationResult,
    ValidationSample,
    decode_with,
    embed_calibration,
    get_objective,
    parameter_grid,
    read_calibration,
    search_decoders,
    sidecar_path,
    write_sidecar,
)
from neurons.train.calibration.resolve import (
    apply_decoder,
    choose_decoder,
    foreground_fraction,
    warn_if_empty,
)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Same background and a one-to-one map between the ids of ``a`` and ``b`` (brute force)."""
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = {(int(x), int(y)) for x, y in zip(a[a > 0].tolist(), b[b > 0].tolist(), strict=True)}
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def _touching_cells(shape=(4, 32, 32)):
    """Two touching boxes (no membrane between them); uint64 ids."""
    gt = np.zeros(shape, np.uint64)
    gt[:, 2:30, 2:14] = 2**60 + 1
    gt[:, 2:30, 14:28] = 2**60 + 7
    return gt


def _semantic_from(gt: np.ndarray) -> np.ndarray:
    """Class probabilities: neuron (1) wherever gt is foreground, background elsewhere."""
    probs = np.zeros((5, *gt.shape), np.float32)
    probs[1] = gt > 0
    probs[0] = gt == 0
    return probs


# ------------------------------------------------------------------------------------------------
# search: the decoder that can be right wins
# ------------------------------------------------------------------------------------------------
def test_search_picks_embedding_when_only_the_embedding_separates_touching_cells():
    gt = _touching_cells()
    emb = np.zeros((2, *gt.shape), np.float32)
    emb[0][gt == 2**60 + 7] = 5.0  # ideal embedding: one point per instance, far apart
    sample = ValidationSample("touching", {"semantic": _semantic_from(gt), "instance": emb}, gt)
    res = search_decoders([sample], decoders=["watershed", "embedding"], metric="cremi", budget=4)
    # the seeded watershed sees one uniform foreground blob: it cannot split the two cells
    assert res.per_decoder["watershed"].score > 0.3
    assert res.decoder == "embedding" and res.score == pytest.approx(0.0, abs=1e-9)
    pred = decode_with(sample.outputs, res.decoder, res.params)
    assert _same_partition(pred, gt)


def test_search_picks_watershed_when_the_embedding_is_uninformative():
    gt = np.zeros((4, 32, 32), np.uint64)
    gt[:, 2:15, 2:30] = 3
    gt[:, 15:30, 2:30] = 9  # touching cells, no background between them
    probs = _semantic_from(gt)
    probs[:, :, 14:16, 2:30] = np.array([0.3, 0.4, 0.0, 0.3, 0.0])[:, None, None, None]
    # ... but the probability dips on their border (argmax still neuron): only a watershed
    # of the probability can split them; the embedding is one point for everything
    emb = np.zeros((2, *gt.shape), np.float32)
    sample = ValidationSample("rows", {"semantic": probs, "instance": emb}, gt)
    res = search_decoders([sample], decoders=["embedding", "watershed"], metric="arand", budget=4)
    assert res.decoder == "watershed" and res.score == pytest.approx(0.0, abs=1e-9)
    assert res.per_decoder["embedding"].score > 0.3
    assert res.key == "arand_cremi" and not res.higher_is_better


def test_search_of_the_semantic_mode_is_stored_and_applied():
    from neurons.train.inference import DecodeConfig, decode_instances

    gt = np.zeros((4, 32, 32), np.uint64)
    gt[:, :, :16], gt[:, :, 16:] = 5, 6  # two cells filling everything (no background)
    probs = np.zeros((5, *gt.shape), np.float32)
    probs[0] = 1.0
    probs[:, :, 8:24, 4:12] = np.array([0, 1, 0, 0, 0])[:, None, None, None]  # only the cores
    probs[:, :, 8:24, 20:28] = np.array([0, 1, 0, 0, 0])[:, None, None, None]  # are "neuron"
    sample = ValidationSample("dense", {"semantic": probs}, gt)
    res = search_decoders(
        [sample],
        decoders=["watershed"],
        metric="arand",
        budget=2,
        semantic_modes=["classes", "dense"],
    )
    # only "dense" (neurons fill the background too) can label every voxel of the two cells
    assert res.semantic_mode == "dense" and res.per_decoder["watershed"].trials == 4
    assert res.score < 0.05
    choice = choose_decoder(res)
    assert choice.semantic_mode == "dense" and "semantic_mode=dense" in choice.describe()
    dec = apply_decoder(DecodeConfig(), choice)
    assert dec.dense and dec.method == "watershed"
    ins, _ = decode_instances(sample.outputs, dec)
    assert _same_partition(
        ins, decode_with(sample.outputs, "watershed", res.params, semantic_mode="dense")
    )


def test_search_maximises_ap_and_skips_decoders_without_their_output():
    gt = np.zeros((1, 20, 20), np.uint64)
    gt[0, 2:8, 2:8], gt[0, 11:18, 11:18] = 1, 2
    sample = ValidationSample("ap", {"semantic": _semantic_from(gt)}, gt)
    res = search_decoders([sample], decoders=["watershed", "embedding"], metric="ap75", budget=3)
    assert res.higher_is_better and res.decoder == "watershed"
    assert res.score == pytest.approx(1.0)
    assert res.per_decoder["embedding"].params is None
    assert "instance" in res.per_decoder["embedding"].skipped


def test_parameter_grid_defaults_first_budget_and_objective_errors():
    grid = parameter_grid({"a": [1, 2, 3], "b": [0, 1]}, {"a": 1, "b": 0, "c": 5}, budget=4)
    assert grid[0] == {"a": 1, "b": 0, "c": 5} and len(grid) == 4
    assert len({tuple(sorted(g.items())) for g in grid}) == 4 and all(g["c"] == 5 for g in grid)
    full = parameter_grid({"a": [1, 2, 3], "b": [0, 1]}, {"a": 1, "b": 0})
    assert len(full) == 6  # the defaults are one of the grid points, listed once
    assert get_objective("ap75").better(0.9, 0.5) and get_objective("voi").better(0.1, 0.5)
    with pytest.raises(CalibrationError, match="calibration metric 'nope'"):
        get_objective("nope")
    with pytest.raises(CalibrationError, match="unknown decoder"):
        search_decoders([ValidationSample("x", {}, np.zeros((2, 2)))], decoders=["nope"])


# ------------------------------------------------------------------------------------------------
# storage
# ------------------------------------------------------------------------------------------------
def _result(decoder="watershed", **params) -> CalibrationResult:
    return CalibrationResult(
        decoder=decoder,
        params=params or {"seed_threshold": 0.6},
        metric="cremi",
        key="cremi_score",
        higher_is_better=False,
        score=0.25,
        samples=2,
    )


def test_embed_keeps_weights_only_loading_and_sidecar_detects_stale(tmp_path):
    ck = tmp_path / "last.ckpt"
    weights = {"model.w": torch.arange(6.0)}
    torch.save({"state_dict": weights, "global_step": 7, "hyper_parameters": {"cfg": {}}}, ck)
    assert read_calibration(ck) is None
    embed_calibration(ck, _result())
    loaded = torch.load(ck, weights_only=True)
    assert torch.equal(loaded["state_dict"]["model.w"], weights["model.w"])
    assert loaded[CALIBRATION_KEY]["decoder"] == "watershed"
    assert loaded[CALIBRATION_KEY]["global_step"] == 7
    assert read_calibration(ck).params == {"seed_threshold": 0.6}
    # a sidecar for this very checkpoint wins over the embedded entry ...
    side = write_sidecar(ck, _result("embedding", bandwidth=0.7))
    assert (
        side == sidecar_path(ck) and json.loads(side.read_text())["checkpoint"]["global_step"] == 7
    )
    assert read_calibration(ck).decoder == "embedding"
    # ... until the checkpoint changes (training resumed): then it is ignored, loudly
    torch.save({"state_dict": weights, "global_step": 9, CALIBRATION_KEY: _result().to_dict()}, ck)
    with pytest.warns(UserWarning, match="another state"):
        assert read_calibration(ck).decoder == "watershed"


def test_choose_decoder_precedence():
    cal = _result(seed_threshold=0.6, min_size=20)
    c = choose_decoder(cal)
    assert (c.decoder, c.params, c.source) == ("watershed", cal.params, "calibrated")
    assert "validation cremi_score 0.2500" in c.describe()
    c = choose_decoder(cal, None, {"min_size": 5, "bandwidth": None})
    assert c.params == {"seed_threshold": 0.6, "min_size": 5} and c.source == "calibrated+flags"
    c = choose_decoder(cal, "embedding")
    assert (c.decoder, c.params, c.source) == ("embedding", {}, "flags")
    assert (
        choose_decoder(None).source == "defaults"
        and "neurons-tune" in choose_decoder(None).describe()
    )


# ------------------------------------------------------------------------------------------------
# empty output where foreground is predicted
# ------------------------------------------------------------------------------------------------
def test_warn_if_empty_counts_foreground():
    sem = np.zeros((4, 10, 10), np.uint8)
    sem[0, 0, :3] = 1  # 0.75 % foreground: an empty result is plausible, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_empty(0, sem)
        assert not warn_if_empty(3, np.ones_like(sem))
    sem[1:3] = 1
    assert foreground_fraction(sem) == pytest.approx(0.5075)
    with pytest.warns(UserWarning, match=r"EMPTY SEGMENTATION.*'watershed'.*50\.\d %"):
        assert warn_if_empty(0, sem, decoder="watershed")


class _ConstantModel(torch.nn.Module):
    """Predicts neuron probability ``p`` everywhere (no boundaries at all)."""

    spatial_dims = 3

    def __init__(self, p: float):
        super().__init__()
        self.logit = float(np.log(p / (1 - p)))

    def forward(self, x):
        sem = torch.full((x.shape[0], 5, *x.shape[2:]), -12.0)
        sem[:, 1] = self.logit  # p(neuron) ~ p with a softmax or a sigmoid activation
        return {"semantic": sem}


def test_run_inference_warns_when_decoder_returns_nothing_on_foreground(tmp_path):
    from neurons.io import write_volume
    from neurons.train.inference import run_inference

    write_volume(f"{tmp_path / 'raw.h5'}:raw", np.full((8, 16, 16), 100, np.uint8))
    cfg = {"data": {"patch_size": [8, 16, 16]}, "inference": {"min_size": 0}}
    model = _ConstantModel(0.9)
    kw = dict(cfg=cfg, previews=False, device="cpu", scheduler="sync")
    with pytest.warns(UserWarning, match="EMPTY SEGMENTATION"):
        run = run_inference(
            None, f"{tmp_path / 'raw.h5'}:raw", tmp_path / "a.h5", model=model, decoder="watershed",
            decode_options={"seed_threshold": 1.0}, **kw,
        )  # fmt: skip
    assert run.result.num_objects == 0
    with warnings.catch_warnings():  # the robust default seeds (no seed threshold) find it
        warnings.simplefilter("error", UserWarning)
        run = run_inference(
            None, f"{tmp_path / 'raw.h5'}:raw", tmp_path / "b.h5", model=model,
            decoder="watershed", **kw,
        )  # fmt: skip
    assert run.result.num_objects == 1


# ------------------------------------------------------------------------------------------------
# end to end: training calibrates, neurons-infer uses it, flags override, neurons-tune
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    import importlib.util
    from pathlib import Path

    from neurons.train import compose_config, run_training

    spec = importlib.util.spec_from_file_location(
        "_train_conftest", Path(__file__).with_name("conftest.py")
    )
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    out = tmp_path_factory.mktemp("calrun")
    cfg = compose_config(
        "synthetic",
        conftest.tiny_overrides(
            out / "run",
            "training.max_steps=4",
            "training.max_epochs=1",
            "logging.loggers=[]",
            "checkpoint.every_n_train_steps=3",
            "calibration.enabled=true",
            "calibration.budget=3",
            "calibration.decoders=[watershed,mutex_watershed]",
        ),
    )
    result = run_training(cfg)
    return out, result


def test_training_stores_calibration_in_last_checkpoint(calibrated_run):
    out, result = calibrated_run
    cal = result.calibration
    assert cal is not None and result.last_checkpoint is not None
    stored = read_calibration(result.last_checkpoint)
    assert stored is not None
    assert json.dumps(stored.to_dict(), sort_keys=True) == json.dumps(cal.to_dict(), sort_keys=True)
    assert stored.decoder in ("watershed", "mutex_watershed") and stored.metric == "cremi"
    assert stored.global_step == result.trainer.global_step == 4
    tried = {n: r for n, r in stored.per_decoder.items() if r.params is not None}
    assert stored.score == min(r.score for r in tried.values())
    assert all(1 <= r.trials <= 3 for r in tried.values())
    # the config's validation split (the held-out synthetic volume), never the test data
    assert stored.samples == 1 and stored.voxels == 16 * 48 * 48


def _infer(argv, capsys):
    from neurons.train.inference.cli import main

    code = main(argv)
    return code, capsys.readouterr()


def test_neurons_infer_without_flags_uses_calibration_and_flags_override(calibrated_run, capsys):
    from neurons.data import make_synthetic_volume
    from neurons.io import read_volume, write_volume
    from neurons.train.calibration import model_offsets
    from neurons.train.inference import load_model, predict_volume, settings_from_config

    out, result = calibrated_run
    ckpt = result.last_checkpoint
    cal = read_calibration(ckpt)
    vol = make_synthetic_volume((8, 40, 40), seed=5)
    raw = out / "raw.h5"
    write_volume(f"{raw}:raw", vol["raw"])
    common = [ckpt, f"{raw}:raw", "--block-size", "8", "40", "40", "--quiet", "--no-previews"]
    common += ["--device", "cpu", "--scheduler", "sync"]
    code, cap = _infer([common[0], common[1], str(out / "a.h5"), *common[2:]], capsys)
    assert code == 0, cap.err
    line = re.search(
        r"^decoder: (\w+) \{(.*)\} \(calibrated; validation cremi_score ([0-9.]+)", cap.out, re.M
    )
    assert line, cap.out
    assert line.group(1) == cal.decoder and float(line.group(3)) == pytest.approx(
        cal.score, abs=1e-4
    )
    # the output equals decoding the model's outputs with the stored parameters
    model, cfg = load_model(ckpt, "cpu")
    sw = replace(settings_from_config(cfg, 3).window, intensity_range=(0.0, 255.0))  # uint8 raw
    outputs = predict_volume(model, vol["raw"], sw)
    expected = decode_with(outputs, cal.decoder, cal.params, offsets=model_offsets(model, cfg))
    seg = read_volume(f"{out / 'a.h5'}:segmentation")
    assert _same_partition(seg, expected)
    # an explicit decoder flag overrides the calibration
    other = "embedding" if cal.decoder == "watershed" else "watershed"
    code, cap = _infer(
        [common[0], common[1], str(out / "b.h5"), *common[2:], "--decoder", other], capsys
    )
    assert code == 0, cap.err
    assert re.search(
        rf"^decoder: {other} \{{\}} \(flags; calibrated was {cal.decoder}", cap.out, re.M
    )
    # a parameter flag alone keeps the calibrated decoder and changes only that parameter
    code, cap = _infer(
        [common[0], common[1], str(out / "c.h5"), *common[2:], "--min-size", "7"], capsys
    )
    assert code == 0, cap.err
    assert re.search(rf"^decoder: {cal.decoder} .*min_size=7.*\(calibrated\+flags;", cap.out, re.M)


def test_neurons_tune_writes_sidecar_and_reports_user_errors(calibrated_run, capsys, tmp_path):
    from neurons.train.calibration.cli import main

    out, result = calibrated_run
    ckpt = tmp_path / "copy.ckpt"
    ckpt.write_bytes(open(result.last_checkpoint, "rb").read())
    before = ckpt.read_bytes()
    code = main(
        [
            str(ckpt),
            "data.val_patches=1",
            "--decoders",
            "watershed",
            "--budget",
            "2",
            "--metric",
            "voi",
        ]
    )
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert ckpt.read_bytes() == before  # the checkpoint the user named is not modified
    data = json.loads(sidecar_path(ckpt).read_text())
    assert data["metric"] == "voi" and data["key"] == "voi_total" and data["decoder"] == "watershed"
    assert re.search(r"^\| watershed \| [0-9.]+ \| 2 \|", cap.out, re.M)
    assert read_calibration(ckpt).metric == "voi"
    for argv, msg in (
        ([str(tmp_path / "missing.ckpt")], "does not exist"),
        ([str(ckpt), "--decoders", "nope"], "unknown decoder"),
        ([str(ckpt), "data.bogus_key=1"], "bogus_key"),
        ([str(ckpt), "--budget", "0"], "--budget"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("neurons-tune: error:") and msg in err and err.count("\n") == 1


def test_calibration_config_is_validated():
    from neurons.train import compose_config
    from neurons.train.errors import ConfigError

    assert compose_config("synthetic").calibration.enabled is True
    with pytest.raises(ConfigError, match="calibration.metric"):
        compose_config("synthetic", ["calibration.metric=best"])
