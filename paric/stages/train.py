"""Stage: train + evaluate one method/seed on Ray Train, streaming images and maps via Ray Data.

Why this shape: the map store is read with ``ray.data.read_parquet`` and joined to the images by
an actor pool (decoded once, then materialised in the object store), each worker takes its shard
with ``get_dataset_shard`` and ``iter_torch_batches``, checkpoints every epoch with
``ray.train.report`` and resumes from ``get_checkpoint`` after a worker failure
(``FailureConfig``). The loop itself is :mod:`paric.train.loop`, identical without Ray.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch
from ray.data import ActorPoolStrategy
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from paric.config import Config
from paric.io import write_json
from paric.stages.cache import is_done, mark_done, timed_stage
from paric.stages.ray_env import cluster_gpus
from paric.store import list_parts, read_provenance, read_store
from paric.tracking import log_artifact, log_history, log_metrics, start_run
from paric.train.data import ImageJoiner
from paric.train.fit_log import epoch_line
from paric.train.loop import fit
from paric.train.run import RunSpec, dataset_info, make_spec, make_trainer, run_in_memory, split_columns, test_metrics

log = logging.getLogger("paric")
STATE = "state.pt"
RESULT = "result.json"


def split_dataset(cfg: Config, root: Path, split: str, columns: list[str], with_mask: bool) -> ray.data.Dataset:
    """A split as a materialised Ray Dataset: map-store columns joined to decoded images (and masks)."""
    store = cfg.output_path("maps", split)
    parts = [str(p) for _, p in sorted(list_parts(store).items())]
    if not parts:
        raise FileNotFoundError(f"{store}: no map-store parts; run the precompute stage first")
    ds = ray.data.read_parquet(parts).select_columns(["image_id", "label", "group", *columns])
    ds = ds.map_batches(ImageJoiner, fn_constructor_args=(str(root), split, cfg.classifier.image_size, with_mask),
                        batch_format="numpy", batch_size=256, compute=ActorPoolStrategy(size=1))
    return ds.drop_columns(["image_id"]).materialize()


def _worker(config: dict) -> None:
    """Ray Train worker: same loop as the plain path; checkpoints each epoch; rank 0 tests the best epoch."""
    import ray.train
    import ray.train.torch

    spec = RunSpec(**config["spec"])
    cfg = spec.config()
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    wrap = ray.train.torch.prepare_model if ctx.get_world_size() > 1 else None
    trainer = make_trainer(spec, device, wrap)
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            trainer.load_state_dict(torch.load(Path(d) / STATE, map_location="cpu", weights_only=False))
    train_shard = ray.train.get_dataset_shard("train")
    val = ray.train.get_dataset_shard("val")
    bs = cfg.train.batch_size

    def on_epoch(t, metrics: dict) -> None:
        log.info(epoch_line(spec.method, spec.seed, metrics))
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:
                torch.save(t.state_dict(), Path(d) / STATE)
                checkpoint = Checkpoint.from_directory(d)
            ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, checkpoint=checkpoint)

    fit(trainer,
        lambda e: train_shard.iter_torch_batches(batch_size=bs, local_shuffle_buffer_size=4 * bs,
                                                 local_shuffle_seed=spec.seed * 10_000 + e),
        lambda: val.iter_torch_batches(batch_size=256),
        on_epoch)
    test = ray.train.get_dataset_shard("test") if config.get("test", True) else None
    result = test_metrics(trainer, test.iter_torch_batches(batch_size=128)) if rank == 0 and test is not None \
        else {"best_epoch": trainer.best["epoch"] + 1, "val_balanced_acc": trainer.best["score"]}
    with tempfile.TemporaryDirectory() as d:  # Train V2 keeps metrics only with a checkpoint
        checkpoint = None
        if rank == 0:
            torch.save(trainer.state_dict(), Path(d) / STATE)
            result.update(history=trainer.history, resumed_at_epochs=trainer.resumed_at)
            write_json(Path(d) / RESULT, result)
            checkpoint = Checkpoint.from_directory(d)
        ray.train.report({"done": 1, "val_balanced_acc": trainer.best["score"], "epoch": trainer.epoch},
                         checkpoint=checkpoint)


def run_on_ray(cfg: Config, root: Path, method: str, seed: int, backbone: Path | None, out: Path,
               datasets: dict[str, ray.data.Dataset] | None = None, callbacks: list | None = None) -> dict:
    """Fit one method/seed with a ``TorchTrainer``; returns the test metrics of its best epoch.

    ``datasets`` (train/val[/test]) can be built once and shared (sweeps); without a ``test``
    dataset the run reports only validation metrics. ``callbacks``: Train callbacks, e.g. Tune's.
    """
    t0 = time.time()
    n_classes, n_groups, has_masks = dataset_info(root)
    labels = read_store(cfg.output_path("maps", "train"), columns=["label", "group"])
    workers = cfg.train.num_workers
    spec = make_spec(cfg, method, seed, labels.label, labels.group, n_classes, n_groups, backbone, workers)
    if datasets is None:
        cols, need_mask = split_columns(cfg, method)
        datasets = {"train": split_dataset(cfg, root, "train", cols, need_mask),
                    "val": split_dataset(cfg, root, "val", [], False),
                    "test": split_dataset(cfg, root, "test", [], has_masks)}
    use_gpu = cfg.train.use_gpu if cfg.train.use_gpu is not None else cluster_gpus() > 0
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"spec": spec.to_dict(), "test": "test" in datasets},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name=out.name, storage_path=str(out.parent / "_ray"),
                             failure_config=FailureConfig(max_failures=cfg.train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1), callbacks=callbacks or None),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training {method} seed {seed} failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        metrics = json.loads((Path(d) / RESULT).read_text())
    metrics.update(method=method, seed=seed, seconds=round(time.time() - t0, 1))
    return metrics


@dataclass
class Tracking:
    """Where training runs are logged: an MLflow store, experiment and parent run."""

    uri: str
    experiment_id: str
    parent_id: str | None = None


def log_run(tracking: Tracking, name: str, params: dict, result: dict, result_file: Path) -> None:
    """One MLflow child run: the method's params, per-epoch metrics, test metrics, result.json."""
    with start_run(tracking.uri, tracking.experiment_id, name, tracking.parent_id, params) as rid:
        log_history(tracking.uri, rid, result.get("history", []))
        log_metrics(tracking.uri, rid, {f"test_{k}": v for k, v in result.items() if k != "history"})
        log_artifact(tracking.uri, rid, result_file)


def train_stage(cfg: Config, root: Path, method: str, seed: int, backbone: Path | None,
                tracking: Tracking | None = None) -> dict:
    """Train/evaluate one method and seed unless its result for this config exists already."""
    out = cfg.output_path("train", method, f"seed{seed}")
    key = cfg.section_hash("classifier", "train.epochs", "train.batch_size", "train.optimizer", "train.lr",
                           "train.head_lr", "train.momentum", "train.weight_decay", "train.warmup_epochs",
                           "train.flip", "eval") + ":" + json.dumps(cfg.method(method).model_dump(), sort_keys=True) \
        + ":" + str(read_provenance(cfg.output_path("maps", "train")).get("hash", ""))
    with timed_stage(f"train {method} s{seed}", out) as info:
        if is_done(out, key) and (out / "result.json").is_file():
            info["skipped"] = True
            return json.loads((out / "result.json").read_text())
        if cfg.train.num_workers == 0:
            result = run_in_memory(cfg, root, method, seed, backbone)
        else:
            result = run_on_ray(cfg, root, method, seed, backbone, out)
        write_json(out / "result.json", result)
        mark_done(out, key)
        if tracking is not None:
            log_run(tracking, f"{method} seed{seed}", {"method": method, "seed": seed, **cfg.method(method).model_dump()},
                    result, out / "result.json")
    return result


def summarise(results: dict[str, list[dict]], metrics: list[str]) -> dict:
    """{method: {metric: {mean, std, runs}}} over seeds (the results.json contract)."""
    out: dict = {}
    for method, runs in results.items():
        out[method] = {}
        for m in metrics:
            vals = [r[m] for r in runs if r.get(m) is not None]
            if vals:
                out[method][m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "runs": vals}
    return out


TABLE_METRICS = ["worst_group_acc", "mean_group_acc", "acc", "balanced_acc", "ece", "nll", "fgsm_acc", "pgd_acc",
                 "cam_energy_in_mask", "seconds"]


def compare_stage(cfg: Config, root: Path, methods: list[str], seeds: list[int], backbone: Path | None,
                  tracking: Tracking | None = None) -> dict:
    """Every method × seed (each cached), summarised as mean ± std; written to ``train/summary.json``."""
    results = {m: [train_stage(cfg, root, m, s, backbone, tracking) for s in seeds] for m in methods}
    summary = {"methods": summarise(results, TABLE_METRICS), "seeds": seeds,
               "methods_config": {m: cfg.method(m).model_dump() for m in methods}}
    write_json(cfg.output_path("train", "summary.json"), summary)
    return summary
