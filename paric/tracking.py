"""MLflow tracking: one parent run per pipeline invocation, child runs per stage / training run / trial.

Why these rules: MLflow 3 refuses the plain file store, so the default store is a SQLite file
beside the outputs (``sqlite:////abs/path/mlflow.db``; ``MLFLOW_TRACKING_URI`` overrides it, e.g. a
``mlflow server``); the database and experiment are created on the driver before any worker logs,
and children are linked with the ``mlflow.parentRunId`` tag, which works from any process.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

PARENT_TAG = "mlflow.parentRunId"


def mlflow_client(uri: str) -> "MlflowClient":
    """An MLflow client of ``uri``. Why imported here: every Ray worker imports the stages that log,
    but only the driver and rank 0 log; mlflow costs ~1 s of each worker's start-up otherwise."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def tracking_uri(output_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store in the run's output directory."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    path = Path(output_dir).expanduser().resolve() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class TrackingStoreError(RuntimeError):
    """The MLflow store cannot be opened (e.g. a corrupt ``mlflow.db``)."""


def ensure_experiment(uri: str, name: str) -> str:
    """Create (or find) the experiment; returns its id. Call on the driver before trials start.

    A store that cannot be opened fails here, before any stage, naming the store and the way out:
    tracking is a record of the runs, not their results (those are the files beside it).
    """
    try:
        store = mlflow_client(uri)
        exp = store.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else store.create_experiment(name)
    except Exception as exc:  # SQLAlchemy / MLflow errors of every kind: the store, not the pipeline, is broken
        where = uri.removeprefix("sqlite:///")
        first = (str(exc).splitlines() or [""])[0][:200]
        raise TrackingStoreError(
            f"the MLflow tracking store {where} cannot be opened ({type(exc).__name__}: {first}). "
            f"Move it aside (mv {where} {where}.broken) and rerun: the cached results are files under the output "
            "directory and are kept; only the run history in the store starts afresh. Or set MLFLOW_TRACKING_URI "
            "to another store.") from exc


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a (nested) metrics dict, flattened with dotted keys."""
    return {k: float(v) for k, v in _flat(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


OUTPUT_TAG = "paric.output"  # the output directory a top-level run belongs to (to find it after a kill)


def start_run_id(uri: str, experiment_id: str, name: str, parent_id: str | None = None,
                 params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> str:
    """Create a run (a child when ``parent_id`` is given) with its params; returns its id. The caller
    ends it (``set_terminated``); :func:`start_run` is the context-managed form."""
    client = mlflow_client(uri)
    all_tags = {"mlflow.runName": name, **(tags or {})}
    if parent_id:
        all_tags[PARENT_TAG] = parent_id
    rid = client.create_run(experiment_id, tags=all_tags).info.run_id
    if params:
        from mlflow.entities import Param

        flat = {k: str(v)[:6000] for k, v in _flat(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):
            client.log_batch(rid, params=[Param(k, v) for k, v in items[i:i + 100]])
    return rid


@contextmanager
def start_run(uri: str, experiment_id: str, name: str, parent_id: str | None = None,
              params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> Iterator[str]:
    """A run as a context; yields the run id, ends ``FINISHED`` (``FAILED`` on an exception).

    Uses the client API, not the fluent global state, so it is safe in Ray workers and threads.
    """
    rid = start_run_id(uri, experiment_id, name, parent_id, params, tags)
    status = "FAILED"
    try:
        yield rid
        status = "FINISHED"
    finally:
        mlflow_client(uri).set_terminated(rid, status)


def close_stale_runs(uri: str, experiment_id: str, output: str) -> list[str]:
    """Mark ``KILLED`` the runs a killed invocation on ``output`` left ``RUNNING`` (its top-level run,
    found by :data:`OUTPUT_TAG`, and that run's children); returns their ids.

    Safe only while holding the output directory's lock: then no live invocation owns a run there.
    """
    client = mlflow_client(uri)
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000)
    parents = {r.info.run_id for r in running if r.data.tags.get(OUTPUT_TAG) == output}
    stale = [r.info.run_id for r in running if r.info.run_id in parents or r.data.tags.get(PARENT_TAG) in parents]
    for rid in stale:
        client.set_tag(rid, "paric.killed", "the invocation ended without closing this run (killed)")
        client.set_terminated(rid, "KILLED")
    return stale


def log_metrics(uri: str, run_id: str, metrics: dict[str, Any], step: int | None = None) -> None:
    client = mlflow_client(uri)
    vals = numeric(metrics)
    from mlflow.entities import Metric

    entities = [Metric(k, v, 0, step or 0) for k, v in vals.items()]
    for i in range(0, len(entities), 500):
        client.log_batch(run_id, metrics=entities[i:i + 500])


def log_epoch(uri: str, run_id: str, metrics: dict[str, Any]) -> None:
    """One epoch's metrics as it ends (``epoch`` is the step): a run's curves grow while it trains.
    Module-level, so ``functools.partial(log_epoch, uri, run_id)`` travels to a Ray task."""
    log_metrics(uri, run_id, {k: v for k, v in metrics.items() if k != "epoch"}, step=int(metrics.get("epoch", 0)))


def log_history(uri: str, run_id: str, history: list[dict[str, Any]]) -> None:
    """Per-epoch metrics (``epoch`` is the step)."""
    for row in history:
        log_metrics(uri, run_id, {k: v for k, v in row.items() if k != "epoch"}, step=int(row.get("epoch", 0)))


def log_artifact(uri: str, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    mlflow_client(uri).log_artifact(run_id, str(path), artifact_path)
