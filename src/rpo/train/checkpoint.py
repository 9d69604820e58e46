"""Training checkpoints, written atomically, so rerunning a killed job resumes where it stopped.

A checkpoint resumes a run only when it belongs to that run: its progress.json holds the fingerprint of everything
that shapes training (the cell's resolved config, the input files, the library versions); another fingerprint
(the config was edited, the data changed) means a fresh start, said in one line. The newest checkpoint and the
one before it (`checkpoint.old`) are both kept; a damaged newest one (a truncated file, a kill while a disk was
full) falls back to the older, else to a fresh start with a warning. Nothing is pickled: `state.pt` holds tensors
and plain Python values only, loaded with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch


def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _siblings(folder: Path) -> tuple[Path, Path]:
    return folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")


def save(folder: Path, modules: dict, optimizer, scheduler, progress: dict, fingerprint: str) -> None:
    """Write to <folder>.tmp, then rotate: the newest becomes .old, .tmp the newest. A kill at any moment leaves at
    least one complete checkpoint."""
    tmp, old = _siblings(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
    }
    torch.save(state, tmp / "state.pt")
    (tmp / "progress.json").write_text(json.dumps({**progress, "fingerprint": fingerprint}, allow_nan=False))
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)


def _read(candidate: Path, fingerprint: str) -> tuple[dict, dict] | str:
    """(progress, state), or why this checkpoint cannot resume the run."""
    try:
        progress = json.loads((candidate / "progress.json").read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable progress.json ({type(exc).__name__})"
    if not isinstance(progress, dict) or progress.get("fingerprint") != fingerprint:
        return "written by a run with another config, other inputs or other library versions"
    try:
        state = torch.load(candidate / "state.pt", weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - a damaged file raises anything from EOFError to RuntimeError
        return f"unreadable state.pt ({type(exc).__name__}: {str(exc)[:120]})"
    if not isinstance(state, dict) or not {"modules", "optimizer", "scheduler", "rng"} <= set(state):
        return "state.pt lacks the model, optimizer, scheduler or RNG state"
    return progress, state


def resume(folder: Path, fingerprint: str, modules: dict, optimizer, scheduler, say=print) -> dict | None:
    """Load the newest checkpoint of this run (the newest, else .old) into the modules, optimizer and scheduler and
    return its progress; None (and every stale or damaged checkpoint removed) when training starts fresh."""
    tmp, old = _siblings(folder)
    shutil.rmtree(tmp, ignore_errors=True)  # a kill while writing: never complete
    for candidate in (folder, old):
        if not candidate.exists():
            continue
        found = _read(candidate, fingerprint)
        if isinstance(found, str):
            say(f"warning: checkpoint {candidate} not used: {found}")
            continue
        progress, state = found
        try:
            for name, module in modules.items():
                module.load_state_dict(state["modules"][name])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise RuntimeError(f"checkpoint {candidate} matched this run but did not load: {exc}") from exc
        return progress
    if folder.exists() or old.exists():
        say(f"warning: no usable checkpoint in {folder.parent}: training starts from step 0")
        remove(folder)
    return None


def remove(folder: Path) -> None:
    for candidate in (folder, *_siblings(folder)):
        shutil.rmtree(candidate, ignore_errors=True)
