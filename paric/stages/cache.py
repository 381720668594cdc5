"""Stage bookkeeping: a stage's output directory is finished when its marker holds the stage key.

Why: every stage is a function of (config section, inputs); keying its output by a hash of both
lets a rerun skip finished work and a changed config redo exactly what it affects.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from paric.config import Config, dump_config
from paric.io import atomic_path, write_json

log = logging.getLogger("paric")
MARKER = "_DONE.json"
STAGES = ("data", "vlm", "adapters", "maps", "quality", "zeroshot", "backbone", "sweep", "train", "report")


@dataclass
class StageLog:
    """One invocation's stage bookkeeping: the stages it must redo (``--force STAGE``) and one row per
    stage it finished (the run's summary table). Why not module globals: two invocations in one
    process (the API, the families driver, tests) would share and clear each other's."""

    forced: frozenset[str] = frozenset()
    events: list[dict[str, Any]] = field(default_factory=list)


#: the stage log of the invocation running in this context (None outside one: nothing is forced and
#: finished stages are only logged)
_CURRENT: ContextVar[StageLog | None] = ContextVar("paric_stage_log", default=None)


def check_forced(names: list[str] | tuple[str, ...]) -> list[str]:
    """``--force`` names, refused (naming the known stages) unless each is a stage."""
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"--force: unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    return list(names)


@contextmanager
def stage_log(force: list[str] | tuple[str, ...] = ()) -> Iterator[StageLog]:
    """The bookkeeping of one invocation: inside it, :func:`forced` answers from ``force`` and
    :func:`record_stage` appends to the yielded log."""
    log_ = StageLog(frozenset(check_forced(force)))
    token = _CURRENT.set(log_)
    try:
        yield log_
    finally:
        _CURRENT.reset(token)


def stage_kind(stage_name: str) -> str:
    """The :data:`STAGES` entry a stage ('maps:train', 'sweep gals', 'train vanilla s0' …) belongs to: its
    first word, what ``--force`` names."""
    return stage_name.replace(":", " ").split(" ")[0]


def forced(stage_name: str) -> bool:
    """Whether a stage is forced (``--force`` named its kind, :func:`stage_kind`)."""
    current = _CURRENT.get()
    return current is not None and stage_kind(stage_name) in current.forced


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
    """Log one line per stage: its wall time and where its output went.

    The stage sets ``info['skipped']`` when it reused its cached output; ``info['forced']`` says it
    must not (``--force``). Every finished stage is appended to the invocation's :class:`StageLog`.
    """
    info: dict[str, Any] = {"skipped": False, "forced": forced(name)}
    t0 = time.time()
    yield info
    info["seconds"] = round(time.time() - t0, 1)
    record_stage(name, "skipped (cached)" if info["skipped"] else "done", info["seconds"], output)


def record_stage(name: str, state: str, seconds: float, output: Path) -> None:
    """Log a stage's line and add it to the invocation's :class:`StageLog` (also for stages timed
    elsewhere, e.g. in a Ray task)."""
    current = _CURRENT.get()
    if current is not None:
        current.events.append({"stage": name, "state": state, "seconds": round(seconds, 1), "output": str(output)})
    log.info("[stage] %-18s %-16s %7.1fs  -> %s", name, state, seconds, output)


#: the config of the last invocation that finished, beside the outputs it describes
RESOLVED_CONFIG = "config.resolved.yaml"


def write_invocation_config(cfg: Config) -> Path:
    """``invocations/<UTC time>-<pid>.yaml``: what each invocation set out to run, kept even if it fails."""
    path = cfg.output_path("invocations", f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.yaml")
    with atomic_path(path) as tmp:
        tmp.write_text(dump_config(cfg))
    return path


def write_resolved_config(cfg: Config) -> Path:
    """``config.resolved.yaml``, written (atomically) only when an invocation has finished, so it never
    names a config whose outputs a failed run left half-made."""
    path = cfg.output_path(RESOLVED_CONFIG)
    with atomic_path(path) as tmp:
        tmp.write_text(dump_config(cfg))
    return path
