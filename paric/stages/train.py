"""Stage: train + evaluate one method/seed on Ray Train, streaming images and maps via Ray Data.

Why this shape: the map store is read with ``ray.data.read_parquet`` and joined to the images by
an actor pool (decoded once, then materialised in the object store), each worker takes its shard
with ``get_dataset_shard`` and ``iter_torch_batches``, checkpoints every epoch with
``ray.train.report`` and resumes from ``get_checkpoint`` after a worker failure
(``FailureConfig``). The loop itself is :mod:`paric.train.loop`, identical without Ray.
"""
from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import ray
import torch
from ray.data import ActorPoolStrategy
from ray.train import (Checkpoint, CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig,
                       ScalingConfig)
from ray.train.torch import TorchTrainer

from paric.config import Config
from paric.io import write_json
from paric.regularizers import REGULARIZERS
from paric.stages.classifier import backbone_id
from paric.stages.cache import forced, is_done, mark_done, record_stage, timed_stage
from paric.stages.ray_env import cluster_gpus, ensure_ray, ordered_data, without_progress
from paric.store import list_parts, read_provenance, read_store
from paric.tracking import log_artifact, log_history, log_metrics, start_run
from paric.train.data import ImageJoiner, majority_groups, train_view
from paric.train.fit_log import epoch_line
from paric.train.loop import fit
from paric.train.run import (RunSpec, class_names, dataset_info, effective_method, make_spec, make_trainer,
                             run_in_memory, save_best, split_columns, test_metrics)

log = logging.getLogger("paric")
STATE = "state.pt"
MODEL = "model.pt"  # best-validation weights of a finished run (figures, MLflow artifact)
RESULT = "result.json"


def split_dataset(cfg: Config, root: Path, split: str, columns: list[str], with_mask: bool) -> ray.data.Dataset:
    """A split as a materialised Ray Dataset: map-store columns joined to decoded images (and masks)."""
    ensure_ray()  # connect (or start a local cluster) only when Ray is needed: cached reruns never start it
    ordered_data()
    store = cfg.output_path("maps", split)
    parts = [str(p) for _, p in sorted(list_parts(store).items())]
    if not parts:
        raise FileNotFoundError(f"{store}: no map-store parts; run the precompute stage first")
    ds = ray.data.read_parquet(parts).select_columns(["image_id", "label", "group", *columns])
    ds = ds.map_batches(ImageJoiner, fn_constructor_args=(str(root), split, cfg.classifier.image_size, with_mask),
                        batch_format="numpy", batch_size=256, compute=ActorPoolStrategy(size=1))
    return ds.drop_columns(["image_id"]).materialize()


def run_datasets(cfg: Config, root: Path, methods: list[str], test: bool = True) -> dict[str, ray.data.Dataset]:
    """train (with every column the ``methods`` need), val and test as materialised Ray Datasets,
    built once and shared by all the runs (and sweep trials) that read them."""
    needs = [split_columns(cfg, m) for m in methods]
    cols = sorted({col for columns, _ in needs for col in columns})
    need_mask = any(m for _, m in needs)
    out = {"train": split_dataset(cfg, root, "train", cols, need_mask),
           "val": split_dataset(cfg, root, "val", [], False)}
    if test:
        out["test"] = split_dataset(cfg, root, "test", [], dataset_info(root)[2])
    return out


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

    val_batches: list = []  # read once, kept: every new pass over a shard costs seconds of executor start-up

    def val_epoch():
        if not val_batches:
            val_batches.extend(val.iter_torch_batches(batch_size=256))
        return val_batches

    fit(trainer,
        lambda e: train_shard.iter_torch_batches(batch_size=bs, local_shuffle_buffer_size=4 * bs,
                                                 local_shuffle_seed=spec.seed * 10_000 + e),
        val_epoch, on_epoch)
    test = ray.train.get_dataset_shard("test") if config.get("test", True) else None
    result = test_metrics(trainer, test.iter_torch_batches(batch_size=128), spec.classes) \
        if rank == 0 and test is not None \
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


def train_columns(cfg: Config, method: str, references: list[str] | None = None) -> list[str]:
    """Columns of the joined train dataset that ``method`` reads (see :func:`split_columns`)."""
    cols, need_mask = split_columns(cfg, method, references)
    return sorted({"image", "label", "group", *cols, *(["mask"] if need_mask else [])})


def train_labels(cfg: Config, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(label, group) of the train rows ``method`` trains on (its ``train_groups`` view)."""
    labels = read_store(cfg.output_path("maps", "train"), columns=["label", "group"])
    keep = train_view(cfg.method(method).train_groups, labels.label, labels.group)
    return (labels.label, labels.group) if keep is None else (labels.label[keep], labels.group[keep])


def _keep_groups(batch: dict[str, np.ndarray], groups: list[int]) -> dict[str, np.ndarray]:
    keep = np.isin(batch["group"], groups)
    return {k: v[keep] for k, v in batch.items()}


def method_train_data(cfg: Config, datasets: dict[str, ray.data.Dataset], method: str,
                      references: list[str] | None = None) -> dict[str, ray.data.Dataset]:
    """The shared datasets with train reduced to ``method``'s columns and rows (``train_groups``)."""
    datasets = project_train(datasets, train_columns(cfg, method, references))
    if cfg.method(method).train_groups == "all":
        return datasets
    labels = read_store(cfg.output_path("maps", "train"), columns=["label", "group"])
    groups = majority_groups(labels.label, labels.group)
    train = datasets["train"].map_batches(_keep_groups, fn_kwargs={"groups": groups}, batch_format="numpy")
    return {**datasets, "train": train.materialize()}


def project_train(datasets: dict[str, ray.data.Dataset], columns: list[str]) -> dict[str, ray.data.Dataset]:
    """Keep ``columns`` of the shared train dataset, materialised now, unless it has exactly those.

    Why: a shared dataset may carry other methods' columns, and a lazy projection would run as
    CPU tasks inside the trainer's shards, where no CPU may be free. Inside a sweep trial even the
    eager one can wait for ever (the other trials' workers hold every CPU), so the sweep projects
    on its driver before any trial starts and trials find nothing left to do.
    """
    if sorted(datasets["train"].columns()) == sorted(columns):
        return datasets
    return {**datasets, "train": datasets["train"].select_columns(columns).materialize()}


def run_on_ray(cfg: Config, root: Path, method: str, seed: int, backbone: Path | None, out: Path,
               datasets: dict[str, ray.data.Dataset] | None = None, callbacks: list | None = None,
               model_path: Path | None = None, prepared: bool = False) -> dict:
    """Fit one method/seed with a ``TorchTrainer``; returns the test metrics of its best epoch.

    ``datasets`` (train/val[/test]) can be built once and shared (sweeps); without a ``test``
    dataset the run reports only validation metrics. ``callbacks``: Train callbacks, e.g. Tune's.
    ``prepared``: ``datasets`` are already the method's (:func:`method_train_data`, which a sweep
    runs on its driver before any trial holds a CPU).
    """
    t0 = time.time()
    n_classes, n_groups, _ = dataset_info(root)
    label, group = train_labels(cfg, method)
    workers = max(1, cfg.train.num_workers)  # a sweep trial runs on Ray Train even where final runs use the plain loop
    spec = make_spec(cfg, method, seed, label, group, n_classes, n_groups, backbone, workers, class_names(root))
    if datasets is None:
        datasets = run_datasets(cfg, root, [method])
    if not prepared:
        datasets = method_train_data(cfg, datasets, method)
    datasets = {name: without_progress(ds) for name, ds in datasets.items()}  # they run in the workers
    use_gpu = cfg.train.use_gpu if cfg.train.use_gpu is not None else cluster_gpus() > 0
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"spec": spec.to_dict(), "test": "test" in datasets},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name=out.name, storage_path=str(out.parent / "_ray"),
                             failure_config=FailureConfig(max_failures=cfg.train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1), callbacks=callbacks or None,
                             logging_config=LoggingConfig(log_level="WARNING")),  # the controller's INFO lines
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training {method} seed {seed} failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        metrics = json.loads((Path(d) / RESULT).read_text())
        if model_path is not None:
            state = torch.load(Path(d) / STATE, map_location="cpu", weights_only=False)
            save_best(state["best"]["state"], state["model"], model_path)
    metrics.update(method=method, seed=seed, seconds=round(time.time() - t0, 1))
    return metrics


@dataclass
class Tracking:
    """Where training runs are logged: an MLflow store, experiment and parent run."""

    uri: str
    experiment_id: str
    parent_id: str | None = None


def log_run(tracking: Tracking, name: str, params: dict, result: dict, result_file: Path) -> None:
    """One MLflow child run: the method's params, per-epoch metrics, test metrics, result.json and
    the best checkpoint (``model.pt`` beside it)."""
    with start_run(tracking.uri, tracking.experiment_id, name, tracking.parent_id, params) as rid:
        log_history(tracking.uri, rid, result.get("history", []))
        log_metrics(tracking.uri, rid, {f"test_{k}": v for k, v in result.items() if k != "history"})
        log_artifact(tracking.uri, rid, result_file)
        if (result_file.parent / MODEL).is_file():
            log_artifact(tracking.uri, rid, result_file.parent / MODEL)


#: the config keys a trained model depends on (besides its method and the map store); not the seed
#: list, the methods compared or how many runs go at once
TRAINING_KEYS = ("classifier", "train.epochs", "train.patience", "train.batch_size", "train.optimizer", "train.lr",
                 "train.head_lr", "train.momentum", "train.weight_decay", "train.warmup_epochs", "train.flip")


def upstream_key(cfg: Config) -> str:
    """What every trained run reads besides its config: the map store (which carries the data's and the
    VLM's content hashes) and the backbone it starts from."""
    return str(read_provenance(cfg.output_path("maps", "train")).get("hash", "")) + ":" + backbone_id(cfg)


def run_key(cfg: Config, method: str) -> str:
    """Cache key of a (method, seed) run: what its result depends on."""
    return cfg.section_hash(*TRAINING_KEYS, "eval") + ":" + json.dumps(cfg.method(method).model_dump(), sort_keys=True) \
        + ":" + upstream_key(cfg)


def cached_result(cfg: Config, method: str, seed: int) -> dict | None:
    """The stored result of a run for this config, or None (also when ``--force train``)."""
    out = cfg.output_path("train", method, f"seed{seed}")
    if forced("train") or not (is_done(out, run_key(cfg, method)) and (out / RESULT).is_file()
                               and (out / MODEL).is_file()):
        return None
    return json.loads((out / RESULT).read_text())


def fit_run(cfg: Config, root: Path, method: str, seed: int, backbone: Path | None,
            datasets: dict[str, ray.data.Dataset] | None = None) -> dict:
    """Train and test one run (plain loop or Ray Train), writing ``model.pt`` beside its result."""
    out = cfg.output_path("train", method, f"seed{seed}")
    if cfg.train.num_workers == 0:
        return run_in_memory(cfg, root, method, seed, backbone, out / MODEL)
    return run_on_ray(cfg, root, method, seed, backbone, out, datasets=datasets, model_path=out / MODEL)


def store_result(cfg: Config, method: str, seed: int, result: dict, tracking: Tracking | None) -> None:
    out = cfg.output_path("train", method, f"seed{seed}")
    write_json(out / RESULT, result)
    mark_done(out, run_key(cfg, method))
    if tracking is not None:
        log_run(tracking, f"{method} seed{seed}", {"method": method, "seed": seed, **cfg.method(method).model_dump()},
                result, out / RESULT)


def train_stage(cfg: Config, root: Path, method: str, seed: int, backbone: Path | None,
                tracking: Tracking | None = None,
                datasets: Callable[[], dict[str, ray.data.Dataset]] | None = None) -> dict:
    """Train/evaluate one method and seed unless its result for this config exists already.

    ``datasets``: a (memoised) provider of shared Ray Datasets, called only when a run is needed.
    """
    out = cfg.output_path("train", method, f"seed{seed}")
    with timed_stage(f"train {method} s{seed}", out) as info:
        result = cached_result(cfg, method, seed)
        if result is not None:
            info["skipped"] = True
            return result
        result = fit_run(cfg, root, method, seed, backbone,
                         datasets() if datasets and cfg.train.num_workers > 0 else None)
        store_result(cfg, method, seed, result, tracking)
    return result


@ray.remote(num_cpus=0)
def _remote_fit(cfg: dict, root: str, method: str, seed: int, backbone: str | None, datasets: dict) -> dict:
    """One run driven from a zero-CPU task, so several TorchTrainers run at once."""
    return fit_run(Config.model_validate(cfg), Path(root), method, seed, Path(backbone) if backbone else None,
                   datasets)


def _run_concurrently(cfg: Config, root: Path, todo: list[tuple[str, int]], backbone: Path | None,
                      tracking: Tracking | None, datasets: dict) -> dict[tuple[str, int], dict]:
    """Up to ``train.max_concurrent`` runs at once (each holds ``train.num_workers`` workers)."""
    done: dict[tuple[str, int], dict] = {}
    pending: dict = {}
    queue = list(todo)
    started: dict = {}
    while queue or pending:
        while queue and len(pending) < cfg.train.max_concurrent:
            m, s = queue.pop(0)
            # a plain-loop run (train.num_workers=0) holds its CPU itself; a TorchTrainer's workers hold theirs
            task = _remote_fit.options(num_cpus=1) if cfg.train.num_workers == 0 else _remote_fit
            ref = task.remote(cfg.model_dump(mode="json"), str(root), m, s, str(backbone) if backbone else None,
                              datasets)
            pending[ref], started[(m, s)] = (m, s), time.time()
        ready, _ = ray.wait(list(pending), num_returns=1)
        m, s = pending.pop(ready[0])
        result = ray.get(ready[0])  # a failed run raises here, naming its method and seed
        store_result(cfg, m, s, result, tracking)
        record_stage(f"train {m} s{s}", "done", time.time() - started[(m, s)], cfg.output_path("train", m, f"seed{s}"))
        done[(m, s)] = result
    return done


def training_twins(cfg: Config, root: Path, todo: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, int]]:
    """Runs in ``todo`` that would train exactly as an earlier one in it: {twin: the run it repeats}.

    Why: on a class-balanced train split ``upweight``'s weights are all 1, so its runs repeat
    vanilla's bit for bit; training them again costs a run each for nothing.
    """
    if len(todo) < 2:
        return {}
    n_classes, n_groups, _ = dataset_info(root)
    first: dict[str, tuple[str, int]] = {}
    twins: dict[tuple[str, int], tuple[str, int]] = {}
    for m, s in todo:
        method = effective_method(cfg, m, *train_labels(cfg, m), n_classes, n_groups)
        key = json.dumps([s, method.model_dump()], sort_keys=True)
        if key in first:
            twins[(m, s)] = first[key]
        else:
            first[key] = (m, s)
    return twins


def copy_twin(cfg: Config, method: str, seed: int, same_as: str, result: dict, tracking: Tracking | None) -> dict:
    """Store ``same_as``'s result and weights as this (method, seed) run, which trains identically."""
    out = cfg.output_path("train", method, f"seed{seed}")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg.output_path("train", same_as, f"seed{seed}", MODEL), out / MODEL)
    twin = {**result, "method": method, "same_training_as": same_as}
    store_result(cfg, method, seed, twin, tracking)
    record_stage(f"train {method} s{seed}", "done", 0.0, out)
    log.info("train %s s%d: trains exactly as %s s%d (balancing weights all 1); its result is reused", method, seed,
             same_as, seed)
    return twin


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


def mean_per_group(runs: list[dict]) -> list[float | None]:
    """Per-group test accuracy averaged over seeds (None where a group had no test images)."""
    rows = [r["per_group_acc"] for r in runs if r.get("per_group_acc")]
    if not rows:
        return []
    return [None if any(v is None for v in col) else float(np.mean(col)) for col in zip(*rows)]


TABLE_METRICS = ["worst_group_acc", "mean_group_acc", "acc", "balanced_acc", "ece", "nll", "fgsm_acc", "pgd_acc",
                 "cam_energy_in_mask", "worst_class_acc", "ratio_delta", "outcome_divergence", "best_epoch",
                 "epochs_trained", "seconds"]


def compare_stage(cfg: Config, root: Path, methods: list[str], seeds: list[int], backbone: Path | None,
                  tracking: Tracking | None = None,
                  datasets: Callable[[], dict[str, ray.data.Dataset]] | None = None,
                  adopt: Callable[[str, int], dict | None] | None = None) -> dict:
    """Every method × seed (each cached), summarised as mean ± std; written to ``train/summary.json``.

    With ``train.max_concurrent > 1`` (and Ray Train) the uncached runs run side by side.
    ``datasets``: a memoised provider of shared datasets (default: built here on the first uncached run).
    ``adopt``: gives an uncached run's stored result when one exists already (a sweep's best trial).
    """
    shared = datasets or functools.cache(lambda: run_datasets(cfg, root, methods))
    runs: dict[tuple[str, int], dict] = {}
    todo = []
    for m in methods:
        for s in seeds:
            out, t0 = cfg.output_path("train", m, f"seed{s}"), time.time()
            hit = cached_result(cfg, m, s)
            if hit is not None:
                record_stage(f"train {m} s{s}", "skipped (cached)", 0.0, out)
            elif adopt is not None and (hit := adopt(m, s)) is not None:
                record_stage(f"train {m} s{s}", "done", time.time() - t0, out)
            else:
                todo.append((m, s))
                continue
            runs[(m, s)] = hit
    twins = training_twins(cfg, root, todo)
    todo = [run for run in todo if run not in twins]
    if len(todo) > 1 and cfg.train.max_concurrent > 1:
        # the costliest runs first (double backprop ~3x, a counterfactual forward ~2x a plain step), so
        # no long run is left alone at the end
        todo.sort(key=lambda ms: -REGULARIZERS.get(cfg.method(ms[0]).regularizer).cost)
        ensure_ray()
        runs.update(_run_concurrently(cfg, root, todo, backbone, tracking,
                                      shared() if cfg.train.num_workers > 0 else {}))
    else:
        for m, s in todo:
            runs[(m, s)] = train_stage(cfg, root, m, s, backbone, tracking, shared)
    for (m, s), (m0, s0) in twins.items():
        runs[(m, s)] = copy_twin(cfg, m, s, m0, runs[(m0, s0)], tracking)
    results = {m: [runs[(m, s)] for s in seeds] for m in methods}
    summary = {"methods": summarise(results, TABLE_METRICS), "seeds": seeds,
               "per_group_acc": {m: mean_per_group(runs) for m, runs in results.items()},
               "methods_config": {m: cfg.method(m).model_dump() for m in methods}}
    write_json(cfg.output_path("train", "summary.json"), summary)
    return summary
