"""Data versioning with DVC. Snakemake owns the pipeline; DVC only versions the prepared tables."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from rpo.errors import VersioningError


def _dvc() -> str:
    beside = Path(sys.executable).with_name("dvc")  # the dvc of this environment, even when not on PATH
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if not found:
        raise VersioningError("the `dvc` command is not installed; pip install dvc, or set data.dvc: false")
    return found


def _run(*args: str) -> str:
    out = subprocess.run([_dvc(), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise VersioningError(f"dvc {' '.join(args)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def track(path: str | Path) -> str:
    """`dvc add` the folder (writing <folder>.dvc, to commit with git), then push to the default remote if any."""
    path = Path(path)
    if subprocess.run([_dvc(), "root"], capture_output=True).returncode != 0:
        raise VersioningError(f"{Path.cwd()} is not a DVC repository: run `dvc init` there, or set data.dvc: false")
    _run("add", "--quiet", str(path))
    remote = subprocess.run([_dvc(), "config", "core.remote"], capture_output=True, text=True).stdout.strip()
    if remote:
        _run("push", "--quiet", f"{path}.dvc")
        return f"versioned {path} ({path}.dvc) and pushed it to DVC remote '{remote}'"
    return f"versioned {path} ({path}.dvc); no default DVC remote to push to"
