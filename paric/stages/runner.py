"""A cached stage, declared: its config keys, its upstream keys and input fingerprints, its outputs.

Why one runner: every stage used to repeat the same block (time it, compare its marker with a key
assembled by hand, skip or compute, mark it done), and the hand-made keys drifted (a constant VLM
name in the adapters' key, the whole ``train`` section in the sweep's). Here a stage declares what
it depends on, :func:`derive_key` is the only place a key is made (the declared config sections'
hash plus the upstream stages' keys and the inputs' content fingerprints, never a path), and
:func:`run_stage` owns forcing, the ``[stage]`` line, the event log and the marker.

The map store (resumed shard by shard, keyed by its provenance) and the per-(method, seed) runs
keep their own finer-grained bookkeeping; their keys come from :func:`derive_key` too.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from paric.config import Config
from paric.stages.cache import STAGES, is_done, mark_done, stage_kind, timed_stage

T = TypeVar("T")


def derive_key(cfg: Config, config_keys: tuple[str, ...], upstream: tuple[str, ...] = ()) -> str:
    """A stage's cache key: the hash of its declared config sections, then the hash of its upstream
    keys and input fingerprints (content hashes), so a change anywhere upstream changes it."""
    up = hashlib.sha256("\x1f".join(upstream).encode()).hexdigest()[:16]
    return f"{cfg.section_hash(*config_keys)}:{up}"


@dataclass(frozen=True)
class Stage:
    """What a cached stage is: ``marker_dir`` holds its marker; ``outputs`` (relative to it) must all
    exist for a cache hit; ``shown`` is what its ``[stage]`` line names (default: ``marker_dir``)."""

    name: str
    marker_dir: Path
    config: tuple[str, ...]
    upstream: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    shown: Path | None = None

    def __post_init__(self) -> None:
        # one list of stage names: a stage's kind is one that ``--force`` offers (:data:`STAGES`)
        if stage_kind(self.name) not in STAGES:
            raise ValueError(f"stage '{self.name}' is not in paric.stages.cache.STAGES ({', '.join(STAGES)}): "
                             "add it there, so that --force can name it")

    def key(self, cfg: Config) -> str:
        return derive_key(cfg, self.config, self.upstream)

    def cached(self, cfg: Config) -> bool:
        return is_done(self.marker_dir, self.key(cfg)) and all((self.marker_dir / f).is_file() for f in self.outputs)


def run_stage(cfg: Config, stage: Stage, compute: Callable[[], dict | None], load: Callable[[], T]) -> T:
    """Reuse the stage's outputs when they are cached and the stage is not forced; else ``compute()``
    (which writes the outputs and returns extra marker fields) and mark the stage done. Returns
    ``load()`` either way."""
    with timed_stage(stage.name, stage.shown or stage.marker_dir) as info:
        if not info["forced"] and stage.cached(cfg):
            info["skipped"] = True
            return load()
        extra = compute() or {}
        mark_done(stage.marker_dir, stage.key(cfg), **extra)
    return load()
