"""Sweeps: Tune + Optuna trials on Ray Train read stored samples only, survive crashing trials, and
resume after the driver is killed."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paric.catalog import load_config
from paric.config import profile_overlays
from paric.stages.classifier import backbone_stage
from paric.stages.maps import run_precompute
from paric.stages.sweep import adopt_best_trial, apply_best, finished_trial, sweep_key, sweep_stage
from paric.stages.train import cached_result
from paric.stages.train import Tracking
from paric.store import list_parts
from paric.tracking import PARENT_TAG, ensure_experiment, start_run_id, tracking_uri
from mlflow.tracking import MlflowClient

from conftest import TINY, precomputed_copy

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "default.yaml"


def quick(out: Path, *extra: str):
    """The quick profile at the tests' toy sizes (what the sweep tests assert is plumbing, not numbers)."""
    return load_config(CONF, [*TINY, f"run.output_dir={out}", *extra], overlays=profile_overlays(CONF, ["quick"]))


@pytest.fixture(scope="module")
def precomputed(tmp_path_factory, tiny_precomputed):
    out = precomputed_copy(tiny_precomputed, tmp_path_factory.mktemp("sweep"))  # its precompute: cached
    cfg = quick(out)
    run_precompute(cfg, progress=False)
    return out, backbone_stage(cfg, cfg.data_root(), progress=False)


def test_sweep_reads_stored_samples_only_and_survives_crashing_trials(precomputed, caplog):
    out, backbone = precomputed
    # a grid: λ = 1e30 makes two trials diverge (TrainingDiverged), k over the stored K=4
    cfg = quick(out, "sweep.num_samples=4", "sweep.spaces.paric_mean.weight={dist: grid, choices: [0.01, 1.0e30]}",
                "sweep.spaces.paric_mean.k={dist: grid, choices: [1, 4]}", "train.max_failures=0")
    parts = {s: {p: p.stat().st_mtime_ns for p in list_parts(cfg.layout.maps(s)).values()}
             for s in ("train", "val")}
    # without the VLM and adapter checkpoints no map could be computed: trials must read the store
    os.rename(cfg.output_path("vlm"), cfg.output_path("vlm.hidden"))
    uri = tracking_uri(out)
    tracking = Tracking(uri, ensure_experiment(uri, "sweep-test"))
    tracking.parent_id = start_run_id(uri, tracking.experiment_id, "sweep")
    try:
        summary = sweep_stage(cfg, cfg.data_root(), "paric_mean", backbone, tracking)
    finally:
        os.rename(cfg.output_path("vlm.hidden"), cfg.output_path("vlm"))
    trials = summary["trials"]
    assert len(trials) == 4
    # issue 30 item 5: the Optuna study persisted beside the sweep, as optuna-dashboard reads it
    import optuna

    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(cfg.output_path("sweep", "paric_mean", "optuna.journal"))))
    study = optuna.load_study(study_name="paric_mean", storage=journal)
    assert len(study.trials) == 4 and {t.state.name for t in study.trials} <= {"COMPLETE", "FAIL", "PRUNED"}
    failed = [t for t in trials if t["error"]]
    ok = [t for t in trials if not t["error"]]
    assert failed and ok, trials  # the sweep went on past a crashed trial
    assert all("TrainingDiverged" in t["error"] or "loss is" in t["error"] for t in failed), failed
    # issue 14 item 4: every trial's MLflow run ends, finished ones with the objective, crashed ones FAILED
    runs = MlflowClient(uri).search_runs([tracking.experiment_id], f"tags.`{PARENT_TAG}` = '{tracking.parent_id}'")
    assert len(runs) == 4
    states = sorted(r.info.status for r in runs)
    assert states == sorted(["FAILED"] * len(failed) + ["FINISHED"] * len(ok)), states
    for r in runs:
        if r.info.status == "FINISHED":
            assert "val_balanced_acc" in r.data.metrics and "train_loss" in r.data.metrics
        else:
            assert r.data.tags.get("paric.error")
    assert summary["best"] in [t["params"] for t in ok]
    # each trial keeps its last checkpoint once the sweep is over (older ones went once no resume could need them)
    assert all(len(list(Path(t["path"]).glob("checkpoint_*"))) <= 1 for t in trials)
    assert all(len(list(Path(t["path"]).glob("checkpoint_*"))) == 1 for t in ok)
    # nothing stays reserved after the sweep (Train V2 leaks failed trials' groups; the stage removes them)
    import ray

    assert all(g["state"] != "CREATED" for g in ray.util.placement_group_table().values())
    assert all(1 <= t["params"]["k"] <= 4 for t in trials)
    # the quick profile's space is a grid: each (λ, k) combination exactly once
    assert sorted((t["params"]["weight"], t["params"]["k"]) for t in trials) == \
        sorted((w, k) for w in (0.01, 1.0e30) for k in (1, 4))
    assert {s: {p: p.stat().st_mtime_ns for p in list_parts(cfg.layout.maps(s)).values()}
            for s in ("train", "val")} == parts
    final = apply_best(cfg, {"paric_mean": summary})
    assert final.method("paric_mean").weight == summary["best"]["weight"]
    assert final.method("paric_mean").k == summary["best"]["k"]
    # the best trial stands in for the run.seed final run (tested now, then cached); other seeds train
    adopted = adopt_best_trial(final, cfg.data_root(), "paric_mean", cfg.run.seed, summary, None)
    assert adopted is not None and adopted["from_sweep_trial"] == summary["best_path"]
    assert adopted["val_balanced_acc"] == pytest.approx(summary["best_score"])
    assert len(adopted["history"]) == final.train.epochs and 0.0 <= adopted["worst_group_acc"] <= 1.0
    assert cached_result(final, "paric_mean", cfg.run.seed)["worst_group_acc"] == adopted["worst_group_acc"]
    # train.num_workers=0: the trial trained in its Tune actor with the final runs' plain loop, so a final
    # run of its values and seed retraces it epoch by epoch
    from paric.train.run import run_in_memory

    plain = run_in_memory(final, cfg.data_root(), "paric_mean", cfg.run.seed, backbone)
    keys = ("train_loss", "val_balanced_acc", "val_acc", "best_epoch")
    assert [{k: h[k] for k in keys} for h in plain["history"]] == [{k: h[k] for k in keys} for h in adopted["history"]]
    assert plain["worst_group_acc"] == adopted["worst_group_acc"]
    assert adopt_best_trial(final, cfg.data_root(), "paric_mean", cfg.run.seed + 1, summary, None) is None
    longer = final.train.model_copy(update={"epochs": final.train.epochs + 1})
    assert finished_trial(summary["best_path"], longer) is None  # stopped early: not a final run
    # cached: a second call returns the stored summary without running trials
    with caplog.at_level("INFO", logger="paric"):
        assert sweep_stage(cfg, cfg.data_root(), "paric_mean", backbone) == summary
    assert "skipped (cached)" in caplog.text
    # the final runs' seeds and methods are not the sweep's inputs; its space and the training are
    base = ["sweep.num_samples=4", "sweep.spaces.paric_mean.weight={dist: grid, choices: [0.01, 1.0e30]}",
            "sweep.spaces.paric_mean.k={dist: grid, choices: [1, 4]}", "train.max_failures=0"]
    more_seeds = quick(out, *base, "train.seeds=[4,5]", "train.compare=[vanilla,paric_mean]",
                       "sweep.spaces.gals.weight=[1,2]")
    assert sweep_key(more_seeds, "paric_mean") == sweep_key(cfg, "paric_mean")
    assert sweep_key(quick(out, *base, "train.lr=0.02"), "paric_mean") != sweep_key(cfg, "paric_mean")


def test_a_ray_train_trial_reports_to_tune_and_can_stand_in_for_a_final_run(precomputed):
    """``train.num_workers`` ≥ 1: each trial drives a TorchTrainer (controller and worker processes) on the
    Ray Datasets built once by the sweep; Train's reports reach Tune (the objective, per epoch) and the
    trial's Train checkpoint is what ``finished_trial`` reads."""
    out, backbone = precomputed
    cfg = quick(out, "train.num_workers=1", "sweep.num_samples=1", "sweep.spaces.gals.weight={dist: grid, choices: [1.0]}")
    assert sweep_key(cfg, "gals") != sweep_key(quick(out, "sweep.num_samples=1",
                                                     "sweep.spaces.gals.weight={dist: grid, choices: [1.0]}"), "gals")
    try:
        summary = sweep_stage(cfg, cfg.data_root(), "gals", backbone)
        assert summary["failed"] == 0 and summary["best"] == {"weight": 1.0}
        path = Path(summary["best_path"])
        assert list(path.glob("_ray/train/checkpoint_*/result.json")) and not list(path.glob("checkpoint_*"))
        found = finished_trial(path, cfg.train)
        assert found is not None and found[0]["val_balanced_acc"] == pytest.approx(summary["best_score"])
        assert len(found[0]["history"]) == cfg.train.epochs
    finally:
        shutil.rmtree(cfg.layout.sweep("gals"), ignore_errors=True)  # the module's other gals sweep starts afresh


def test_a_two_stage_method_sweeps_in_the_plain_loop_and_its_best_trial_keeps_the_first_stage(precomputed):
    """JTT's trials run both stages in their actors (``train.num_workers=0``): the swept λ_up reaches the
    second stage, each trial selects on worst-group validation, and the adopted trial keeps what the
    first stage reports (the error set), as a final run of the same values and seed has it."""
    out, backbone = precomputed
    cfg = quick(out, "train.methods.jtt.two_stage_options.epochs=1",
                "sweep.spaces.jtt.two_stage_options.up={dist: grid, choices: [2, 5]}")
    summary = sweep_stage(cfg, cfg.data_root(), "jtt", backbone)
    assert summary["failed"] == 0 and len(summary["trials"]) == 2
    assert sorted(t["params"]["two_stage_options.up"] for t in summary["trials"]) == [2, 5]
    final = apply_best(cfg, {"jtt": summary})
    assert final.method("jtt").two_stage_options["up"] == summary["best"]["two_stage_options.up"]
    adopted = adopt_best_trial(final, cfg.data_root(), "jtt", cfg.run.seed, summary, None)
    assert adopted is not None and adopted["jtt_errors"] >= 0 and "jtt_minority_share" in adopted
    from paric.train.run import run_in_memory

    plain = run_in_memory(final, cfg.data_root(), "jtt", cfg.run.seed, backbone)
    assert plain["jtt_errors"] == adopted["jtt_errors"] and plain["worst_group_acc"] == adopted["worst_group_acc"]


def test_a_checkpoint_goes_only_once_the_kept_snapshot_is_newer_than_the_next(tmp_path):
    """A snapshot taken in step s names, of each trial, the last checkpoint registered in a step ≤ s: the
    checkpoints before the last one of a step < s can go, nothing else (and nothing without a kept snapshot)."""
    from paric.stages.sweep_snapshot import keep_snapshot, kept_step
    from paric.stages.trial_checkpoints import stale_checkpoints

    kept = [(3, Path("c0")), (5, Path("c1")), (5, Path("c2")), (9, Path("c3"))]
    assert stale_checkpoints(kept, 3) == 0  # a step-3 snapshot may predate c0's registration in step 3
    assert stale_checkpoints(kept, 4) == 0  # it names c0
    assert stale_checkpoints(kept, 6) == 2  # it names c2 (or later): c0, c1 can go
    assert stale_checkpoints(kept, 9) == 2  # c3 was registered in step 9 too: c2 stays
    assert stale_checkpoints(kept, 10) == 3
    exp, staging = tmp_path / "_tune" / "m", tmp_path / "staging"
    exp.mkdir(parents=True)
    staging.mkdir()
    assert kept_step(exp) is None
    (staging / "experiment_state-2026-01-01_00-00-00.json").write_text('{"runner_data": {"_iter')  # being written
    assert keep_snapshot(staging, exp) is None and kept_step(exp) is None
    (staging / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"runner_data": {"_iteration": 7}}))
    assert keep_snapshot(staging, exp) == 7 and kept_step(exp) == 7
    (staging / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"runner_data": {"_iteration": 12}}))
    assert keep_snapshot(staging, exp) == 12 and kept_step(exp) == 12
    assert len(list((tmp_path / "_tune" / "snapshots").iterdir())) == 1  # the older copy went


def test_a_resume_installs_the_kept_snapshot_over_a_cut_off_one(tmp_path):
    """Tune writes its snapshot in place (staging, then a copy into the experiment directory): a kill
    mid-write left a cut-off ``experiment_state`` that ``Tuner.restore`` could not parse (CI, 2026-12-06).
    The resume installs the kept copy, whole and of one snapshot, and moves a later session's files aside."""
    from paric.stages.sweep_snapshot import install_kept_snapshot, keep_snapshot, snapshot_step

    exp, staging = tmp_path / "_tune" / "m", tmp_path / "staging"
    exp.mkdir(parents=True)
    staging.mkdir()
    state = {"runner_data": {"_iteration": 5}, "trial_data": [["{}", "{}"]]}
    (staging / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    (staging / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(b"searcher at 5")
    (staging / ".1234-tmp-searcher-state-2026-01-01_00-00-00.pkl").write_bytes(b"half")  # Tune's temp: not kept
    assert install_kept_snapshot(exp) is None  # nothing kept yet: nothing changes
    assert keep_snapshot(staging, exp) == 5
    text = json.dumps({**state, "runner_data": {"_iteration": 6}})
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(text[: len(text) // 2])  # the copy, cut off
    (exp / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(b"searcher at 6")
    (exp / "experiment_state-2026-01-02_00-00-00.json").write_text("")  # a resumed session's, cut at once
    (exp / "tuner.pkl").write_bytes(b"tuner")
    assert snapshot_step(exp / "experiment_state-2026-01-01_00-00-00.json") is None
    assert install_kept_snapshot(exp) == 5
    assert snapshot_step(sorted(exp.glob("experiment_state-*.json"))[-1]) == 5  # what Tune restores now
    assert (exp / "searcher-state-2026-01-01_00-00-00.pkl").read_bytes() == b"searcher at 5"  # of the same snapshot
    assert (tmp_path / "_tune" / "superseded" / "experiment_state-2026-01-02_00-00-00.json").is_file()
    assert (exp / "tuner.pkl").read_bytes() == b"tuner"
    assert sorted(p.name for p in exp.iterdir()) == ["experiment_state-2026-01-01_00-00-00.json",
                                                     "searcher-state-2026-01-01_00-00-00.pkl", "tuner.pkl"]


def test_the_callback_keeps_a_copy_once_per_snapshot_and_a_failed_copy_does_not_stop_the_sweep(tmp_path, caplog):
    """KeepSnapshot copies Tune's staging snapshot when it changed; a copy that cannot be written is logged
    (the sweep goes on, a resume installs the older copy)."""
    from types import SimpleNamespace

    from paric.stages.sweep_snapshot import KeepSnapshot, kept_snapshot, snapshots_root

    exp, staging = tmp_path / "_tune" / "m", tmp_path / "staging"
    exp.mkdir(parents=True)
    staging.mkdir()
    trial = SimpleNamespace(storage=SimpleNamespace(experiment_driver_staging_path=str(staging)))
    keep = KeepSnapshot(str(exp))
    keep.on_step_end(iteration=1, trials=[trial])  # nothing written yet
    assert kept_snapshot(exp) is None
    state = staging / "experiment_state-2026-01-01_00-00-00.json"
    state.write_text(json.dumps({"runner_data": {"_iteration": 3}}))
    keep.on_step_end(iteration=4, trials=[trial])
    first = kept_snapshot(exp)
    assert first[0] == 3
    keep.on_step_end(iteration=5, trials=[trial])  # the same snapshot: not copied again
    assert kept_snapshot(exp) == first
    shutil.rmtree(snapshots_root(exp))
    snapshots_root(exp).write_text("not a directory")  # the copy cannot be written
    state.write_text(json.dumps({"runner_data": {"_iteration": 30}}))
    with caplog.at_level(logging.WARNING, logger="paric"):
        keep.on_step_end(iteration=31, trials=[trial])
    assert "could not keep a copy" in caplog.text


def test_a_finished_sweep_keeps_each_trials_last_checkpoint_and_leaves_ray_trains_alone(tmp_path):
    """When the sweep ends each in-actor trial keeps its last checkpoint (by index), also those a resumed
    invocation never saw registered, and Train's own are not touched."""
    from paric.stages.trial_checkpoints import keep_last_checkpoints

    a, b = tmp_path / "_trial_a", tmp_path / "_trial_b"
    for i in (0, 1, 2, 10):
        (a / f"checkpoint_{i:06d}").mkdir(parents=True)
    (b / "_ray" / "train" / "checkpoint_000000").mkdir(parents=True)
    (b / "_ray" / "train" / "checkpoint_000001").mkdir(parents=True)
    (tmp_path / "experiment_state-x.json").write_text("{}")
    assert keep_last_checkpoints(tmp_path) == 3
    assert [p.name for p in a.iterdir()] == ["checkpoint_000010"]
    assert len(list((b / "_ray" / "train").iterdir())) == 2
    assert keep_last_checkpoints(tmp_path) == 0


def _saved_epochs(trial: Path) -> int:
    """Epochs a trial has checkpointed: its newest checkpoint's index + 1 (the older ones may be pruned)."""
    return max((int(c.name.rsplit("_", 1)[1]) + 1 for c in trial.glob("checkpoint_*")), default=0)


def _params(params_json: Path) -> str | None:
    """A trial's params.json as canonical JSON, or None where it is empty or cut off."""
    try:
        return json.dumps(json.loads(params_json.read_text()), sort_keys=True)
    except json.JSONDecodeError:
        return None


def test_killed_sweep_resumes_the_remaining_trials(precomputed):
    out, _ = precomputed
    args = [sys.executable, str(REPO / "pipelines" / "sweep.py"), "--quick", "--no-progress", "--methods", "gals",
            *TINY, f"run.output_dir={out}", "sweep.num_samples=3", "sweep.max_concurrent=1",
            "sweep.spaces.gals.grid=false", "sweep.spaces.gals.weight=[0.3,3.0]",  # 3 sampled trials, not the grid
            "train.epochs=30", "train.patience=30"]  # ~50 ms epochs: a trial's are a window to kill in
    tune_dir = out / "sweep" / "gals" / "_tune" / "gals"
    # a snapshot each step (Tune's default: every 10 s or more), as often as it registers a checkpoint:
    # the kill then finds the trials on disk, and any checkpoint deleted before its snapshot would show
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)  # its own local Ray, killed with it
    deadline = time.time() + 300
    try:
        while time.time() < deadline:  # kill in a later trial's epochs: one finished, one to resume mid-run
            started = sorted(tune_dir.glob("_trial_*/params.json")) if tune_dir.is_dir() else []
            mid_run = [p.parent for p in started if _saved_epochs(p.parent) >= 3  # in epoch 4 or later
                       and not list(p.parent.glob("checkpoint_*/result.json"))]
            if len(started) >= 2 and mid_run:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        assert mid_run, "the sweep did not reach its second trial's epochs in time"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # a trial whose params.json the kill cut off (Tune writes it in place as the trial starts: one was empty after
    # the kill in a fresh clone's suite, 2026-12-06) had recorded nothing to keep; the others must be kept
    before = {params for params in map(_params, started) if params is not None}
    assert before, "no trial had recorded its parameters before the kill"
    # the checkpoint the kept snapshot names is on disk for every trial it would restore (Tune's
    # num_to_keep deleted it before its snapshot caught up: CI, 2026-12-05); older ones may have gone
    from ray.tune.experiment.trial import Trial

    from paric.stages.sweep_snapshot import kept_snapshot

    _, kept = kept_snapshot(tune_dir)
    state = json.loads(sorted(kept.glob("experiment_state-*.json"))[-1].read_text())
    named = []
    for trial_json, metadata in state["trial_data"]:
        trial = Trial.from_json_state(trial_json, stub=True)
        trial.restore_run_metadata(metadata)
        if trial.checkpoint is not None:
            named.append(Path(trial.checkpoint.path))
    assert named and all(p.is_dir() for p in named), [(p.parent.name, p.name, p.is_dir()) for p in named]
    assert not (out / "sweep" / "gals" / "best.json").exists()
    cut = sorted(tune_dir.glob("experiment_state-*.json"))[-1]  # as a kill mid-write leaves it (CI, 2026-12-06)
    cut.write_text(cut.read_text()[:100])
    # and the params.json written last (the newest trial's), as a kill at that trial's start leaves it
    max(started, key=lambda p: p.stat().st_mtime_ns).write_text("")
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming the interrupted sweep" in done.stderr
    summary = json.loads((out / "sweep" / "gals" / "best.json").read_text())
    assert len(summary["trials"]) == 3 and summary["failed"] == 0
    after = {json.dumps(t["params"], sort_keys=True) for t in summary["trials"]}
    assert before <= after  # the trials begun before the kill are kept (finished) or rerun, not redrawn
    import optuna

    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(out / "sweep" / "gals" / "optuna.journal")))
    finished = [t for t in optuna.load_study(study_name="gals", storage=journal).trials if t.state.name == "COMPLETE"]
    assert len(finished) >= 3  # the resumed searcher kept writing the study the killed one began


def test_address_file_points_at_the_session_cluster(ray_cluster):
    """A stale address file (an earlier `ray start`) sends Train V2's placement-group cleaner to a
    dead cluster, and stopped trials then keep their CPUs: the local cluster re-advertises itself."""
    from ray._private.utils import get_ray_address_file, read_ray_address, write_ray_address

    from paric.stages.ray_env import advertise_local_cluster

    Path(get_ray_address_file(None)).unlink(missing_ok=True)
    advertise_local_cluster()  # where no Ray wrote the file (or its directory) yet, too: CI ran this first
    write_ray_address("192.0.2.1:1")
    advertise_local_cluster()
    assert read_ray_address() == ray_cluster.get_runtime_context().gcs_address


def test_a_plain_run_keeps_its_address_file_to_itself(ray_cluster, tmp_path):
    """Another local cluster (this session's) runs beside it: the plain run's address file is in its own
    temp dir and names its own cluster, and the machine-wide file is left alone."""
    from ray._private.utils import read_ray_address

    before = read_ray_address()
    code = ("import os, ray; from paric.stages.ray_env import ensure_ray; "
            "from ray._private.utils import read_ray_address; ensure_ray(num_cpus=1, object_store_mb=100); "
            "print('RESULT', os.environ['RAY_TMPDIR'], read_ray_address() == ray.get_runtime_context().gcs_address, "
            "ray.get_runtime_context().gcs_address); ray.shutdown()")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    _, tmp, own, address = line.split()
    assert tmp.startswith("/tmp/paric-ray-") and own == "True"
    assert address != ray_cluster.get_runtime_context().gcs_address and read_ray_address() == before
