"""The owner's command end to end: ``ray job submit -- python pipelines/full.py --quick`` against a
real local Ray head started with ``ray start --head``; outputs, MLflow nesting, the cached rerun, and
``--force`` on a plain run."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from paric.stages.ray_env import advertise_local_cluster

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    """The environment as a user types the README's make targets in: no venv on PATH, no
    RAY_AUTH_MODE (the targets set both)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIRTUAL_ENV", "RAY_AUTH_MODE")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != BIN)
    return {**env, **extra}


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A separate Ray head started by the README's ``make head`` (blocking, so it is stopped by killing
    its process group and the test session's own cluster is left alone); yields its dashboard port."""
    port, dash = _free_port(), _free_port()
    # every agent port explicit: the test session's own cluster already holds the defaults (e.g. the
    # dashboard agent's 52365), and a head whose agent cannot bind accepts no job
    agents = [f"--{name}={_free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                      "metrics-export-port", "runtime-env-agent-port",
                                                      "ray-client-server-port")]
    flags = " ".join(["--block", "--num-cpus=2", "--object-store-memory=536870912", *agents])
    log = tmp_path_factory.mktemp("head") / "head.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(["make", "head", f"RAY_PORT={port}", f"DASHBOARD_PORT={dash}", f"HEAD_FLAGS={flags}"],
                                cwd=REPO, env=_env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    while time.time() < deadline:
        ok = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=_env(RAY_AUTH_MODE="token"),
                            capture_output=True, text=True)
        if ok.returncode == 0:
            break
        assert proc.poll() is None, log.read_text()[-2000:]
        time.sleep(2)
    else:
        pytest.fail(f"Ray head did not come up: {log.read_text()[-2000:]}")
    yield dash
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    import ray

    if ray.is_initialized():  # `ray start` pointed the address file at the head just stopped
        advertise_local_cluster()


def _submit(dash: int, out: Path) -> subprocess.CompletedProcess:
    """The README's ``make submit`` with the quick profile into ``out``."""
    for _ in range(15):  # the head's job agent can come up a little after the dashboard
        done = subprocess.run(["make", "submit", f"DASHBOARD_PORT={dash}",
                               f"ARGS=--quick run.output_dir={out}"],
                              cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in done.stdout + done.stderr:
            return done
        time.sleep(2)
    return done


def test_job_submit_quick_pipeline_then_cached_rerun(ray_head, ray_cluster, tmp_path, capsys):
    out = tmp_path / "out"
    first = _submit(ray_head, out)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert "succeeded" in first.stdout + first.stderr
    # issue 14 item 13: with progress on (the default) a quick run's log stays readable
    lines = (first.stdout + first.stderr).splitlines()
    assert len(lines) < 300, f"{len(lines)} lines:\n" + "\n".join(lines[:400])
    token = Path.home() / ".ray" / "auth_token"
    if token.is_file():  # `make submit` tightens the token file Ray writes world-readable
        assert token.stat().st_mode & 0o077 == 0, oct(token.stat().st_mode)
    report = out / "report"
    results = json.loads((report / "results.json").read_text())
    for m in ("vanilla", "upweight", "gals", "paric_mean", "paric_median", "oracle_mask"):
        for metric in ("acc", "mean_group_acc", "worst_group_acc", "balanced_acc", "ece", "fgsm_acc", "pgd_acc"):
            assert 0.0 <= results["methods"][m][metric]["mean"] <= 1.0, (m, metric)
    assert set(results["maps"]["energy_in_mask"]) >= {"det", "mean", "median"}
    assert results["sweep"]["paric_mean"]["n_trials"] == 2
    adopted = json.loads((out / "train" / "paric_mean" / "seed0" / "result.json").read_text())
    assert "/sweep/paric_mean/_tune/" in adopted["from_sweep_trial"]  # the best trial was the seed-0 run
    twin = json.loads((out / "train" / "upweight" / "seed0" / "result.json").read_text())
    assert twin["same_training_as"] == "vanilla"  # balanced classes: upweight's weights are all 1
    assert results["methods"]["upweight"]["worst_group_acc"] == results["methods"]["vanilla"]["worst_group_acc"]
    text = (report / "report.md").read_text()
    assert (report / "results.csv").read_text().startswith("method,metric,n,mean")
    for fig in ("methods_ci.png", "ladder.png", "maps.png", "sweep_paric_mean_history.png"):
        assert (report / fig).stat().st_size > 1000 and f"]({fig})" in text
    # the map-quality ladder: every reference-trained method on one axis, the mask rung at its grid
    ladder = {p["method"]: p for p in json.loads((report / "ladder.json").read_text())["points"]}
    assert {"gals", "paric_mean", "paric_norm_mean", "oracle_mask", "ladder_mask8"} <= set(ladder)
    assert ladder["ladder_mask8"]["grid"] == "8×8" and ladder["oracle_mask"]["energy_in_mask"] == 1.0
    assert 0 < ladder["ladder_mask8"]["energy_in_mask"] < 1 and "## Map-quality ladder" in text
    assert results["methods"]["gals"]["worst_group_acc"]["ci"]["n"] == 1  # one seed: a zero-width interval
    first_stages = json.loads((out / "pipeline_summary.json").read_text())["stages"]
    assert all(s["state"] == "done" for s in first_stages)

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("quick")  # run.name of the quick profile
    runs = client.search_runs([exp.experiment_id], max_results=500)
    parents = [r for r in runs if r.info.run_name == "full quick"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    names = {r.info.run_name for r in children}
    assert {"stage sweep paric_mean", "stage report", "vanilla seed0", "paric_mean seed0"} <= names
    assert sum(n.startswith("trial paric_mean") for n in names) == 2
    # issue 14 item 4: every run ends, each trial with its objective (both trials succeed here)
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert all("val_balanced_acc" in r.data.metrics for r in children if r.info.run_name.startswith("trial"))
    trained = next(r for r in children if r.info.run_name == "paric_mean seed0")
    assert "test_worst_group_acc" in trained.data.metrics and "train_loss" in trained.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/results.json", "report/report.md", "report/maps.png"} <= artifacts

    second = _submit(ray_head, out)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    stages = json.loads((out / "pipeline_summary.json").read_text())["stages"]
    assert sorted(s["stage"] for s in stages) == sorted(s["stage"] for s in first_stages)
    assert all(s["state"] == "skipped (cached)" for s in stages), stages
    assert "skipped (cached)" in second.stdout + second.stderr

    # the same output, started plainly (pipelines/full.py's main, in this process: a fresh interpreter and
    # cluster would cost ~10 s more): --force report redoes the report and nothing else
    from paric.commands.run import main  # what pipelines/full.py runs

    assert main(["--quick", "--no-progress", f"run.output_dir={out}", "--force", "report"]) == 0
    states = {s["stage"]: s["state"] for s in json.loads((out / "pipeline_summary.json").read_text())["stages"]}
    assert states.pop("report") == "done"
    assert set(states.values()) == {"skipped (cached)"}, states
    # each finished invocation recorded its config; the last one is the resolved config beside the outputs
    assert len(list((out / "invocations").glob("*.yaml"))) == 3 and (out / ".paric.lock").is_file()
    assert "name: quick" in (out / "config.resolved.yaml").read_text()
    capsys.readouterr()  # a bad --force exits 2 before any stage
    assert main(["--quick", "--no-progress", f"run.output_dir={out}", "--force", "everything"]) == 2
    assert "unknown stage(s) ['everything']" in capsys.readouterr().err
