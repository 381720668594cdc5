"""Stage: the methods table. Every (method, seed) run, at most ``train.max_concurrent`` at once on
Ray Train; runs whose training would be identical share one fit; mean ± std per method.
"""
from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import ray

from paric.config import Config, MethodConfig
from paric.eval.stats import mean_ci, paired_differences
from paric.io import write_json
from paric.regularizers import REGULARIZERS
from paric.report.table import GROUP_ORDER
from paric.stages.cache import record_stage
from paric.stages.ray_env import ensure_ray
from paric.stages.train import (MODEL, Tracking, cached_result, fit_run, open_live_run, reevaluated, store_result,
                                train_stage)
from paric.tracking import log_epoch, mlflow_client
from paric.stages.train_data import run_datasets, train_labels
from paric.store import read_store
from paric.train.objectives import group_labels, selects_on_groups
from paric.train.posthoc import POSTHOC
from paric.train.run import dataset_info, effective_method

log = logging.getLogger("paric")


@ray.remote(num_cpus=0)
def _remote_fit(cfg: dict, root: str, method: str, seed: int, backbone: str | None, datasets: dict,
                live: tuple[str, str] | None = None) -> dict:
    """One run driven from a zero-CPU task, so several TorchTrainers run at once; ``live``: (MLflow
    store, run id) that receives each epoch's metrics as it ends."""
    return fit_run(Config.model_validate(cfg), Path(root), method, seed, Path(backbone) if backbone else None,
                   datasets, functools.partial(log_epoch, *live) if live else None)


def _run_concurrently(cfg: Config, root: Path, todo: list[tuple[str, int]], backbone: Path | None,
                      tracking: Tracking | None, datasets: dict) -> dict[tuple[str, int], dict]:
    """Up to ``train.max_concurrent`` runs at once (each holds ``train.num_workers`` workers)."""
    done: dict[tuple[str, int], dict] = {}
    pending: dict = {}
    queue = list(todo)
    started: dict = {}
    live: dict[tuple[str, int], str | None] = {}  # the MLflow run of each started run, open while it trains
    while queue or pending:
        while queue and len(pending) < cfg.train.max_concurrent:
            m, s = queue.pop(0)
            # a plain-loop run (train.num_workers=0) holds its CPU itself; a TorchTrainer's workers hold theirs
            task = _remote_fit.options(num_cpus=1) if cfg.train.num_workers == 0 else _remote_fit
            live[(m, s)] = open_live_run(cfg, m, s, tracking)
            ref = task.remote(cfg.model_dump(mode="json"), str(root), m, s, str(backbone) if backbone else None,
                              datasets, (tracking.uri, live[(m, s)]) if tracking is not None else None)
            pending[ref], started[(m, s)] = (m, s), time.time()
        ready, _ = ray.wait(list(pending), num_returns=1)
        m, s = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])  # a failed run raises here, naming its method and seed
        except Exception:
            if live.get((m, s)):
                mlflow_client(tracking.uri).set_terminated(live[(m, s)], "FAILED")  # type: ignore[union-attr]
            raise
        store_result(cfg, m, s, result, tracking, live.get((m, s)))
        record_stage(f"train {m} s{s}", "done", time.time() - started[(m, s)], cfg.layout.run(m, s))
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
    out = cfg.layout.run(method, seed)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg.layout.model(same_as, seed), out / MODEL)
    twin = {**result, "method": method, "same_training_as": same_as}
    store_result(cfg, method, seed, twin, tracking)
    record_stage(f"train {method} s{seed}", "done", 0.0, out)
    log.info("train %s s%d: trains exactly as %s s%d (balancing weights all 1); its result is reused", method, seed,
             same_as, seed)
    return twin


#: metrics whose entries carry a 95 % CI over seeds (the headline ones; the rest keep mean ± std)
CI_METRICS = ("worst_group_acc", "mean_group_acc", "acc", "ece")


def summarise(results: dict[str, list[dict]], metrics: list[str], seeds: list[int] | None = None) -> dict:
    """{method: {metric: {mean, std, runs, seeds}}} over seeds (the results.json contract); the
    ``CI_METRICS`` also get ``ci`` (:func:`paric.eval.stats.mean_ci`)."""
    out: dict = {}
    for method, runs in results.items():
        out[method] = {}
        run_seeds = seeds if seeds is not None else list(range(len(runs)))
        for m in metrics:
            kept = [(s, r[m]) for s, r in zip(run_seeds, runs) if r.get(m) is not None]
            if kept:
                vals = [v for _, v in kept]
                out[method][m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "runs": vals,
                                  "seeds": [s for s, _ in kept]}
                if m in CI_METRICS:
                    out[method][m]["ci"] = mean_ci(vals)
    return out


def mean_per_group(runs: list[dict]) -> list[float | None]:
    """Per-group test accuracy averaged over seeds (None where a group had no test images)."""
    rows = [r["per_group_acc"] for r in runs if r.get("per_group_acc")]
    if not rows:
        return []
    return [None if any(v is None for v in col) else float(np.mean(col)) for col in zip(*rows)]


def selection_rule(m: MethodConfig) -> str:
    """How the method's reported model is chosen, as the table states it."""
    if m.posthoc != "none":
        return POSTHOC.get(m.posthoc).selection
    return "worst-group val" if selects_on_groups(m) else "class-balanced val"


def train_proportions(cfg: Config) -> np.ndarray:
    """Each group's share of the (whole) train split: the weights of DFR / JTT / Group DRO's average accuracy."""
    groups = read_store(cfg.layout.maps("train"), columns=["group"]).group
    counts = np.bincount(groups)
    return counts / counts.sum()


def weighted_accuracy(result: dict, proportions: np.ndarray) -> float | None:
    """Test accuracy per group weighted by the train split's group proportions (the "average accuracy"
    of the group-robustness papers; GALS' mean-of-groups is the unweighted mean)."""
    acc = result.get("per_group_acc")
    if not acc or len(acc) < len(proportions):
        return None
    pairs = [(p, a) for p, a in zip(proportions, acc) if a is not None and p > 0]
    return float(sum(p * a for p, a in pairs) / sum(p for p, _ in pairs)) if pairs else None


TABLE_METRICS = ["weighted_acc", "worst_group_acc", "mean_group_acc", "acc", "balanced_acc", "ece", "nll", "fgsm_acc",
                 "pgd_acc", "cam_energy_in_mask", "insertion_auc", "deletion_auc", "faithfulness", "worst_class_acc",
                 "ratio_delta", "outcome_divergence", "best_epoch",
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
            out, t0 = cfg.layout.run(m, s), time.time()
            hit = cached_result(cfg, m, s)
            if hit is not None:
                record_stage(f"train {m} s{s}", "skipped (cached)", 0.0, out)
            elif (hit := reevaluated(cfg, m, s, tracking)) is not None:
                record_stage(f"train {m} s{s}", "re-evaluated", time.time() - t0, out)
            elif adopt is not None and (hit := adopt(m, s)) is not None:
                record_stage(f"train {m} s{s}", "done", time.time() - t0, out)
            else:
                todo.append((m, s))
                continue
            runs[(m, s)] = hit
    posthoc = [run for run in todo if cfg.method(run[0]).posthoc != "none"]  # after their base runs, below
    todo = [run for run in todo if run not in posthoc]
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
    for m, s in posthoc:  # DFR: seconds each, on the base run's saved model
        runs[(m, s)] = train_stage(cfg, root, m, s, backbone, tracking)
    # the group-label column's order (none, validation, training), the given order within each
    methods = sorted(methods, key=lambda m: GROUP_ORDER.index(group_labels(cfg.method(m))))
    proportions = train_proportions(cfg)
    results = {m: [{**runs[(m, s)], "weighted_acc": weighted_accuracy(runs[(m, s)], proportions)} for s in seeds]
               for m in methods}
    table = summarise(results, TABLE_METRICS, seeds)
    for m in methods:  # what a fair comparison needs to know beside the numbers
        table[m]["group_labels"] = group_labels(cfg.method(m))
        table[m]["selection"] = selection_rule(cfg.method(m))
    summary = {"methods": table, "seeds": seeds,
               "paired": paired_differences(table, cfg.report.before, cfg.report.differences),
               "per_group_acc": {m: mean_per_group(runs) for m, runs in results.items()},
               "methods_config": {m: cfg.method(m).model_dump() for m in methods}}
    write_json(cfg.layout.train() / "summary.json", summary)
    return summary
