"""End-to-end training runs: fast_dev_run, CLI, loss decrease, checkpoints, SIGKILL resume, DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from neurons.train import CONFIG_NAMES, compose_config, load_checkpoint, run_training

ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "neurons.train.cli", *args]


def _run_cli(cwd: Path, *args: str, timeout: float = 300, env: dict | None = None):
    """Run ``neurons-train`` with ``args`` in ``cwd`` and capture its output."""
    return subprocess.run(
        _cli(*args), env=env or ENV, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


class _Losses(Callback):
    def __init__(self):
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(float(outputs["loss"]))


def test_fast_dev_run_synthetic(tiny, tmp_path):
    cfg = compose_config("synthetic", tiny("training.fast_dev_run=true"))
    result = run_training(cfg)
    assert result.trainer.global_step == 1
    assert result.last_checkpoint is None  # fast_dev_run writes no checkpoints
    logged = result.trainer.logged_metrics
    assert "train/loss" in logged and "val/loss" in logged
    assert any(k.startswith("train/proofread/") for k in logged)  # both modes ran
    for key in (
        "val/ari",
        "val/ami",
        "val/voi_split",
        "val/voi_merge",
        "val/arand",
        "val/dice",
        "val/iou",
    ):
        assert key in logged, key


@pytest.mark.slow
def test_loss_decreases_and_checkpoint_reloads(tiny, tmp_path):
    out = tmp_path / "run"
    losses = _Losses()
    cfg = compose_config(
        "synthetic",
        tiny(
            "training.modes=[automatic]",
            "training.max_steps=50",
            "data.samples_per_epoch=50",
            "data.val_patches=2",
            "optimizer.lr=3e-3",
            "scheduler.warmup_steps=5",
            "checkpoint.every_n_train_steps=25",
            "logging.images.enabled=true",
            "training.validation.decoder=components",  # the others run the embedding decoder
            out=out,
        ),
    )
    result = run_training(cfg, extra_callbacks=[losses])
    v = losses.values
    assert len(v) == 50
    first, last = sum(v[:10]) / 10, sum(v[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    # checkpoints: top-k by val/loss and last, loadable for inference
    assert result.best_checkpoint and Path(result.best_checkpoint).is_file()
    ck = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    assert ck["global_step"] == 50 and ck["hyper_parameters"]["cfg"]["model"]["preset"] == "tiny"
    assert "optimizer_states" in ck and "lr_schedulers" in ck and "neurons_rng_states" in ck
    model, cfg_dict = load_checkpoint(result.last_checkpoint)
    assert not model.training and cfg_dict["data"]["name"] == "synthetic"
    x = torch.rand(1, 1, 8, 32, 32)
    module = result.module.eval()
    with torch.no_grad():
        ref = module.model(x)["semantic"]
        got = model(x)["semantic"]
    torch.testing.assert_close(got, ref)
    # TensorBoard got scalars for every loss term, the LR and the image panels
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(next((out / "tensorboard").glob("version_*"))))
    ev.Reload()
    scalars = set(ev.Tags()["scalars"])
    assert "train/loss" in scalars and "val/ari" in scalars and "lr-AdamW" in scalars
    assert any(t.startswith("train/automatic/loss_") for t in scalars)
    images = set(ev.Tags()["images"])
    for panel in ("raw", "semantic", "instance_gt", "instance_pred", "embedding_pca"):
        assert f"val_images/{panel}/0" in images
    # validation is deterministic: same scores twice
    a = result.trainer.validate(result.module, datamodule=result.datamodule, verbose=False)[0]
    b = result.trainer.validate(result.module, datamodule=result.datamodule, verbose=False)[0]
    assert a == b


def _wait_for_step(path: Path, proc: subprocess.Popen, min_step: int, timeout: float) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stdout.read()}")
        if path.is_file():
            # the file is replaced atomically: it always loads
            step = torch.load(path, map_location="cpu", weights_only=True)["global_step"]
            if step >= min_step:
                return step
        time.sleep(0.5)
    raise AssertionError("no checkpoint in time")


@pytest.mark.slow
def test_resume_after_sigkill(tiny, tmp_path):
    out = tmp_path / "run"
    args = tiny(
        "training.modes=[automatic]",
        "training.max_steps=100000",
        "data.samples_per_epoch=1000",
        "checkpoint.every_n_train_steps=2",
        "training.validation.metrics=false",
        "logging.images.enabled=false",
        out=out,
    )
    proc = subprocess.Popen(
        _cli("--config-name", "synthetic", *args),
        env=ENV,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = out / "checkpoints" / "last.ckpt"
    try:
        _wait_for_step(last, proc, 4, timeout=240)
        time.sleep(1.0)  # let it get into the middle of the next interval
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ck = torch.load(last, map_location="cpu", weights_only=True)  # never a torn file
    step = ck["global_step"]
    assert step >= 4 and step % 2 == 0
    # resume: continues from exactly that step and trains 2 more
    res = _run_cli(
        tmp_path,
        "--config-name",
        "synthetic",
        *args,
        "training.ckpt_path=last",
        f"training.max_steps={step + 2}",
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"at global step {step}" in res.stdout + res.stderr
    after = torch.load(last, map_location="cpu", weights_only=True)
    assert after["global_step"] == step + 2
    # the optimizer state was restored, not re-initialised: AdamW's step counter continued
    opt_state = after["optimizer_states"][0]["state"]
    assert int(next(iter(opt_state.values()))["step"]) == step + 2
    assert after["lr_schedulers"][0]["last_epoch"] == step + 2  # the LR schedule continued too


@pytest.mark.slow
def test_ddp_two_cpu_processes(tiny, tmp_path):
    out = tmp_path / "ddp"
    args = tiny(
        "training.accelerator=cpu",
        "training.devices=2",
        "training.strategy=ddp",
        "training.max_steps=2",
        "data.samples_per_epoch=8",
        "checkpoint.every_n_train_steps=1",
        out=out,
    )
    res = _run_cli(tmp_path, "--config-name", "synthetic", *args, timeout=400)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    ck = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["global_step"] == 2
    assert len(ck["neurons_rng_states"]) == 2  # one RNG state per rank
    assert "Starting with 2 processes" in res.stdout + res.stderr


@pytest.mark.slow
def test_cli_fast_dev_run_from_foreign_cwd(tmp_path):
    exe = Path(sys.executable).parent / "neurons-train"
    cmd = [str(exe)] if exe.is_file() else _cli()
    res = subprocess.run(
        [
            *cmd,
            "--config-name",
            "synthetic",
            "training.fast_dev_run=true",
            "data.samples_per_epoch=4",
            "data.val_patches=2",
            "logging.progress_bar=none",
            "++data.options.shape=[16,48,48]",
            "data.patch_size=[8,32,32]",
        ],
        env=ENV,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "outputs" / "synthetic" / ".hydra" / "config.yaml").is_file()


def test_cli_bad_key_exits_with_the_key_name(tmp_path):
    res = _run_cli(tmp_path, "--config-name", "synthetic", "+data.batchsize=3", timeout=120)
    assert res.returncode != 0
    assert "data.batchsize" in res.stdout + res.stderr


@pytest.mark.slow
def test_wheel_ships_configs_and_cli_uses_them(tmp_path, repo_root):
    import zipfile

    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(wheels),
            str(repo_root / "packages" / "neurons-train"),
        ],
        check=True,
        timeout=300,
    )
    wheel = next(wheels.glob("neurons_train-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for cfg in CONFIG_NAMES:
        assert f"neurons/train/configs/{cfg}.yaml" in names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # what pip install puts into site-packages
    code = (
        "import neurons.train, neurons.train.config as c; "
        "print(neurons.train.__file__); print(c.config_dir())"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**ENV, "PYTHONPATH": str(target)},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert str(target) in res.stdout.splitlines()[0]
    assert res.stdout.splitlines()[1] == str(target / "neurons" / "train" / "configs")
    # and the installed CLI trains from a folder that is not the repository
    run = tmp_path / "elsewhere"
    run.mkdir()
    res = _run_cli(
        run,
        "--config-name",
        "synthetic",
        "training.fast_dev_run=true",
        "data.samples_per_epoch=4",
        "data.val_patches=2",
        "logging.progress_bar=none",
        "++data.options.shape=[16,48,48]",
        "data.patch_size=[8,32,32]",
        env={**ENV, "PYTHONPATH": str(target)},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (run / "outputs" / "synthetic" / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_wandb_and_csv_loggers_offline(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = compose_config(
        "synthetic",
        tiny(
            "logging.loggers=[wandb,csv]",
            "training.max_steps=2",
            "data.samples_per_epoch=4",
            "training.modes=[automatic]",
        ),
    )
    result = run_training(cfg)
    names = sorted(type(lg).__name__ for lg in result.trainer.loggers)
    assert names == ["CSVLogger", "WandbLogger"]
    metrics = next((tmp_path / "run" / "csv").glob("version_*/metrics.csv")).read_text()
    assert "train/loss" in metrics and "val/ari" in metrics


@pytest.mark.slow
def test_cli_missing_dataset_names_download_script(tmp_path):
    res = _run_cli(tmp_path, "--config-name", "combine")
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "scripts/download_" in res.stderr and "error" in res.stderr


def test_bf16_mixed_fast_dev_run_on_cpu(tiny, tmp_path):
    """``training.precision=bf16-mixed`` trains on a CPU: one real step, finite loss."""
    losses = _Losses()
    cfg = compose_config(
        "synthetic",
        tiny(
            "training.fast_dev_run=true",
            "training.precision=bf16-mixed",
            "training.accelerator=cpu",
        ),
    )
    result = run_training(cfg, extra_callbacks=[losses])
    assert result.trainer.global_step == 1
    assert result.trainer.precision == "bf16-mixed"
    assert losses.values, "no training batch ran"
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values), losses.values
    assert torch.isfinite(torch.as_tensor(result.trainer.logged_metrics["train/loss"]))


@pytest.mark.slow
def test_wandb_offline_run_writes_offline_folder(tiny, tmp_path, monkeypatch):
    """With WANDB_MODE unset, ``logging.wandb.mode=offline`` really runs W&B offline."""
    wandb = pytest.importorskip("wandb")
    wandb.finish()  # a run left open by an earlier test (e.g. a disabled one) would be reused
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wdir = tmp_path / "wandb_dir"
    wdir.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(wdir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_config(
        "synthetic",
        tiny(
            "logging.loggers=[wandb]",
            "logging.wandb.mode=offline",
            "training.max_steps=1",
            "data.samples_per_epoch=2",
            "training.limit_val_batches=1",
            "training.modes=[automatic]",
        ),
    )
    try:
        result = run_training(cfg)
        names = [type(lg).__name__ for lg in result.trainer.loggers]
        assert names == ["WandbLogger"]
    finally:
        wandb.finish()
    # the logger's save_dir (training.output_dir) takes precedence over WANDB_DIR
    runs = [p for p in tmp_path.rglob("offline-run-*") if p.is_dir()]
    assert runs, sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))[:30]
    assert any(any(r.glob("*.wandb")) for r in runs)
