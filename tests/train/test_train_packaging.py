"""The Hydra configs travel with neurons-train: in the wheel, and in the sdist a wheel is built from."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest

hatchling_sdist = pytest.importorskip("hatchling.builders.sdist")
hatchling_wheel = pytest.importorskip("hatchling.builders.wheel")


def _config_names(repo_root: Path) -> set[str]:
    names = {p.name for p in (repo_root / "configs").glob("*.yaml")}
    assert {"default.yaml", "synthetic.yaml", "snemi3d.yaml"} <= names
    return names


def _wheel_configs(wheel: str) -> set[str]:
    prefix = "neurons/train/configs/"
    return {n[len(prefix):] for n in zipfile.ZipFile(wheel).namelist() if n.startswith(prefix)}


def test_wheel_from_sdist_still_ships_configs(tmp_path, repo_root):
    pkg = repo_root / "packages" / "neurons-train"
    expected = _config_names(repo_root)

    wheel = next(iter(hatchling_wheel.WheelBuilder(str(pkg)).build(directory=str(tmp_path / "w"))))
    assert _wheel_configs(wheel) == expected

    sdist = next(iter(hatchling_sdist.SdistBuilder(str(pkg)).build(directory=str(tmp_path / "s"))))
    with tarfile.open(sdist) as tar:
        inside = {Path(n).name for n in tar.getnames() if "/src/neurons/train/configs/" in n}
        tar.extractall(tmp_path / "x", filter="data")
    assert inside == expected
    # the unpacked sdist has no repository around it: its wheel must use the carried copy
    (unpacked,) = (tmp_path / "x").iterdir()
    assert not (unpacked.parent.parent / "configs").exists()
    wheel2 = next(iter(hatchling_wheel.WheelBuilder(str(unpacked)).build(directory=str(tmp_path / "w2"))))
    assert _wheel_configs(wheel2) == expected
    for name in expected:
        assert zipfile.ZipFile(wheel2).read(f"neurons/train/configs/{name}") == (
            repo_root / "configs" / name
        ).read_bytes()
