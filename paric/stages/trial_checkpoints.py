"""Delete a sweep trial's older checkpoints once no restore can need them.

Why not Tune's ``CheckpointConfig(num_to_keep)``: Tune deletes the older checkpoint when it registers
a new one, but writes the experiment snapshot (what a resumed sweep restores each unfinished trial
from) later, every 10 s or more, and copies it into the experiment directory in a background sync.
A sweep killed in between resumes a trial from a checkpoint that is gone ("Could not recover from
checkpoint as it does not exist on storage anymore": CI, 2026-12-05). Keeping every checkpoint until
the sweep ends is safe but costs a trial all its epochs' states (a ResNet-50's is 188 MB, the paper
configs train 150-200 epochs). Here a checkpoint goes once the snapshot a resume would install (the
kept copy, :mod:`paric.stages.sweep_snapshot`) is newer than the trial's next one: that snapshot names
the newer checkpoint or a later one, so it can never name a deleted one.

"Newer" is read from Tune's controller step count: ``on_checkpoint`` is called with the step that
registered the checkpoint, and a snapshot records the step it was taken in (``runner_data._iteration``),
after that step's checkpoints were registered. A step count survives a resume (it is restored with the
rest of the controller's state). Until a copy is kept, nothing is deleted; the sweep stage
keeps each trial's last checkpoint when ``fit`` returns (:func:`keep_last_checkpoints`).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ray import tune

from paric.stages.sweep_snapshot import kept_step


def stale_checkpoints(registered: list[tuple[int, Path]], kept: int) -> int:
    """How many of a trial's checkpoints (``(step, path)`` in registration order) no restore can
    need: those before the last one registered in a step before ``kept``'s snapshot."""
    covered = [i for i, (step, _) in enumerate(registered) if step < kept]
    return covered[-1] if covered else 0


class PruneCheckpoints(tune.Callback):
    """Keeps, of each trial's checkpoints, the one the kept snapshot can name and those after it."""

    def __init__(self, exp_dir: str) -> None:
        self.exp_dir = exp_dir
        self.registered: dict[str, list[tuple[int, Path]]] = {}  # trial id -> (step, checkpoint dir)

    def __getstate__(self) -> dict:  # pickled into the Tuner and its snapshots: what this process saw stays here
        return {"exp_dir": self.exp_dir, "registered": {}}

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info: Any) -> None:
        self.registered.setdefault(trial.trial_id, []).append((iteration, Path(checkpoint.path)))
        step = kept_step(Path(self.exp_dir))
        if step is None:
            return
        for trial_id, ckpts in self.registered.items():
            n = stale_checkpoints(ckpts, step)
            for _, path in ckpts[:n]:
                shutil.rmtree(path, ignore_errors=True)
            self.registered[trial_id] = ckpts[n:]


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
