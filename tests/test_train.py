"""Training on the tiny map store: the plain loop, its determinism and resume, the Ray Train path
(real TorchTrainer reading Ray Data), a killed worker resuming from its checkpoint, and the CLI."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from paric.catalog import load_config
from paric.config import with_value
from paric.stages.classifier import backbone_stage
from paric.stages.maps import run_precompute
from paric.stages.train import run_on_ray, train_stage
from paric.stages.train_data import split_dataset
from paric.train.data import iterate, load_split, prepare
from paric.train.run import make_spec, make_trainer, run_in_memory
from paric.train.loop import completed, fit

from conftest import precomputed_copy

REPO = Path(__file__).resolve().parents[1]
TRAIN = [
    "classifier.width=8",
    "classifier.image_size=32",
    "classifier.pretrain.epochs=1",
    "classifier.pretrain.batch_size=32",
    "train.epochs=2",
    "train.batch_size=8",
    "train.num_workers=0",
    "eval.adv_max_images=8",
    "eval.pgd_steps=2",
]
METRICS = {"acc", "mean_group_acc", "worst_group_acc", "balanced_acc", "ece", "nll", "fgsm_acc", "pgd_acc",
           "cam_energy_in_mask", "per_group_acc", "best_epoch"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_precomputed, tiny_overrides):
    out = precomputed_copy(tiny_precomputed, tmp_path_factory.mktemp("train"))  # its precompute: cached
    cfg = load_config(REPO / "conf" / "default.yaml", tiny_overrides + TRAIN + [f"run.output_dir={out}"])
    run_precompute(cfg, progress=False)
    backbone = backbone_stage(cfg, cfg.data_root(), progress=False)
    return cfg, backbone


def test_plain_loop_is_deterministic_and_complete(tiny):
    cfg, backbone = tiny
    a = run_in_memory(cfg, cfg.data_root(), "paric_mean", 0, backbone)
    b = run_in_memory(cfg, cfg.data_root(), "paric_mean", 0, backbone)
    assert METRICS <= set(a)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert a["worst_group_acc"] == b["worst_group_acc"] and a["nll"] == b["nll"]
    assert len(a["history"]) == cfg.train.epochs and a["history"][0]["train_att"] > 0
    c = run_in_memory(cfg, cfg.data_root(), "paric_mean", 1, backbone)
    assert [h["train_loss"] for h in c["history"]] != [h["train_loss"] for h in a["history"]]


def test_resume_from_state_equals_uninterrupted(tiny):
    cfg, backbone = tiny
    root, maps = cfg.data_root(), cfg.layout.maps()
    train = load_split(root, maps / "train", "train", 32, ["map_det"], False)
    val = load_split(root, maps / "val", "val", 32, [], False)
    spec = make_spec(cfg, "gals", 0, train["label"], train["group"], 2, 4, backbone)
    batches = lambda e: iterate(train, 8, True, 0, e)  # noqa: E731
    full = fit(make_trainer(spec), batches, lambda: iterate(val, 8, False))
    cfg1 = spec.config()
    fit_one = make_trainer(spec)
    fit_one.cfg = cfg1.model_copy(update={"train": cfg1.train.model_copy(update={"epochs": 1})})
    fit(fit_one, batches, lambda: iterate(val, 8, False))
    resumed = make_trainer(spec)
    resumed.load_state_dict(fit_one.state_dict())
    fit(resumed, batches, lambda: iterate(val, 8, False))
    assert resumed.resumed_at == [1]
    for (k, v), w in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(v, w), k


def test_patience_stops_a_run_whose_validation_score_stopped_improving(tiny):
    cfg, backbone = tiny
    root, maps = cfg.data_root(), cfg.layout.maps()
    train = load_split(root, maps / "train", "train", 32, [], False)
    val = load_split(root, maps / "val", "val", 32, [], False)
    frozen = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 6, "patience": 2, "lr": 1e-12})})
    spec = make_spec(frozen, "vanilla", 0, train["label"], train["group"], 2, 4, backbone)
    t = fit(make_trainer(spec), lambda e: iterate(train, 8, True, 0, e), lambda: iterate(val, 8, False))
    # lr 1e-12 leaves the predictions unchanged: the best stays epoch 1, so epochs 2 and 3 are stale
    assert [h["best_epoch"] for h in t.history] == [1, 1, 1]
    assert completed(t.history, frozen.train)
    assert not completed(t.history, frozen.train.model_copy(update={"patience": None}))  # ASHA-cut look-alike
    assert not completed(t.history[:2], frozen.train)


def test_flip_moves_image_map_and_mask_together():
    img = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    img[:, :, 0] = 255
    m = torch.zeros(2, 4, 4)
    m[:, :, 0] = 1
    b = {"image": img, "label": torch.tensor([0, 1]), "group": torch.tensor([0, 3]), "map_det": m.clone(),
         "map_samples": m.clone().unsqueeze(1).repeat(1, 3, 1, 1), "mask": m.clone().to(torch.uint8)}
    out = prepare(b, 4, torch.device("cpu"), flip=torch.tensor([True, False]))
    assert float(out["image"][0, 0, :, -1].min()) == 1.0 and float(out["image"][1, 0, :, 0].min()) == 1.0
    for k in ("map_det", "mask"):
        assert float(out[k][0, :, -1].min()) == 1.0 and float(out[k][1, :, 0].min()) == 1.0
    assert float(out["map_samples"][0, :, :, -1].min()) == 1.0


def test_an_evaluation_change_tests_the_stored_weights_again_without_training(tiny, caplog):
    """Only ``eval.*`` changed: the run's best weights are tested again (seconds), not retrained; a
    training change still retrains."""
    cfg, backbone = tiny
    first = train_stage(cfg, cfg.data_root(), "vanilla", 3, backbone)
    model = cfg.output_path("train", "vanilla", "seed3", "model.pt")
    stamp = model.stat().st_mtime_ns
    other_eval = with_value(cfg, "eval.faith_steps", 4)
    with caplog.at_level("INFO", logger="paric"):
        again = train_stage(other_eval, cfg.data_root(), "vanilla", 3, backbone)
    assert "tested again" in caplog.text and "skipped (cached)" not in caplog.text
    assert model.stat().st_mtime_ns == stamp  # the weights were not trained again
    assert again["history"] == first["history"] and again["best_epoch"] == first["best_epoch"]
    assert again["acc"] == first["acc"] and again["insertion_auc"] != first["insertion_auc"]  # 4 steps, not 16
    caplog.clear()
    with caplog.at_level("INFO", logger="paric"):
        train_stage(other_eval, cfg.data_root(), "vanilla", 3, backbone)  # now stored under the new key
    assert "skipped (cached)" in caplog.text
    other_fit = with_value(cfg, "train.lr", 0.02)
    from paric.stages.train import reevaluated

    assert reevaluated(other_fit, "vanilla", 3) is None  # a training change: no shortcut


def test_split_datasets_keep_row_order_across_builds(tiny):
    """Two builds of a split (other columns, with or without masks) yield rows in one order, so the
    same config and seed train the same model in a sweep trial and in a final run."""
    cfg, _ = tiny

    def rows(columns: list[str], masks: bool) -> np.ndarray:
        ds = split_dataset(cfg, cfg.data_root(), "train", columns, masks)
        return np.concatenate([b["map_det"] for b in ds.iter_batches(batch_size=8, batch_format="numpy")])

    first = rows(["map_det"], False)
    for _ in range(2):
        assert np.array_equal(rows(["map_det", "map_samples"], True), first)


def _kill_a_train_worker(stop: threading.Event, ckpt_root: Path, killed: list) -> None:
    """Once a few epochs have been checkpointed (so Ray Train has registered one), SIGKILL the
    process running the Train worker."""
    seen: set[str] = set()
    while not stop.is_set() and not killed:
        seen |= {p.name for p in ckpt_root.glob("**/checkpoint_*")}
        if len(seen) >= 3:
            workers = [p for p in psutil.process_iter(["cmdline", "create_time", "status"])
                       if any("RayTrainWorker" in part for part in (p.info["cmdline"] or []))
                       and p.info["status"] != psutil.STATUS_ZOMBIE]
            if workers:  # the newest one: earlier runs' worker processes may still be exiting
                victim = max(workers, key=lambda p: p.info["create_time"])
                victim.kill()
                killed.append(victim.pid)
                return
        time.sleep(0.02)


def test_killed_worker_resumes_from_last_checkpoint(tiny, tmp_path):
    cfg, backbone = tiny
    every_epoch = {"num_workers": 1, "epochs": 8, "patience": None}  # no early stop: all 8 epochs, once each
    ray_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=every_epoch)})
    out = tmp_path / "killed" / "vanilla-s0"
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_train_worker, args=(stop, out.parent / "_ray", killed), daemon=True)
    killer.start()
    try:
        result = run_on_ray(ray_cfg, ray_cfg.data_root(), "vanilla", 0, backbone, out)
    finally:
        stop.set()
        killer.join()
    assert killed, "no Train worker was found to kill"
    # restarted from a checkpoint (not from scratch) and still ran every epoch exactly once
    assert result["resumed_at_epochs"] and 1 <= result["resumed_at_epochs"][0] < 8
    assert [h["epoch"] for h in result["history"]] == list(range(1, 9))


def test_a_ray_train_run_samples_group_balanced_logs_from_rank_0_writes_its_result_and_caches(tiny, tmp_path, caplog):
    """One TorchTrainer run (each costs ~15 s of start-up and tear-down here, so one run serves four checks):
    the Ray Train path reads its shard once and draws group-balanced epochs from it (issue 28 item 2); rank 0
    logs each epoch's metrics to the run's MLflow run as the epoch ends (issue 30 item 5); the stage writes
    its result and a second call finds it cached."""
    import functools

    from mlflow.tracking import MlflowClient

    from paric.data import WaterbirdsDataset
    from paric.stages.train import fit_run, store_result
    from paric.tracking import ensure_experiment, log_epoch, start_run_id

    cfg, backbone = tiny
    two = {"num_workers": 1, "epochs": 2, "patience": None}
    ray_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=two)})
    uri = f"sqlite:///{tmp_path / 'live.db'}"
    rid = start_run_id(uri, ensure_experiment(uri, "live"), "group_dro seed0")
    # what train_stage does for a run it has to train (fit_run, then store_result), with the live curves
    result = fit_run(ray_cfg, ray_cfg.data_root(), "group_dro", 0, backbone, on_epoch=functools.partial(log_epoch, uri, rid))
    store_result(ray_cfg, "group_dro", 0, result, None)
    steps = [h.step for h in MlflowClient(uri).get_metric_history(rid, "val_balanced_acc")]
    assert sorted(steps) == [1, 2]  # once per epoch, from rank 0 only
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert METRICS <= set(result)
    assert result["selection"] == "val_worst_group_acc"
    assert 0.0 <= result["worst_group_acc"] <= result["mean_group_acc"] <= 1.0
    n_train = len(WaterbirdsDataset(ray_cfg.data_root(), "train", with_masks=False).rows)
    assert all(h["train_images"] == n_train for h in result["history"])  # n draws per epoch, as the split
    saved = json.loads((ray_cfg.output_path("train", "group_dro", "seed0", "result.json")).read_text())
    assert saved["acc"] == result["acc"] and ray_cfg.output_path("train", "group_dro", "seed0", "model.pt").is_file()
    with caplog.at_level("INFO", logger="paric"):
        again = train_stage(ray_cfg, ray_cfg.data_root(), "group_dro", 0, backbone)
    assert "skipped (cached)" in caplog.text and again["acc"] == result["acc"]


def test_cli_rejects_unknown_method_and_typo(capsys):
    from paric.commands.train import main  # what pipelines/train.py runs

    for extra in (["--methods", "nope"], ["train.epoch=3"]):
        assert main(extra) == 2
        assert "config error" in capsys.readouterr().err


def test_cli_trains_compares_and_tracks_in_mlflow(tiny, tiny_overrides, monkeypatch, capsys, caplog):
    """``pipelines/train.py``'s ``main`` in this process (its script is that function:
    ``test_cli.test_every_pipeline_script_is_its_paric_command``), so its runs go to the session's warm
    cluster instead of a fresh one."""
    from mlflow.tracking import MlflowClient

    from paric.commands.train import main

    cfg, _ = tiny
    args = [*tiny_overrides, *TRAIN, f"run.output_dir={cfg.run.output_dir}", "train.epochs=1"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    with caplog.at_level("INFO", logger="paric"):
        assert main(["--no-progress", "--methods", "vanilla,gals", "--seeds", "0,1", *args]) == 0
    assert "| gals |" in capsys.readouterr().out and "skipped (cached)" in caplog.text
    summary = json.loads((cfg.layout.train() / "summary.json").read_text())
    assert len(summary["methods"]["gals"]["worst_group_acc"]["runs"]) == 2
    results = json.loads(cfg.output_path("report", "results.json").read_text())
    assert {"config", "maps", "methods"} <= set(results) and "energy_in_mask" in results["maps"]
    assert set(results["methods"]["vanilla"]) >= {"acc", "mean_group_acc", "worst_group_acc", "balanced_acc", "ece"}
    assert "| vanilla |" in cfg.output_path("report", "report.md").read_text()
    client = MlflowClient(f"sqlite:///{cfg.output_path('mlflow.db')}")
    runs = client.search_runs([client.get_experiment_by_name(cfg.run.name).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 4
    assert all("test_worst_group_acc" in r.data.metrics for r in children)
    # issue 30 item 5: the curves were logged as each epoch ended, once each (not again at the end)
    for r in children:
        steps = [h.step for h in client.get_metric_history(r.info.run_id, "train_loss")]
        ran = json.loads(cfg.output_path("train", r.data.params["method"], f"seed{r.data.params['seed']}",
                                         "result.json").read_text())["epochs_trained"]
        assert sorted(steps) == list(range(1, ran + 1)) and r.info.status == "FINISHED", (r.info.run_name, steps)


def test_final_runs_show_their_curves_while_they_train(tiny, tmp_path):
    """What the MLflow UI shows mid-run: the run RUNNING, with the epochs so far."""
    import functools

    from mlflow.tracking import MlflowClient

    from paric.tracking import ensure_experiment, log_epoch, start_run_id

    cfg, backbone = tiny
    uri = f"sqlite:///{tmp_path / 'live.db'}"
    rid = start_run_id(uri, ensure_experiment(uri, "live"), "vanilla seed0")
    seen = []

    def watch(metrics: dict) -> None:
        functools.partial(log_epoch, uri, rid)(metrics)
        run = MlflowClient(uri).get_run(rid)
        seen.append((run.info.status, len(MlflowClient(uri).get_metric_history(rid, "val_balanced_acc"))))

    result = run_in_memory(cfg, cfg.data_root(), "vanilla", 0, backbone, on_epoch=watch)
    assert seen == [("RUNNING", e) for e in range(1, result["epochs_trained"] + 1)]



def test_majority_view_drops_minority_groups_and_diagnostics_are_logged(tiny):
    from paric.train.data import majority_groups, train_view

    label = np.array([0, 0, 0, 1, 1, 1, 1])
    group = np.array([0, 0, 1, 3, 3, 2, 3])
    assert majority_groups(label, group) == [0, 3]
    assert train_view("all", label, group) is None
    assert train_view("majority", label, group).tolist() == [True, True, False, True, True, False, True]
    cfg, backbone = tiny
    r100 = run_in_memory(cfg, cfg.data_root(), "oracle_mask_r100", 0, backbone)
    full = run_in_memory(cfg, cfg.data_root(), "oracle_mask", 0, backbone)
    import pandas as pd

    meta = pd.read_csv(cfg.data_root() / "metadata.csv")
    train = meta[meta["split"] == 0]
    n_train, n_minority = len(train), int((train["place"] != train["y"] % 2).sum())
    assert n_minority > 0 and r100["history"][0]["train_images"] == n_train - n_minority
    assert full["history"][0]["train_images"] == n_train
    h = full["history"][0]
    for key in ("diag_ce_majority", "diag_ce_minority", "diag_att_majority", "diag_grad_inside", "diag_grad_outside"):
        assert key in h and np.isfinite(h[key]), key
    assert "diag_ce_minority" not in r100["history"][0]  # no minority rows at ratio 1.0
