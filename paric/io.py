"""Atomic file writes (a finished name never holds a half-written file) and the one file hasher.

Why: every stage may be killed at any moment (Ctrl-C, a preempted cluster node); readers and
the stage cache trust that a file under its final name is complete. Cache keys hash file content
(weights, adapters, Parquet parts, dataset files) through :func:`sha256_file`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _tmp_name(path: Path, kind: str = "tmp") -> Path:
    """A hidden sibling (dataset readers skip names starting with '.'), unique per process and call."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_dir(directory: Path) -> None:
    """Persist a rename itself; best effort (not every platform / file system supports it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a hidden temp path beside ``path``; if the block succeeds, fsync it and rename it onto
    ``path``. A crash leaves at most the previous version of ``path``, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


@contextmanager
def atomic_dir(path: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a hidden temp directory beside ``path``; if the block succeeds, it becomes ``path``.
    ``replace``: an existing ``path`` is swapped out and removed; otherwise renaming onto a non-empty
    ``path`` raises ``OSError`` (the caller decides whether another writer got there first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _tmp_name(path), _tmp_name(path, "old")
    tmp.mkdir()
    try:
        yield tmp
        if replace and path.exists():
            os.replace(path, old)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    """Atomic, pretty JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of a file's bytes; remembered in this process while its size and
    modification time are unchanged (a stage may ask for the same weights' hash several times)."""
    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]
