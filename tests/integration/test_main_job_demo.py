"""The README's main job (scripts/demo.py) in smoke mode: train, calibrate, infer held-out with the
calibrated decoder (and the watershed defaults), score, previews."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_smoke_end_to_end(tmp_path, repo_root):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "demo.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"\| voi_split \| [0-9.]+ \| [0-9.]+ \|", out)
    assert re.search(r"\| arand_cremi \| [0-9.]+ \| [0-9.]+ \|", out)
    pngs = re.findall(r"preview \(\w+\) \w+: (\S+\.png)", out)
    assert len(pngs) == 10 and all(os.path.getsize(p) > 0 for p in pngs)
    assert (tmp_path / "segmentation_watershed.h5").is_file()
    # training calibrated the decoders on its validation split; inference used the winner
    won = re.search(r"calibrated decoder: (\w+) \{.*\} \(validation cremi_score ([0-9.]+)", out)
    assert won, out[-3000:]
    used = re.search(r"\[3/4\] decoder: (\w+) .*\(calibrated; validation cremi_score ([0-9.]+)", out)
    assert used and used.groups() == won.groups()
    assert re.search(r"\[3/4\] decoder: watershed \{\} \(flags\)", out)
    assert (tmp_path / "segmentation_calibrated.h5").is_file()
    assert re.search(r"held-out arand_cremi \(calibrated\): [0-9.]+", out)
    assert (tmp_path / "train" / "checkpoints" / "last.ckpt").is_file()
