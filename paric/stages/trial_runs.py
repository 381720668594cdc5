"""MLflow child runs of sweep trials, written by a Tune callback on the driver.

Why on the driver: a run opened inside the trial dies with it. Tune ends a trial's actor as soon as
the trial has reported its last epoch (or ASHA stops it), so a run closed in the trial's own
``finally`` was left ``RUNNING`` (killed before it got there) or ``FAILED`` (interrupted inside
it), without its metrics. Tune's controller sees every trial start, report, finish and error, and
lives as long as the sweep: every trial run ends there with its status and metrics.

The callback is pickled with the Tuner (and unpickled when an interrupted sweep is restored), so it
keeps only strings; the MLflow parent of the *current* invocation is looked up by the sweep's name
in :data:`ACTIVE`, which the driver sets before ``fit``.
"""
from __future__ import annotations

import json
from typing import Any

from ray import tune

from paric.tracking import log_metrics, mlflow_client, start_run_id

#: sweep name -> the Tracking (uri, experiment_id, parent_id) of the invocation running it
ACTIVE: dict[str, Any] = {}
TRIAL_TAG = "paric.trial_id"


class TrialRuns(tune.Callback):
    """One MLflow child run per trial: params at start, each epoch's metrics, and the end state
    (``FINISHED``, with ``paric.stopped_early`` when ASHA cut it short, or ``FAILED`` with the error)."""

    def __init__(self, sweep: str, method: str) -> None:
        self.sweep, self.method = sweep, method
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id (this invocation)

    def __getstate__(self) -> dict:
        return {"sweep": self.sweep, "method": self.method, "runs": {}}

    def _tracking(self):
        return ACTIVE.get(self.sweep)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        tr = self._tracking()
        if tr is None:
            return
        params = dict(trial.config or {})
        name = f"trial {self.method} {json.dumps(params, sort_keys=True)}"
        self.runs[trial.trial_id] = start_run_id(tr.uri, tr.experiment_id, name, tr.parent_id,
                                                 {"method": self.method, **params},
                                                 tags={TRIAL_TAG: trial.trial_id})

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        tr, rid = self._tracking(), self.runs.get(trial.trial_id)
        if tr is None or rid is None:
            return
        step = int(result.get("training_iteration", 0))
        skip = {"training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "time_since_restore",
                "iterations_since_restore", "pid", "done"}
        log_metrics(tr.uri, rid, {k: v for k, v in result.items() if k not in skip and not isinstance(v, dict)},
                    step=step)

    def _end(self, trial, status: str, **tags: str) -> None:
        tr, rid = self._tracking(), self.runs.pop(trial.trial_id, None)
        if tr is None or rid is None:
            return
        client = mlflow_client(tr.uri)
        for k, v in tags.items():
            client.set_tag(rid, k, v)
        client.set_terminated(rid, status)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = trial.last_result or {}
        # a trainable that returned reports done=True; one the scheduler stopped does not
        early = {} if last.get("done") else {"paric.stopped_early": f"after {last.get('training_iteration', 0)} epoch(s)"}
        self._end(trial, "FINISHED", **early)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        error = str(getattr(trial, "error_message", None) or "").strip().splitlines()
        self._end(trial, "FAILED", **{"paric.error": (error[-1] if error else "see the trial's error file")[:500]})
