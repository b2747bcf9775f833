"""Each distribution imports with only what it declares.

In the per-package hatch environments (``hatch run pkg.io:test`` …) ``NEURONS_ISOLATED_PACKAGE``
names the package under test: there we assert that torch is not even installed for io/metrics and
that importing the package loads no third-party module outside its declared dependencies.
In the full environment the declared-dependency check still runs (in a fresh interpreter).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

PACKAGES = ["io", "metrics", "losses", "models", "data", "train"]
ISOLATED = os.environ.get("NEURONS_ISOLATED_PACKAGE")

# distribution name -> top-level import names, where they differ
IMPORT_NAMES = {
    "pynrrd": {"nrrd"},
    "scikit-image": {"skimage"},
    "scikit-learn": {"sklearn"},
    "pillow": {"PIL"},
    "hydra-core": {"hydra"},
    "pyyaml": {"yaml"},
    "connected-components-3d": {"cc3d"},
    "cloud-volume": {"cloudvolume"},
}


def _requirement_closure(dist: str) -> set[str]:
    """Top-level import names of ``dist`` and everything it requires (transitively)."""
    seen: set[str] = set()
    todo = [dist]
    names: set[str] = set()
    while todo:
        name = re.split(r"[\s\[<>=!~;@]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            d = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        names |= IMPORT_NAMES.get(name, {name.replace("-", "_")})
        top = d.read_text("top_level.txt")
        if top:
            names |= set(top.split())
        for f in d.files or []:
            parts = f.parts
            if parts and parts[0].endswith(".py") and len(parts) == 1:
                names.add(parts[0][:-3])
            elif len(parts) > 1 and not parts[0].endswith((".dist-info", ".data")):
                names.add(parts[0])
        for req in d.requires or []:
            if "extra ==" in req:
                continue
            todo.append(req)
    return names


def _loaded_modules(*modules: str) -> set[str]:
    """Full names of the modules a fresh interpreter loads when importing ``modules``."""
    # each import guarded: some submodules only import in the context their parent sets up
    imports = "".join(f"\ntry:\n    import {m}\nexcept Exception:\n    pass" for m in modules)
    code = (
        "import sys, json\nbefore=set(sys.modules)" + imports + "\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-"], input=code, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def _imported_top_levels(module: str) -> set[str]:
    return _top(_loaded_modules(module))


@pytest.mark.parametrize("pkg", PACKAGES)
def test_imports_only_declared_dependencies(pkg):
    if ISOLATED and ISOLATED != pkg:
        pytest.skip(f"isolated environment for neurons-{ISOLATED}")
    try:
        md.distribution(f"neurons-{pkg}")
    except md.PackageNotFoundError:
        pytest.skip(f"neurons-{pkg} is not installed in this environment")
    declared = _requirement_closure(f"neurons-{pkg}") | set(sys.stdlib_module_names)
    declared |= {"neurons", "_distutils_hack", "__future__", "cython_runtime"}
    loaded_full = _loaded_modules(f"neurons.{pkg}")
    # What declared dependencies load by themselves when present (lightning uses rich, numpy's
    # f2py uses charset_normalizer) is theirs, not ours: import the same dependency modules
    # without neurons and allow what they pull in.
    third_party = declared - set(sys.stdlib_module_names) - {"neurons"}
    dep_modules = sorted(
        m for m in loaded_full
        if m.split(".")[0] in third_party and not any(p.startswith("_") for p in m.split("."))
    )
    allowed = declared | _top(_loaded_modules(*dep_modules))
    loaded = _top(loaded_full)
    undeclared = sorted(m for m in loaded if m not in allowed and not m.startswith("_"))
    assert not undeclared, f"neurons.{pkg} imports undeclared modules: {undeclared}"


@pytest.mark.parametrize("pkg", ["io", "metrics"])
def test_no_torch_in_isolated_env(pkg):
    if ISOLATED != pkg:
        pytest.skip("only meaningful in the isolated io/metrics environments")
    assert importlib.util.find_spec("torch") is None, "torch is installed in a no-torch environment"
    assert "torch" not in _imported_top_levels(f"neurons.{pkg}")
