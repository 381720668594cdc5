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
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _tmp_name(path: Path, kind: str = "tmp", staging: Path | None = None) -> Path:
    """A hidden sibling (dataset readers skip names starting with '.'), unique per process and call;
    inside ``staging`` instead when given."""
    name = f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return (Path(staging) / name) if staging is not None else path.with_name(name)


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
def atomic_path(path: Path, staging: Path | None = None) -> Iterator[Path]:
    """Yield a hidden temp path beside ``path``; if the block succeeds, fsync it and rename it onto
    ``path``. A crash leaves at most the previous version of ``path``, never a half-written one.

    ``staging``: an existing directory on the same file system to hold the temp file instead. A
    writer that may be killed mid-write (a Ray actor) writes there, so that whoever owns the
    directory can remove every temp file it left by removing the directory; the directory is not
    created here, so a writer that outlives its removal fails instead of leaving a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path, staging=staging)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def staging_dir(parent: Path) -> Path:
    """Create a fresh hidden directory under ``parent`` for the temp files of one pass of writers
    (``atomic_path(..., staging=...)``); remove it with :func:`remove_staging`."""
    path = _tmp_name(Path(parent) / "staging", "pass")
    path.mkdir(parents=True)
    return path


def remove_staging(path: Path, attempts: int = 50) -> None:
    """Remove a staging directory and whatever temp files are in it, even while a dying writer still
    adds one: retried until the directory is gone (after that no writer can create a file in it)."""
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not Path(path).exists():
            return
        time.sleep(0.1)
    raise OSError(f"could not remove staging directory {path}")


def stale_temps(parent: Path) -> list[Path]:
    """Hidden temp files and staging directories that writers killed mid-write left in ``parent``
    (only to be swept by the one invocation that owns it)."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.name.startswith(".") and (".tmp-" in p.name or ".pass-" in p.name))


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
