"""File helpers every stage shares: md5 digests (DVC's key), atomic writes, JSONL reading.

Every output is written under a temporary name beside it and renamed into place, so a kill, a full disk or a
read-only folder never leaves a half-written file where a later step reads it; a write error is one OutputError
naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from rpo.errors import DataError, OutputError


def md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


LARGE_FILE = 64 * 2**20  # larger model files are fingerprinted by size and modification time, not hashed


def file_digest(path: Path) -> str:
    stat = Path(path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}" if stat.st_size > LARGE_FILE else md5(path)


def folder_digest(folder) -> dict:
    """Every file of a folder (a model) by content: md5, or size and modification time for files over 64 MB."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): file_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def atomic(path):
    """Yield a temporary path beside `path` (a file or a folder) to write; renamed onto `path` when the block ends
    without error, removed otherwise. An existing `path` is replaced only then (a DVC-versioned file is a read-only
    hard link into DVC's cache: renaming over it leaves the cached copy alone)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text(path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, value, indent: int | None = 2) -> None:
    """Strict JSON (NaN and infinities refused: they are not JSON and later readers would take them as numbers)."""
    try:
        text = json.dumps(value, indent=indent, allow_nan=False)
    except ValueError as exc:
        raise OutputError(f"{path}: not written: a value is not a finite number ({exc})") from None
    write_text(path, text)


def write_jsonl(path, rows) -> None:
    with atomic(path) as tmp, open(tmp, "w", encoding="utf-8") as sink:
        for row in rows:
            sink.write(json.dumps(row) + "\n")


def write_parquet(frame, path) -> None:
    with atomic(path) as tmp:
        frame.to_parquet(tmp, index=False)


def check_writable(*paths) -> None:
    """Before a step's work: each output's folder (or, not made yet, its nearest existing parent) can take a new file,
    so a read-only or full results folder is found now, not after an hour of work. Probes by creating and removing
    a file: permission bits alone do not tell (root ignores them; a read-only mount does not). Creates nothing."""
    for path in paths:
        folder = Path(path).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            if not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder")
            probe = folder / f".write-probe.{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as exc:
            reason = "read-only" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else exc.strerror or exc
            raise OutputError(f"{path}: cannot write into {folder}/: {reason}") from None


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
