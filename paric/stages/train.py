"""Stage: train + evaluate one method/seed on Ray Train, and the cache keys of a trained run.

Why this shape: each worker takes its shard of the shared Ray Datasets (:mod:`paric.stages.train_data`)
with ``get_dataset_shard`` and ``iter_torch_batches``, checkpoints every epoch with
``ray.train.report`` and resumes from ``get_checkpoint`` after a worker failure
(``FailureConfig``). The loop itself is :mod:`paric.train.loop`, identical without Ray; the methods
table over many runs is :mod:`paric.stages.compare`.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import ray
import torch

from paric.catalog import MAP_SOURCES
from paric.config import Config, MethodConfig
from paric.config.legacy import flat_view
from paric.io import write_json
from paric.layout import MODEL, RESULT
from paric.regularizers import REGULARIZERS
from paric.stages.classifier import backbone_id
from paric.stages.prepare import vlm_id
from paric.stages.train_data import method_train_data, run_datasets, train_labels
from paric.stages.cache import forced, is_done, mark_done, read_marker, timed_stage
from paric.stages.ray_env import cluster_gpus, without_progress
from paric.store import provenance_hash, read_provenance
from paric.tracking import log_artifact, log_history, log_metrics, mlflow_client, start_run, start_run_id
from paric.train.fit_log import epoch_line
from paric.train.data import iterate
from paric.train.loop import fit, selection_metric
from paric.train.posthoc import POSTHOC
from paric.train.run import (RunSpec, class_names, dataset_info, evaluate_saved, make_spec, make_trainer,
                             run_in_memory, save_best,
                             split_columns, test_metrics)

log = logging.getLogger("paric")
STATE = "state.pt"


@dataclass(frozen=True)
class Reporter:
    """Where a run reports its epochs and its end, each with a checkpoint: Ray Train's ``report`` in a
    Train worker, Tune's in a sweep trial that trains in its own actor (``train.num_workers=0``).
    Only a reporter that ``writes`` (rank 0) attaches files; the others report the metrics alone.
    The files are the same either way (``STATE``, and ``RESULT`` at the end), so
    :func:`paric.stages.sweep.finished_trial` reads either kind of trial."""

    report: Callable[..., None]
    checkpoint: type
    writes: bool = True

    def _send(self, metrics: dict, files: Callable[[Path], None]) -> None:
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if self.writes:
                files(Path(d))
                checkpoint = self.checkpoint.from_directory(d)
            self.report(metrics, checkpoint=checkpoint)

    def epoch(self, t: "object", metrics: dict) -> None:
        """One epoch's numbers (what ASHA compares) and the trainer's state to resume from."""
        self._send({k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                   lambda d: torch.save(t.state_dict(), d / STATE))

    def done(self, t: "object", result: dict) -> None:
        """The end: the best epoch's score and ``result`` (with the history) beside the final state."""
        def files(d: Path) -> None:
            torch.save(t.state_dict(), d / STATE)
            write_json(d / RESULT, {**result, "history": t.history, "resumed_at_epochs": t.resumed_at})

        self._send({"done": 1, selection_metric(t.method): t.best["score"], "epoch": t.epoch}, files)


def restore(trainer: "object", checkpoint: "object | None") -> None:
    """Resume ``trainer`` from a checkpoint its run reported (after a restart), if there is one."""
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_state_dict(torch.load(Path(d) / STATE, map_location="cpu", weights_only=False))


def _worker(config: dict) -> None:
    """Ray Train worker: same loop as the plain path; checkpoints each epoch; rank 0 tests the best epoch."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    spec = RunSpec(**config["spec"])
    cfg = spec.config()
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    wrap = ray.train.torch.prepare_model if ctx.get_world_size() > 1 else None
    trainer = make_trainer(spec, device, wrap)
    restore(trainer, ray.train.get_checkpoint())
    reporter = Reporter(ray.train.report, Checkpoint, writes=rank == 0)
    train_shard = ray.train.get_dataset_shard("train")
    val = ray.train.get_dataset_shard("val")
    bs = cfg.train.batch_size

    live = config.get("on_epoch")  # rank 0 logs each epoch as it ends (the final runs' live MLflow curves)

    def on_epoch(t, metrics: dict) -> None:
        log.info(epoch_line(spec.method, spec.seed, metrics))
        if rank == 0 and live is not None:
            live(metrics)
        reporter.epoch(t, metrics)

    val_batches: list = []  # read once, kept: every new pass over a shard costs seconds of executor start-up

    def val_epoch():
        if not val_batches:
            val_batches.extend(val.iter_torch_batches(batch_size=256))
        return val_batches

    sampling = trainer.method.sampling
    rows: dict = {}  # group-balanced draws need the whole shard: read once, kept (as val_batches)

    def train_epoch(e: int):
        if sampling == "uniform":
            return train_shard.iter_torch_batches(batch_size=bs, local_shuffle_buffer_size=4 * bs,
                                                  local_shuffle_seed=spec.seed * 10_000 + e)
        if not rows:
            parts = list(train_shard.iter_batches(batch_size=1024, batch_format="numpy"))
            rows.update({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        return iterate(rows, bs, True, spec.seed, e, sampling)

    fit(trainer, train_epoch, val_epoch, on_epoch)
    test = ray.train.get_dataset_shard("test") if config.get("test", True) else None
    result = test_metrics(trainer, test.iter_torch_batches(batch_size=128), spec.classes) \
        if rank == 0 and test is not None \
        else {"best_epoch": trainer.best["epoch"] + 1, selection_metric(trainer.method): trainer.best["score"]}
    reporter.done(trainer, result)  # Train V2 keeps metrics only with a checkpoint


def run_on_ray(cfg: Config, root: Path, method: str, seed: int, backbone: Path | None, out: Path,
               datasets: dict[str, ray.data.Dataset] | None = None, callbacks: list | None = None,
               model_path: Path | None = None, prepared: bool = False,
               on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Fit one method/seed with a ``TorchTrainer``; returns the test metrics of its best epoch.

    ``datasets`` (train/val[/test]) can be built once and shared (sweeps); without a ``test``
    dataset the run reports only validation metrics. ``callbacks``: Train callbacks, e.g. Tune's.
    ``prepared``: ``datasets`` are already the method's (:func:`method_train_data`, which a sweep
    runs on its driver before any trial holds a CPU).
    """
    # Ray Train here, not at import: the plain-loop workers that import this module never need it
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

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
        train_loop_config={"spec": spec.to_dict(), "test": "test" in datasets, "on_epoch": on_epoch},
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


def log_run(tracking: Tracking, name: str, params: dict, result: dict, result_file: Path,
            live_id: str | None = None) -> None:
    """One MLflow child run: the method's params, per-epoch metrics, test metrics, result.json and
    the best checkpoint (``model.pt`` beside it). ``live_id``: the run opened when training started
    (:func:`open_live_run`), whose per-epoch metrics are already logged; it is completed and ended here."""
    if live_id is not None:
        _complete(tracking.uri, live_id, result, result_file)
        mlflow_client(tracking.uri).set_terminated(live_id, "FINISHED")
        return
    with start_run(tracking.uri, tracking.experiment_id, name, tracking.parent_id, params) as rid:
        log_history(tracking.uri, rid, result.get("history", []))
        _complete(tracking.uri, rid, result, result_file)


def _complete(uri: str, rid: str, result: dict, result_file: Path) -> None:
    log_metrics(uri, rid, {f"test_{k}": v for k, v in result.items() if k != "history"})
    log_artifact(uri, rid, result_file)
    if (result_file.parent / MODEL).is_file():
        log_artifact(uri, rid, result_file.parent / MODEL)


def run_params(cfg: Config, method: str, seed: int) -> dict:
    return {"method": method, "seed": seed, **cfg.method(method).model_dump()}


def open_live_run(cfg: Config, method: str, seed: int, tracking: Tracking | None) -> str | None:
    """An MLflow child run opened as a final run starts, so its curves show while it trains (``RUNNING``
    until :func:`store_result` ends it; a killed invocation's are marked ``KILLED`` on the next one)."""
    if tracking is None:
        return None
    return start_run_id(tracking.uri, tracking.experiment_id, f"{method} seed{seed}", tracking.parent_id,
                        run_params(cfg, method, seed))


#: the config keys a trained model depends on (besides its method and the map store); not the seed
#: list, the methods compared or how many runs go at once
TRAINING_KEYS = ("classifier", "train.epochs", "train.patience", "train.batch_size", "train.optimizer", "train.lr",
                 "train.head_lr", "train.momentum", "train.weight_decay", "train.warmup_epochs", "train.flip",
                 "train.precision")  # keyed only when not fp32


def upstream_key(cfg: Config, columns: list[str]) -> str:
    """What a trained run reads besides its config: the map store's shared provenance (the data's and
    the VLM's content hashes), that of the sources whose ``columns`` it reads, and the backbone.

    Why not the store's whole hash: adding a source to ``maps.sources`` (LaZSL's map) would then
    retrain every run, vanilla included, though none of them reads the new column.
    """
    prov = read_provenance(cfg.layout.maps("train"))
    sources = prov.get("sources", {})
    read = {name: p for name, p in sources.items() if name in MAP_SOURCES
            and any(c.name in columns for c in MAP_SOURCES.get(name).columns)}
    body = {**{k: v for k, v in prov.items() if k not in ("hash", "sources")}, "sources": read}
    return provenance_hash(body) + ":" + backbone_id(cfg)


def method_key(m: MethodConfig) -> str:
    """A method's part of its runs' keys: the keys set away from their defaults. Why not every field:
    a new method option (with a default that trains as before) then leaves every earlier run cached.
    Why the flat form (:func:`paric.config.legacy.flat_view`): the plugins' options were flat method
    keys before issue 29 (``swap_loss``, ``dro_eta`` …), and every run keyed then stays cached."""
    return json.dumps(flat_view(m, keep_defaults=False), sort_keys=True)


def run_key(cfg: Config, method: str) -> str:
    """Cache key of a (method, seed) run: what its result depends on (and, for a regulariser with a
    text branch, the VLM it trains through)."""
    return _run_key(cfg, method, with_eval=True)


def fit_key(cfg: Config, method: str) -> str:
    """What a run's trained weights depend on: :func:`run_key` without the ``eval`` settings."""
    return _run_key(cfg, method, with_eval=False)


def _run_key(cfg: Config, method: str, with_eval: bool) -> str:
    m = cfg.method(method)
    text = ":" + vlm_id(cfg) if REGULARIZERS.get(m.regularizer).needs_text else ""
    base = ":" + _run_key(cfg, m.base, with_eval) if m.posthoc != "none" else ""  # a post-hoc method: its base too
    sections = (*TRAINING_KEYS, "eval") if with_eval else TRAINING_KEYS
    version = REGULARIZERS.get(m.regularizer).version
    form = f":{m.regularizer}-v{version}" if version else ""  # a regulariser whose form changed retrains
    if m.posthoc != "none":
        form += f":{m.posthoc}-v{POSTHOC.get(m.posthoc).form_version}"
    return cfg.section_hash(*sections) + ":" + method_key(m) \
        + ":" + upstream_key(cfg, split_columns(cfg, method)[0]) + text + base + form


def cached_result(cfg: Config, method: str, seed: int) -> dict | None:
    """The stored result of a run for this config, or None (also when ``--force train``)."""
    out = cfg.layout.run(method, seed)
    if forced("train") or not (is_done(out, run_key(cfg, method)) and (out / RESULT).is_file()
                               and (out / MODEL).is_file()):
        return None
    return json.loads((out / RESULT).read_text())


#: what a result keeps from its training when only the evaluation is redone (the rest is re-measured)
FIT_RESULT_KEYS = ("method", "seed", "seconds", "history", "best_epoch", "epochs_trained", "val_balanced_acc",
                   "val_score", "selection", "resumed_at_epochs", "from_sweep_trial", "same_training_as",
                   "jtt_errors", "jtt_error_minority_share", "jtt_minority_share", "dfr_c", "dfr_tune")


def reevaluated(cfg: Config, method: str, seed: int, tracking: Tracking | None = None) -> dict | None:
    """A stored run whose weights this config would train again but whose evaluation settings
    (``eval.*``) changed: its best-validation weights tested again and stored; None otherwise.

    Why: a new evaluation protocol (the insertion blur, PGD steps) needs seconds per run, not a
    retraining of every run. Runs stored before their marker carried the fit key train again.
    """
    out = cfg.layout.run(method, seed)
    marker = read_marker(out)
    if (forced("train") or marker is None or marker.get("fit") != fit_key(cfg, method)
            or not (out / RESULT).is_file() or not (out / MODEL).is_file()):
        return None
    old = json.loads((out / RESULT).read_text())
    t0 = time.time()
    state = torch.load(out / MODEL, map_location="cpu", weights_only=False)["model"]
    result = {k: old[k] for k in FIT_RESULT_KEYS if k in old}
    result.update(evaluate_saved(cfg, cfg.data_root(), state, old))
    result["reevaluated_seconds"] = round(time.time() - t0, 1)
    store_result(cfg, method, seed, result, tracking)
    log.info("train %s s%d: trained as before, evaluation settings changed: tested again in %.1fs", method, seed,
             result["reevaluated_seconds"])
    return result


def fit_run(cfg: Config, root: Path, method: str, seed: int, backbone: Path | None,
            datasets: dict[str, ray.data.Dataset] | None = None,
            on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train and test one run (plain loop or Ray Train), writing ``model.pt`` beside its result;
    ``on_epoch``: each epoch's metrics as it ends (live MLflow curves; on Ray Train, from rank 0)."""
    out = cfg.layout.run(method, seed)
    m = cfg.method(method)
    if m.posthoc != "none":  # no training: the base run's model (DFR: its last layer retrained, in this process)
        base = cfg.layout.run(m.base, seed)
        return POSTHOC.get(m.posthoc).run(cfg, root, method, seed, base / MODEL, json.loads((base / RESULT).read_text())
                                          if (base / RESULT).is_file() else {}, out / MODEL)
    if cfg.train.num_workers == 0:
        return run_in_memory(cfg, root, method, seed, backbone, out / MODEL, on_epoch)
    return run_on_ray(cfg, root, method, seed, backbone, out, datasets=datasets, model_path=out / MODEL,
                      on_epoch=on_epoch)


def store_result(cfg: Config, method: str, seed: int, result: dict, tracking: Tracking | None,
                 live_id: str | None = None) -> None:
    out = cfg.layout.run(method, seed)
    write_json(out / RESULT, result)
    mark_done(out, run_key(cfg, method), fit=fit_key(cfg, method))
    if tracking is not None:
        log_run(tracking, f"{method} seed{seed}", run_params(cfg, method, seed), result, out / RESULT, live_id)


def train_stage(cfg: Config, root: Path, method: str, seed: int, backbone: Path | None,
                tracking: Tracking | None = None,
                datasets: Callable[[], dict[str, ray.data.Dataset]] | None = None) -> dict:
    """Train/evaluate one method and seed unless its result for this config exists already.

    ``datasets``: a (memoised) provider of shared Ray Datasets, called only when a run is needed.
    """
    out = cfg.layout.run(method, seed)
    with timed_stage(f"train {method} s{seed}", out) as info:
        result = cached_result(cfg, method, seed)
        if result is not None:
            info["skipped"] = True
            return result
        result = reevaluated(cfg, method, seed, tracking)
        if result is not None:
            return result
        result = fit_run(cfg, root, method, seed, backbone,
                         datasets() if datasets and cfg.train.num_workers > 0 else None)
        store_result(cfg, method, seed, result, tracking)
    return result
