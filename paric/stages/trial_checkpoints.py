"""Delete a sweep trial's older checkpoints once no restore can need them.

Why not Tune's ``CheckpointConfig(num_to_keep)``: Tune deletes the older checkpoint when it registers
a new one, but writes the experiment snapshot (what a resumed sweep restores each unfinished trial
from) later, every 10 s or more, and copies it into the experiment directory in a background sync.
A sweep killed in between resumes a trial from a checkpoint that is gone ("Could not recover from
checkpoint as it does not exist on storage anymore": CI, 2026-12-05). Keeping every checkpoint until
the sweep ends is safe but costs a trial all its epochs' states (a ResNet-50's is 188 MB, the paper
configs train 150-200 epochs). Here a checkpoint goes once the snapshot *on disk* is newer than the
trial's next one: that snapshot names the newer checkpoint or a later one, so it can never name a
deleted one.

"Newer" is read from Tune's controller step count: ``on_checkpoint`` is called with the step that
registered the checkpoint, and a snapshot records the step it was taken in (``runner_data._iteration``),
after that step's checkpoints were registered. A step count survives a resume (it is restored with the
rest of the controller's state). Where the snapshot cannot be read, nothing is deleted; the sweep stage
keeps each trial's last checkpoint when ``fit`` returns (:func:`keep_last_checkpoints`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ray import tune


def snapshot_step(exp_dir: Path) -> int | None:
    """The controller step of the experiment snapshot a resume would restore from (Tune picks the
    newest ``experiment_state-*.json`` by name); None when there is none or it is being written."""
    states = sorted(Path(exp_dir).glob("experiment_state-*.json"))
    return _step_of(states[-1]) if states else None


def _step_of(state: Path) -> int | None:
    try:
        step = json.loads(state.read_text())["runner_data"]["_iteration"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


def stale_checkpoints(registered: list[tuple[int, Path]], on_disk: int) -> int:
    """How many of a trial's checkpoints (``(step, path)`` in registration order) no restore can
    need: those before the last one registered in a step before ``on_disk``'s snapshot."""
    covered = [i for i, (step, _) in enumerate(registered) if step < on_disk]
    return covered[-1] if covered else 0


class PruneCheckpoints(tune.Callback):
    """Keeps, of each trial's checkpoints, the one the on-disk snapshot can name and those after it."""

    def __init__(self, exp_dir: str) -> None:
        self.exp_dir = exp_dir
        self.registered: dict[str, list[tuple[int, Path]]] = {}  # trial id -> (step, checkpoint dir)
        self._seen: tuple[tuple, int | None] = ((), None)  # (the snapshot's name and stat, its step)

    def __getstate__(self) -> dict:  # pickled into the Tuner and its snapshots: what this process saw stays here
        return {"exp_dir": self.exp_dir, "registered": {}, "_seen": ((), None)}

    def _snapshot_step(self) -> int | None:
        """:func:`snapshot_step`, the file parsed again only when it changed (it grows with the trials,
        and every epoch of every trial asks)."""
        states = sorted(Path(self.exp_dir).glob("experiment_state-*.json"))
        if not states:
            return None
        try:
            st = states[-1].stat()
        except OSError:
            return None
        key = (states[-1].name, st.st_mtime_ns, st.st_size)
        if key != self._seen[0]:
            self._seen = (key, _step_of(states[-1]))
        return self._seen[1]

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info: Any) -> None:
        self.registered.setdefault(trial.trial_id, []).append((iteration, Path(checkpoint.path)))
        on_disk = self._snapshot_step()
        if on_disk is None:
            return
        for trial_id, kept in self.registered.items():
            n = stale_checkpoints(kept, on_disk)
            for _, path in kept[:n]:
                shutil.rmtree(path, ignore_errors=True)
            self.registered[trial_id] = kept[n:]


def keep_last_checkpoints(exp_dir: Path) -> int:
    """Delete every in-actor trial checkpoint but each trial's last, once the sweep has finished; returns
    how many went (all that a resumed invocation's :class:`PruneCheckpoints` did not see, and those after
    the last snapshot). Ray Train trials (``_ray/train/checkpoint_*``) are Train's to prune: it saves its
    state before it deletes.
    """
    removed = 0
    for trial in (p for p in Path(exp_dir).glob("*") if p.is_dir()):
        for old in sorted(trial.glob("checkpoint_*"))[:-1]:
            shutil.rmtree(old, ignore_errors=True)
            removed += 1
    return removed
