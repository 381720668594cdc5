"""Stage: Ray Tune + Optuna sweeps of a method's λ, sample count k, aggregation, uncertainty
weighting and learning rate; every trial an MLflow child run, trained as the final runs are.

Why the shape: with ``train.num_workers`` ≥ 1 Tune runs a *function* trainable that builds and fits a
``TorchTrainer`` (Train V2 refuses ``Tuner(TorchTrainer)``) and Train's reports reach Tune through
``TuneReportCallback``; with 0 (the local profiles) the trial trains in its own actor with the plain
loop and reports to Tune itself. Either way ASHA can stop weak trials per epoch; the objective is
class-balanced validation accuracy (no group labels, as GALS selects); ``k`` only slices the stored
samples, so no map is recomputed. Ray Train trials share Ray Datasets built once on the driver.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
import optuna
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from paric.config import R100, Config, TrainConfig
from paric.search_space import best_configuration, define_by_run, distributions, sweep_grid, trial_config, trial_seed
from paric.io import write_json
from paric.stages.cache import forced
from paric.stages.ray_env import ensure_ray
from paric.stages.runner import Stage, run_stage
from paric.stages.train import (RESULT, STATE, TRAINING_KEYS, Reporter, Tracking, method_key, restore, run_on_ray,
                                store_result, upstream_key)
from paric.stages.train_data import method_train_data, run_datasets
from paric.train.loop import completed, selection_metric
from paric.train.run import evaluate_saved, fit_plain, load_run_data, plain_trainer, save_best, split_columns
from paric.stages.sweep_snapshot import KeepSnapshot, install_kept_snapshot, snapshots_root
from paric.stages.trial_checkpoints import PruneCheckpoints, keep_last_checkpoints
from paric.stages.trial_runs import ACTIVE, TrialRuns

log = logging.getLogger("paric")


def _trial(params: dict, base: dict, root: str, method: str, backbone: str | None, datasets: dict) -> None:
    """One Tune trial as a Ray Train run of ``method`` with the trial's values (validation only):
    ``train.num_workers`` ≥ 1, each trial its own controller and worker group."""
    from ray.tune.integration.ray_train import TuneReportCallback

    base_cfg = Config.model_validate(base)
    seed, values = trial_seed(params, base_cfg.run.seed)
    cfg = trial_config(base_cfg, method, values)
    out = Path(tune.get_context().get_trial_dir()) / "train"
    # its MLflow run is written on the driver (paric.stages.trial_runs), which outlives the trial
    run_on_ray(cfg, Path(root), method, seed, Path(backbone) if backbone else None, out,
               datasets=datasets, callbacks=[TuneReportCallback()], prepared=True)


def _trial_in_actor(params: dict, base: dict, root: str, method: str, backbone: str | None) -> None:
    """One Tune trial trained in its own actor with the final runs' plain loop (``train.num_workers=0``).

    Why: a Ray Train trial starts a controller and a worker besides the trial actor, each a new
    process importing torch and paric (6-9 s on two busy cores), which cost more than a trial
    trains at the default's size. Here the trial is the same loop, data and epochs as the final
    run of its values and seed; each epoch is a Tune checkpoint (ASHA compares the reports; a
    restarted trial resumes from the last).
    """
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # a line per checkpoint
    base_cfg = Config.model_validate(base)
    seed, values = trial_seed(params, base_cfg.run.seed)
    cfg = trial_config(base_cfg, method, values)
    root_p, backbone_p = Path(root), Path(backbone) if backbone else None
    data = load_run_data(cfg, root_p, method, seed, backbone_p, test=False)
    trainer = plain_trainer(cfg, method, seed, backbone_p, data)
    restore(trainer, tune.get_checkpoint())
    reporter = Reporter(tune.report, tune.Checkpoint)
    fit_plain(trainer, data, reporter.epoch)
    reporter.done(trainer, {"best_epoch": trainer.best["epoch"] + 1, selection_metric(trainer.method): trainer.best["score"],
                            "first_stage": data.first_stage})  # JTT's error set, kept when the trial is adopted


def study_journal(exp_dir: Path) -> Path:
    """The sweep's Optuna study, persisted as a journal beside the Tune experiment (study name: the method):
    ``optuna-dashboard sweep/<method>/optuna.journal`` opens it while the sweep runs and after."""
    return exp_dir.parent.parent / "optuna.journal"  # exp_dir: sweep/<method>/_tune/<method>


def _tuner(cfg: Config, method: str, trainable, exp_dir: Path, key: str, fresh: bool) -> tune.Tuner:
    """A new Tuner, or the interrupted one restored from ``exp_dir`` (finished trials are kept,
    unfinished ones rerun, the Optuna searcher continues from its saved state)."""
    key_file = exp_dir.parent / "_tune_key.json"
    same = key_file.is_file() and json.loads(key_file.read_text()).get("key") == key
    if not fresh and same and tune.Tuner.can_restore(str(exp_dir)):
        step = install_kept_snapshot(exp_dir)  # whole and of one snapshot, where Tune's own may be cut off
        if step is not None:
            log.info("sweep %s: resuming the interrupted sweep in %s from its snapshot of step %d", method, exp_dir,
                     step)
            return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                      resume_errored=False, restart_errored=False)
        log.warning("sweep %s: the interrupted sweep in %s kept no snapshot; starting it again", method, exp_dir)
    for stale in (exp_dir, snapshots_root(exp_dir), exp_dir.parent / "superseded"):
        if stale.exists():
            shutil.rmtree(stale)
    journal = study_journal(exp_dir)
    journal.unlink(missing_ok=True)  # a fresh sweep: the study starts empty (a resumed one keeps its own)
    write_json(key_file, {"key": key})
    space = cfg.sweep.spaces[method]
    num_samples, sampler = cfg.sweep.num_samples, None
    seeds = cfg.sweep.seeds if len(cfg.sweep.seeds) > 1 else None  # one seed: run.seed's trials as before
    if space.is_grid:
        grid = sweep_grid(space, cfg.maps.K, seeds)
        sampler = optuna.samplers.GridSampler(grid, seed=cfg.run.seed)
        num_samples = math.prod(len(v) for v in grid.values())  # each combination (and seed) once
    objective = selection_metric(cfg.method(method))  # class-balanced, or worst-group for group-label methods
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    searcher = OptunaSearch(space=define_by_run(space, cfg.maps.K, seeds), metric=objective, mode="max",
                            study_name=method, storage=storage,
                            **({"sampler": sampler} if sampler else {"seed": cfg.run.seed}))
    scheduler = ASHAScheduler(metric=objective, mode="max", grace_period=cfg.sweep.grace_period,
                              reduction_factor=cfg.sweep.reduction_factor,
                              max_t=cfg.train.epochs + 1) if cfg.sweep.asha else None
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, cfg.sweep.max_concurrent),
                                    scheduler=scheduler, num_samples=num_samples,
                                    # a trial in its actor: the next trial reuses the process and its imports
                                    reuse_actors=cfg.train.num_workers == 0),
        run_config=tune.RunConfig(name=exp_dir.name, storage_path=str(exp_dir.parent),
                                  failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures),
                                  # no num_to_keep: PruneCheckpoints deletes only what no resume can need
                                  callbacks=[TrialRuns(str(exp_dir), method), KeepSnapshot(str(exp_dir)),
                                             PruneCheckpoints(str(exp_dir))],
                                  verbose=0),
    )


def _remove_leaked_groups(before: set[str]) -> None:
    """Remove placement groups the finished sweep left reserved. Train V2 can keep a trial's worker
    group bundle after the trial ends (seen for failed trials, e.g. ``TrainingDiverged``, and, on
    2026-11-23, for one finished trial of the default sweep), which would starve every later run."""
    from ray.util.placement_group import PlacementGroup, remove_placement_group
    from ray._raylet import PlacementGroupID

    for pg_id, info in ray.util.placement_group_table().items():
        if pg_id not in before and info.get("state") == "CREATED":
            log.warning("sweep: removing placement group %s that a trial left reserved", pg_id)
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_id))))


def sweep_key(cfg: Config, method: str) -> str:
    """Cache key of one method's sweep: its space, the sweep's settings, the method's base config, what
    training depends on, the seed and the map store. Not ``train.seeds`` / ``train.compare`` or the
    other methods' spaces, which change the final runs but not this sweep's trials."""
    return sweep_spec(cfg, method).key(cfg)


def sweep_spec(cfg: Config, method: str) -> Stage:
    """The sweep stage of one method (its key: :func:`sweep_key`)."""
    settings = cfg.sweep.model_dump(mode="json", exclude={"methods", "spaces"})
    blob = {"settings": settings, "space": cfg.sweep.space_key_form(method, cfg.train.methods),
            "method": method_key(cfg.method(method)), "workers": cfg.train.num_workers}  # 0: trials in the plain loop
    digest = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]
    return Stage(f"sweep {method}", cfg.layout.sweep(method), (*TRAINING_KEYS, "run.seed"),
                 (digest, upstream_key(cfg, sweep_columns(cfg, method))), outputs=("best.json",))


def sweep_columns(cfg: Config, method: str) -> list[str]:
    """The map-store columns any of the method's trials reads (its space may choose the reference)."""
    return split_columns(cfg, method, cfg.sweep.spaces[method].choices("reference") or None)[0]


def _trainable(cfg: Config, root: Path, method: str, backbone: Path | None,
               datasets: Callable[[], dict[str, ray.data.Dataset]] | None) -> object:
    """The Tune trainable of ``method``'s trials with what they hold: with ``train.num_workers=0`` the
    trial trains in its actor on one CPU (the plain loop, as the final runs) and reads the splits
    itself; otherwise it drives a TorchTrainer whose workers hold the CPUs (or GPUs), on Ray Datasets
    built once here and shared by every trial."""
    common = dict(base=cfg.model_dump(mode="json"), root=str(root), method=method,
                  backbone=str(backbone) if backbone else None)
    if cfg.train.num_workers == 0:
        return tune.with_resources(tune.with_parameters(_trial_in_actor, **common), {"cpu": 1})
    data = datasets() if datasets else run_datasets(cfg, root, [method], test=False)
    data = {k: v for k, v in data.items() if k in ("train", "val")}  # trials select on validation only
    data = method_train_data(cfg, data, method, cfg.sweep.spaces[method].choices("reference") or None)
    return tune.with_resources(tune.with_parameters(_trial, datasets=data, **common),
                               {"cpu": 0, "memory": 1})  # a trial only drives its TorchTrainer


def sweep_stage(cfg: Config, root: Path, method: str, backbone: Path | None, tracking: Tracking | None = None,
                datasets: Callable[[], dict[str, ray.data.Dataset]] | None = None) -> dict:
    """Sweep one method; returns {"best": params, "best_score", "trials": [...]} (cached by config).

    Trials read the map store only (``k`` slices the stored samples); a crashed trial is recorded
    with its error and the sweep goes on; an interrupted sweep resumes where it stopped.
    """
    if method not in cfg.sweep.spaces:
        raise ValueError(f"sweep.spaces has no search space for '{method}' ({sorted(cfg.sweep.spaces)})")
    spec = sweep_spec(cfg, method)
    out = spec.marker_dir

    def run() -> None:
        ensure_ray()  # before with_parameters' ray.put, which would otherwise join whatever the address file names
        trainable = _trainable(cfg, root, method, backbone, datasets)
        t0 = time.time()
        groups_before = set(ray.util.placement_group_table())
        exp_dir = out / "_tune" / method
        if tracking is not None:
            ACTIVE[str(exp_dir)] = tracking  # the trial runs' parent: this invocation's run
        try:
            grid = _tuner(cfg, method, trainable, exp_dir, spec.key(cfg), fresh=forced(spec.name)).fit()
        finally:
            ACTIVE.pop(str(exp_dir), None)
        _remove_leaked_groups(groups_before)
        keep_last_checkpoints(exp_dir)
        trials = []
        objective = selection_metric(cfg.method(method))
        for r in grid:
            trials.append({"params": dict(r.config or {}), "score": (r.metrics or {}).get(objective),
                           "error": str(r.error).strip().splitlines()[-1][:500] if r.error else None,
                           "path": r.path})
        ok = [t for t in trials if t["error"] is None and t["score"] is not None]
        if not ok:
            raise RuntimeError(f"sweep {method}: every trial failed; first error: {trials[0]['error'] if trials else '-'}")
        seeds = cfg.sweep.seeds if len(cfg.sweep.seeds) > 1 else [cfg.run.seed]
        best = best_configuration(ok, seeds)
        summary = {"method": method, "best": best["best"], "best_score": best["best_score"],
                   "best_path": best["configs"][0]["paths"].get(str(cfg.run.seed)),  # the trial that can be a final run
                   "seeds": seeds, "best_scores": best["scores"], "configs": best["configs"], "trials": trials,
                   "failed": sum(t["error"] is not None for t in trials), "seconds": round(time.time() - t0, 1),
                   "space": {k: repr(v) for k, v in distributions(cfg.sweep.spaces[method], cfg.maps.K).items()}}
        for t in trials:
            if t["error"]:
                log.warning("sweep %s: trial %s failed: %s", method, t["params"], t["error"])
        write_json(out / "best.json", summary)

    return run_stage(cfg, spec, run, lambda: json.loads((out / "best.json").read_text()))


def finished_trial(path: str | Path, train_cfg: TrainConfig) -> tuple[dict, dict] | None:
    """(result, best-validation weights) of a trial that finished (all ``train.epochs``, or stopped by
    ``train.patience``), read from its last Train checkpoint; None for a trial ASHA stopped, one
    that failed, or one not on this disk."""
    ckpts = (sorted(Path(path).glob("checkpoint_*/" + RESULT))  # a trial that trained in its actor
             or sorted(Path(path).glob("_ray/train/checkpoint_*/" + RESULT)))  # one that ran Ray Train
    if not ckpts:
        return None
    result = json.loads(ckpts[-1].read_text())
    if not completed(result.get("history", []), train_cfg):
        return None
    tune_rows = (Path(path) / "result.json").read_text().splitlines() if (Path(path) / "result.json").is_file() else []
    result["seconds"] = json.loads(tune_rows[-1]).get("time_total_s", 0.0) if tune_rows else 0.0
    state = torch.load(ckpts[-1].parent / STATE, map_location="cpu", weights_only=False)
    return result, state["best"]["state"] if state["best"]["state"] is not None else state["model"]


def best_trial_path(summary: dict | None, seed: int, run_seed: int) -> str | None:
    """The directory of the best configuration's trial trained with ``seed``, if the sweep trained one
    (each of ``sweep.seeds``, or ``run.seed`` alone); a summary without ``configs`` (an older sweep)
    has only ``run.seed``'s, in ``best_path``."""
    if not summary:
        return None
    if summary.get("configs"):
        return summary["configs"][0].get("paths", {}).get(str(seed))
    return summary.get("best_path") if seed == run_seed else None


def adopt_best_trial(final: Config, root: Path, method: str, seed: int, summary: dict | None,
                     tracking: Tracking | None) -> dict | None:
    """The sweep's best trial of ``seed`` as the ``seed`` final run of ``method``, tested and stored now;
    None when there is none that can stand in for that run.

    Why: that trial *is* the final run (the best values, the same seed, data, epochs and loop), so
    training it again costs a regularised run for nothing. It stands in for each seed the best
    configuration was trained with (``sweep.seeds``; else ``run.seed``), when it trained every epoch
    (not stopped by ASHA) and ``--force train`` does not ask for retraining.
    """
    path = best_trial_path(summary, seed, final.run.seed)
    if path is None or forced("train") or (found := finished_trial(path, final.train)) is None:
        return None
    t0 = time.time()
    fit, best_state = found
    result = evaluate_saved(final, root, best_state, fit)
    result.update(method=method, seed=seed, seconds=round(fit["seconds"] + time.time() - t0, 1),
                  from_sweep_trial=str(path))
    save_best(best_state, best_state, final.layout.model(method, seed))
    store_result(final, method, seed, result, tracking)
    log.info("train %s s%d: the best sweep trial of this seed is this run (%s); tested it in %.1fs", method, seed,
             path, time.time() - t0)
    return result


def apply_best(cfg: Config, best: dict[str, dict]) -> Config:
    """The config with each swept method's best trial values set (the final runs' config).

    ``<m>_r100`` (the same method on the majority groups only) takes ``<m>``'s values unless it
    was swept itself: the values are chosen once, on the full train split's validation accuracy.
    """
    for method, summary in best.items():
        cfg = trial_config(cfg, method, summary["best"])
        if method + R100 in cfg.train.methods and method + R100 not in best:
            cfg = trial_config(cfg, method + R100, summary["best"])
    return cfg
