"""Data versioning with DVC. Snakemake owns the pipeline; DVC only versions the prepared tables."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from rpo.errors import VersioningError
from rpo.io import md5


def _dvc() -> str:
    beside = Path(sys.executable).with_name("dvc")  # the dvc of this environment, even when not on PATH
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if not found:
        raise VersioningError("the `dvc` command is not installed; pip install dvc, or set data.dvc: false")
    return found


# Bounds on every dvc call: a local `add` or `config` takes seconds; a push to a remote over a network is given an hour.
QUICK_S, TRANSFER_S = 120, 3600


def _call(args: list, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise VersioningError(f"{' '.join(map(str, args[:3]))} did not finish within {timeout} s") from None


def _run(*args: str) -> str:
    """A dvc call; a failure reports DVC's own message (never --quiet: it hid the reason)."""
    out = _call([_dvc(), *args], TRANSFER_S)
    if out.returncode != 0:
        reason = " ".join((out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}").split())
        raise VersioningError(f"dvc {' '.join(args)} failed: {reason[-600:]}")
    return out.stdout


def _in_git() -> bool:
    found = _call(["git", "rev-parse", "--is-inside-work-tree"], QUICK_S)
    return found.returncode == 0 and found.stdout.strip() == "true"


def track(path: str | Path) -> str:
    """`dvc add` the folder (writing <folder>.dvc, to commit with git), then push to the default remote if any."""
    path = Path(path)
    if _call([_dvc(), "root"], QUICK_S).returncode != 0:
        raise VersioningError(f"{Path.cwd()} is not a DVC repository: run `dvc init` there, or set data.dvc: false")
    no_scm = _call([_dvc(), "config", "core.no_scm"], QUICK_S).stdout.strip()
    if no_scm.lower() != "true" and not _in_git():
        raise VersioningError(
            f"{Path.cwd()} is not a git repository, and DVC keeps its pointers (.dvc files) in git: run `git init` "
            "there, or `dvc config core.no_scm true` to version without git, or set data.dvc: false"
        )
    _run("add", str(path))
    remote = _call([_dvc(), "config", "core.remote"], QUICK_S).stdout.strip()
    if remote:
        _run("push", f"{path}.dvc")
        return f"versioned {path} ({path}.dvc) and pushed it to DVC remote '{remote}'"
    return f"versioned {path} ({path}.dvc); no default DVC remote to push to"


def check_pointer(pointer: str | Path, tables) -> None:
    """The prepared tables a step reads are the ones their .dvc pointer names: the pointer's folder listing (in
    DVC's cache) must hold each table's md5. A hand-edited pointer, or data changed after `dvc add`, stops here
    with both md5s and the pointer's path (a pointer that names data not in the cache would be committed)."""
    pointer = Path(pointer)
    try:
        out = yaml.safe_load(pointer.read_text())["outs"][0]
        digest = out["md5"]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise VersioningError(f"{pointer}: not a readable DVC pointer ({type(exc).__name__}: {exc})") from None
    listing = _listing(pointer, digest)
    if not listing.is_file():
        raise VersioningError(
            f"{pointer}: names md5 {digest}, which is not in DVC's cache ({listing.parent}): the pointer was edited "
            "or its data never added; rerun the version_data step (delete the pointer) or `dvc checkout`"
        )
    listed = {entry["relpath"]: entry["md5"] for entry in json.loads(listing.read_text())}
    folder = pointer.with_suffix("") if pointer.name.endswith(".dvc") else pointer
    for table in map(Path, tables):
        name = str(table.resolve().relative_to(folder.resolve()))
        actual = md5(table)
        if listed.get(name) != actual:
            raise VersioningError(
                f"{table}: md5 {actual}, but its DVC pointer {pointer} (md5 {digest}) lists {listed.get(name)}: the "
                "data changed after it was versioned, or the pointer was edited; rerun the version_data step"
            )


def _listing(pointer: Path, digest: str) -> Path:
    """Where DVC's cache keeps the folder listing with this md5. The cache is addressed by content, so a listing found
    in the default cache (.dvc/cache) is the one: only when it is not there is DVC asked for a configured cache.dir
    (a `dvc` process, half a second: every training job checks its pointer)."""
    tail = Path("files") / "md5" / digest[:2] / digest[2:]
    for parent in pointer.resolve().parents:
        if (parent / ".dvc").is_dir() and (parent / ".dvc" / "cache" / tail).is_file():
            return parent / ".dvc" / "cache" / tail
    return _cache_root(pointer) / tail


def _cache_root(pointer: Path) -> Path:
    """DVC's cache of the repository holding `pointer` (.dvc/cache, or core cache.dir)."""
    for parent in pointer.resolve().parents:
        if (parent / ".dvc").is_dir():
            configured = _call([_dvc(), "config", "cache.dir"], QUICK_S, cwd=parent).stdout.strip()
            return (parent / ".dvc" / configured).resolve() if configured else parent / ".dvc" / "cache"
    raise VersioningError(f"{pointer}: not inside a DVC repository")
