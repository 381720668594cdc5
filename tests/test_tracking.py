"""MLflow helpers against a real SQLite tracking store: nested runs, params, per-epoch metrics."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from paric.tracking import (OUTPUT_TAG, PARENT_TAG, close_stale_runs, ensure_experiment, log_artifact, log_history,
                            start_run, start_run_id, tracking_uri)


def test_nested_runs_with_history_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking_uri(tmp_path / "out")
    assert uri == f"sqlite:///{(tmp_path / 'out' / 'mlflow.db').resolve()}"
    exp = ensure_experiment(uri, "paric-test")
    assert ensure_experiment(uri, "paric-test") == exp
    with start_run(uri, exp, "pipeline", params={"train": {"lr": 0.01}}) as parent:
        with start_run(uri, exp, "gals-s0", parent_id=parent, params={"method": "gals"}) as child:
            log_history(uri, child, [{"epoch": 1, "val_acc": 0.5, "note": "x"}, {"epoch": 2, "val_acc": 0.75}])
            f = tmp_path / "result.json"
            f.write_text("{}")
            log_artifact(uri, child, f)
    client = MlflowClient(uri)
    c = client.get_run(child)
    assert c.data.tags[PARENT_TAG] == parent and c.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(child, "val_acc")] == [0.5, 0.75]
    assert client.get_run(parent).data.params["train.lr"] == "0.01"
    assert [a.path for a in client.list_artifacts(child)] == ["result.json"]


def test_failed_run_is_marked_failed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = ensure_experiment(uri, "e")
    rid = None
    try:
        with start_run(uri, exp, "boom") as rid:
            raise RuntimeError("trial crashed")
    except RuntimeError:
        pass
    assert MlflowClient(uri).get_run(rid).info.status == "FAILED"


def test_env_overrides_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_corrupt_store_names_the_file_and_the_way_out(tmp_path, monkeypatch):
    import pytest

    from paric.tracking import TrackingStoreError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "out" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(TrackingStoreError, match=rf"{db} cannot be opened .*Move it aside"):
        ensure_experiment(tracking_uri(tmp_path / "out"), "default")


def test_runs_a_killed_invocation_left_running_are_marked_killed(tmp_path):
    """Issue 14 item 4: a SIGKILLed invocation never closes its runs; the next one on the same output
    marks its parent and the parent's children KILLED, and leaves other outputs' live runs alone."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = ensure_experiment(uri, "e")
    out, other = str(tmp_path / "out"), str(tmp_path / "other")
    parent = start_run_id(uri, exp, "full e", tags={OUTPUT_TAG: out})
    trial = start_run_id(uri, exp, "trial x", parent)
    with start_run(uri, exp, "vanilla seed0", parent) as done:
        pass
    live = start_run_id(uri, exp, "full other", tags={OUTPUT_TAG: other})
    assert sorted(close_stale_runs(uri, exp, out)) == sorted([parent, trial])
    client = MlflowClient(uri)
    status = {r: client.get_run(r).info.status for r in (parent, trial, done, live)}
    assert status == {parent: "KILLED", trial: "KILLED", done: "FINISHED", live: "RUNNING"}
    assert close_stale_runs(uri, exp, out) == []
