"""Build hook: ship the repository's Hydra configs inside neurons-train.

The configs live at the repository root (``configs/``). A wheel built from the source tree gets
them as ``neurons/train/configs``; an sdist carries them as ``src/neurons/train/configs`` so a
wheel built later from that sdist (no repository around it) still contains them.
"""

from __future__ import annotations

from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ConfigsBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        repo_configs = Path(self.root).resolve().parents[1] / "configs"
        if version == "editable" or not repo_configs.is_dir():
            # editable installs find the repository's configs/ directly; a build from an sdist
            # already has src/neurons/train/configs, which the wheel's package list includes
            return
        target = "neurons/train/configs" if self.target_name == "wheel" else "src/neurons/train/configs"
        build_data["force_include"][str(repo_configs)] = target
