"""File helpers every stage shares: md5 digests (DVC's key), safe overwrites of versioned files, JSONL reading."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rpo.errors import DataError


def md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fresh(path: Path) -> Path:
    """Unlink before writing: a DVC-versioned output is a read-only hard link into the DVC cache,
    and writing through it would change the cached copy."""
    path.unlink(missing_ok=True)
    return path


def read_jsonl(path) -> list[dict]:
    """One record per non-blank line; a bad line is a DataError naming the file and line."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON: {exc}") from exc
    return rows
