"""Stage bookkeeping: a stage's output directory is finished when its marker holds the stage key.

Why: every stage is a function of (config section, inputs); keying its output by a hash of both
lets a rerun skip finished work and a changed config redo exactly what it affects.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from paric.io import write_json

log = logging.getLogger("paric")
MARKER = "_DONE.json"


def read_marker(stage_dir: Path) -> dict | None:
    try:
        return json.loads((stage_dir / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_done(stage_dir: Path, key: str) -> bool:
    marker = read_marker(stage_dir)
    return marker is not None and marker.get("key") == key


def mark_done(stage_dir: Path, key: str, **info: Any) -> None:
    write_json(stage_dir / MARKER, {"key": key, **info})


@contextmanager
def timed_stage(name: str, output: Path) -> Iterator[dict]:
    """Log one line per stage: its wall time and where its output went (``info['skipped']`` to say it was cached)."""
    info: dict[str, Any] = {"skipped": False}
    t0 = time.time()
    yield info
    state = "skipped (cached)" if info["skipped"] else "done"
    info["seconds"] = round(time.time() - t0, 1)
    log.info("[stage] %-10s %-16s %7.1fs  -> %s", name, state, info["seconds"], output)
