"""Keep a whole copy of each experiment snapshot Tune takes, so a killed sweep can always resume.

Why: Tune writes its snapshot (``experiment_state-*.json``, the search generator's and searcher's
states) with ``json.dump`` into the opened file in a driver staging directory, then copies it into
the experiment directory in a background thread, in place again. A kill during either leaves a
cut-off file that ``Tuner.restore`` cannot read (``JSONDecodeError``: CI, 2026-12-06), or files of
two snapshots: a searcher that knows a trial the experiment state does not, whose
``ConcurrencyLimiter`` then waits for that trial forever.

Here, right after Tune took a snapshot (``on_step_end`` follows it in the controller's thread, so the
staging files are whole and of one snapshot), :class:`KeepSnapshot` copies them into
``<exp_dir>/../snapshots/<step>-<ns>/`` (written under a temporary name, then renamed) and drops the older
copies. A resume installs the newest copy over the experiment directory's own snapshot files
(:func:`install_kept_snapshot`). The step is Tune's controller step the snapshot records
(``runner_data._iteration``): :mod:`paric.stages.trial_checkpoints` deletes only checkpoints the kept
copy can no longer name. ``<ns>`` orders copies of one step: a resumed sweep takes its first snapshot
in the step it restored. A copy that cannot be written (a full disk) is logged, not raised: the sweep
goes on with the older copy.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from ray import tune

log = logging.getLogger("paric")

#: a snapshot file of one Tune session: ``<what>-<YYYY-mm-dd_HH-MM-SS>.json|pkl``
SESSION_FILE = re.compile(r"^[a-z_-]+-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.(json|pkl)$")
EXPERIMENT_STATE = "experiment_state-*.json"
KEPT = re.compile(r"^(\d{9})-\d{19}$")  # <step>-<time_ns>: the newest sorts last


def snapshots_root(exp_dir: Path) -> Path:
    """Where the kept copies live: beside the experiment directory, so Tune neither syncs nor restores them."""
    return Path(exp_dir).parent / "snapshots"


def kept_snapshot(exp_dir: Path) -> tuple[int, Path] | None:
    """(step, directory) of the newest complete kept copy; None when there is none."""
    root = snapshots_root(exp_dir)
    kept = sorted(p.name for p in root.iterdir() if KEPT.match(p.name)) if root.is_dir() else []
    return (int(KEPT.match(kept[-1]).group(1)), root / kept[-1]) if kept else None


def kept_step(exp_dir: Path) -> int | None:
    """The controller step of the snapshot a resume would install (None: nothing to resume from)."""
    kept = kept_snapshot(exp_dir)
    return kept[0] if kept else None


def snapshot_step(state: Path) -> int | None:
    """The controller step an ``experiment_state`` file records; None when it is unreadable or cut off."""
    try:
        step = json.loads(state.read_text())["runner_data"]["_iteration"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


def keep_snapshot(staging: Path, exp_dir: Path) -> int | None:
    """Copy the snapshot files in ``staging`` (Tune's driver staging directory, just written) into a
    new kept copy and drop the older ones; returns its step, or None when there is no readable
    snapshot there (nothing is kept then, and the older copy stays)."""
    states = sorted(Path(staging).glob(EXPERIMENT_STATE))
    step = snapshot_step(states[-1]) if states else None
    if step is None:
        return None
    root, name = snapshots_root(exp_dir), f"{step:09d}-{time.time_ns():019d}"
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    for f in Path(staging).iterdir():
        if f.is_file() and SESSION_FILE.match(f.name):
            shutil.copyfile(f, tmp / f.name)
    tmp.rename(root / name)
    for old in root.iterdir():
        if old.name != name and (KEPT.match(old.name) or old.name.startswith(".tmp-")):
            shutil.rmtree(old, ignore_errors=True)
    return step


def install_kept_snapshot(exp_dir: Path) -> int | None:
    """Make the experiment directory's snapshot the newest kept copy, before ``Tuner.restore`` reads it:
    its files replace the directory's (each written to a temporary name, then renamed), and session
    files the copy lacks (a later, possibly cut-off snapshot) move to ``../superseded/``. Returns the
    copy's step; None (nothing changed) when no copy was kept."""
    kept = kept_snapshot(exp_dir)
    if kept is None:
        return None
    step, src = kept
    names = {f.name for f in src.iterdir()}
    aside = Path(exp_dir).parent / "superseded"
    for f in Path(exp_dir).iterdir():
        if f.is_file() and SESSION_FILE.match(f.name) and f.name not in names:
            aside.mkdir(exist_ok=True)
            f.replace(aside / f.name)
    for name in names:
        tmp = Path(exp_dir) / f".{name}.{uuid.uuid4().hex}.tmp"
        shutil.copyfile(src / name, tmp)
        tmp.replace(Path(exp_dir) / name)
    return step


class KeepSnapshot(tune.Callback):
    """Keeps a whole copy of each snapshot Tune takes (:func:`keep_snapshot`), checked once per step."""

    def __init__(self, exp_dir: str) -> None:
        self.exp_dir = exp_dir
        self._seen: tuple = ()  # the staging experiment_state's (name, mtime, size) last copied

    def __getstate__(self) -> dict:  # pickled with the Tuner: what this process saw stays here
        return {"exp_dir": self.exp_dir, "_seen": ()}

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not trials:
            return
        staging = Path(trials[0].storage.experiment_driver_staging_path)
        states = sorted(staging.glob(EXPERIMENT_STATE))
        if not states:
            return
        try:
            st = states[-1].stat()
            seen = (states[-1].name, st.st_mtime_ns, st.st_size)
            if seen != self._seen:
                self._seen = seen
                keep_snapshot(staging, Path(self.exp_dir))
        except OSError as e:  # a resume then installs the older copy
            log.warning("sweep: could not keep a copy of Tune's snapshot in %s: %s", snapshots_root(self.exp_dir), e)
