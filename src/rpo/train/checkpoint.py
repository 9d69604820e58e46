"""Training checkpoints, written atomically, so rerunning a killed job resumes where it stopped."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: Path, modules: dict, optimizer, scheduler, progress: dict) -> None:
    """Write to <folder>.tmp, then swap it in: a kill at any moment leaves one complete checkpoint."""
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {
            "modules": {name: m.state_dict() for name, m in modules.items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
        },
        tmp / "state.pt",
    )
    (tmp / "progress.json").write_text(json.dumps(progress))
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def latest(folder: Path) -> Path | None:
    old = folder.with_name(folder.name + ".old")
    for candidate in (folder, old):  # .old survives only a kill between the two renames
        if (candidate / "progress.json").exists():
            return candidate
    return None


def load(folder: Path, modules: dict, optimizer, scheduler) -> dict:
    state = torch.load(folder / "state.pt", weights_only=False)
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return json.loads((folder / "progress.json").read_text())


def remove(folder: Path) -> None:
    for candidate in (folder, folder.with_name(folder.name + ".old"), folder.with_name(folder.name + ".tmp")):
        shutil.rmtree(candidate, ignore_errors=True)
