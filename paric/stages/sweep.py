"""Stage: Ray Tune + Optuna sweeps of a method's λ, sample count k, aggregation, uncertainty
weighting and learning rate; every trial a Ray Train run and an MLflow child run.

Why the shape: Tune runs a *function* trainable that builds and fits a ``TorchTrainer`` (Train V2
refuses ``Tuner(TorchTrainer)``); Train's reports reach Tune through ``TuneReportCallback`` so
ASHA can stop weak trials per epoch; the objective is class-balanced validation accuracy (no group
labels, as GALS selects); ``k`` only slices the stored samples, so no map is recomputed. The Ray
datasets are built once on the driver and shared by every trial.
"""
from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from paric.config import Config, SearchSpace
from paric.io import write_json
from paric.stages.cache import is_done, mark_done, timed_stage
from paric.stages.train import Tracking, run_on_ray, split_dataset
from paric.tracking import log_history, log_metrics, start_run

log = logging.getLogger("paric")
OBJECTIVE = "val_balanced_acc"


def _define(trial, space: SearchSpace, sampled: bool, K: int) -> None:
    if len(space.weight) == 2:
        trial.suggest_float("weight", space.weight[0], space.weight[1], log=True)
    if len(space.lr) == 2:
        trial.suggest_float("lr", space.lr[0], space.lr[1], log=True)
    if sampled and len(space.k) == 2:
        trial.suggest_int("k", space.k[0], min(space.k[1], K))
    if sampled and space.reference:
        trial.suggest_categorical("reference", list(space.reference))
    if sampled and space.uncertainty:
        trial.suggest_categorical("uncertainty", list(space.uncertainty))


def define_by_run(space: SearchSpace, sampled: bool, K: int):
    """Optuna define-by-run space of a method (``sampled``: its reference uses the K stored samples);
    a partial of a module-level function, so Tune can checkpoint the searcher."""
    return functools.partial(_define, space=space, sampled=sampled, K=K)


def trial_config(base: Config, method: str, params: dict) -> Config:
    """The base config with the trial's values set on the method."""
    m = base.method(method).model_copy(update=params)
    methods = {**base.train.methods, method: m}
    return base.model_copy(update={"train": base.train.model_copy(update={"methods": methods})})


def _trial(params: dict, base: dict, root: str, method: str, backbone: str | None, datasets: dict,
           tracking: dict | None) -> None:
    """One Tune trial: a Ray Train run of ``method`` with the trial's values (validation only)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = trial_config(Config.model_validate(base), method, params)
    out = Path(tune.get_context().get_trial_dir()) / "train"
    tr = Tracking(**tracking) if tracking else None
    with (start_run(tr.uri, tr.experiment_id, f"trial {method} {json.dumps(params, sort_keys=True)}", tr.parent_id,
                    {"method": method, **params}) if tr else _null()) as rid:
        result = run_on_ray(cfg, Path(root), method, cfg.run.seed, Path(backbone) if backbone else None, out,
                            datasets=datasets, callbacks=[TuneReportCallback()])
        if tr:
            log_history(tr.uri, rid, result.get("history", []))
            log_metrics(tr.uri, rid, {OBJECTIVE: result[OBJECTIVE]})


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def sweep_stage(cfg: Config, root: Path, method: str, backbone: Path | None, tracking: Tracking | None = None) -> dict:
    """Sweep one method; returns {"best": params, "best_score", "trials": [...]} (cached by config)."""
    if method not in cfg.sweep.spaces:
        raise ValueError(f"sweep.spaces has no search space for '{method}' ({sorted(cfg.sweep.spaces)})")
    out = cfg.output_path("sweep", method)
    key = cfg.section_hash("sweep", "train", "classifier", "run.seed")
    with timed_stage(f"sweep {method}", out) as info:
        if is_done(out, key) and (out / "best.json").is_file():
            info["skipped"] = True
            return json.loads((out / "best.json").read_text())
        m = cfg.method(method)
        sampled = m.reference in ("mean", "median")
        cols = ["map_samples"] if sampled else ["map_det"] if m.reference == "det" else []
        need_mask = m.reference == "oracle"
        datasets = {"train": split_dataset(cfg, root, "train", cols, need_mask),
                    "val": split_dataset(cfg, root, "val", [], False)}
        searcher = OptunaSearch(space=define_by_run(cfg.sweep.spaces[method], sampled, cfg.maps.K), metric=OBJECTIVE,
                                mode="max", seed=cfg.run.seed)
        scheduler = ASHAScheduler(metric=OBJECTIVE, mode="max", grace_period=cfg.sweep.grace_period,
                                  max_t=cfg.train.epochs + 1) if cfg.sweep.asha else None
        trainable = tune.with_parameters(
            _trial, base=cfg.model_dump(mode="json"), root=str(root), method=method,
            backbone=str(backbone) if backbone else None, datasets=datasets,
            tracking=tracking.__dict__ if tracking else None)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 0.1}),  # the trial only drives its TorchTrainer
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, cfg.sweep.max_concurrent),
                                        scheduler=scheduler, num_samples=cfg.sweep.num_samples),
            run_config=tune.RunConfig(name=method, storage_path=str(out / "_tune"),
                                      failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures)),
        )
        t0 = time.time()
        grid = tuner.fit()
        trials = []
        for r in grid:
            trials.append({"params": {k: v for k, v in (r.config or {}).items()},
                           "score": (r.metrics or {}).get(OBJECTIVE), "error": str(r.error) if r.error else None})
        ok = [t for t in trials if t["error"] is None and t["score"] is not None]
        if not ok:
            raise RuntimeError(f"sweep {method}: every trial failed; first error: {trials[0]['error'] if trials else '-'}")
        best = max(ok, key=lambda t: t["score"])
        summary = {"method": method, "best": best["params"], "best_score": best["score"], "trials": trials,
                   "failed": sum(t["error"] is not None for t in trials), "seconds": round(time.time() - t0, 1)}
        write_json(out / "best.json", summary)
        mark_done(out, key)
    return summary
