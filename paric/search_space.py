"""A method's sweep space as Optuna distributions, and a trial's values as a config.

Why here and not in the sweep stage: the same definition samples trials (Ray Tune + Optuna), lists
a grid's combinations and, after the sweep, feeds Optuna's importance / history plots; none of that
needs Ray. ``k`` is capped at the store's K, since trials only slice the stored samples.
"""
from __future__ import annotations

import functools
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from paric.config import Config, SearchSpace, space_target, with_value


def _capped(key: str, value: Any, K: int) -> Any:
    return min(value, K) if key == "k" else value


def distributions(space: SearchSpace, K: int) -> dict[str, BaseDistribution]:
    """``{dotted.key: distribution}`` of a space (listed dimensions are categorical)."""
    d: dict[str, BaseDistribution] = {}
    for key, dim in space.items():
        if dim.dist == "int":
            low, high = dim.values()
            d[key] = IntDistribution(low, _capped(key, high, K))
        elif dim.dist in ("log_uniform", "uniform"):
            d[key] = FloatDistribution(dim.low, dim.high, log=dim.dist == "log_uniform")
        else:
            d[key] = CategoricalDistribution(_unique([_capped(key, v, K) for v in dim.choices]))
    return d


def _unique(values: list) -> list:
    """Each value once, sorted where the values compare (a grid's order is then fixed)."""
    values = list(dict.fromkeys(values))
    try:
        return sorted(values)
    except TypeError:
        return values


def grid_values(space: SearchSpace, K: int) -> dict[str, list]:
    """A grid space's values per dimension: what Optuna's GridSampler enumerates."""
    return {key: list(dist.choices) for key, dist in distributions(space, K).items()}


SEED_KEY = "train_seed"  # a trial's training seed (``sweep.seeds``): not a method key, so not in the space


def _define(trial, dists: dict[str, BaseDistribution], seeds: tuple[int, ...] = ()) -> None:
    for name, dist in dists.items():
        if isinstance(dist, FloatDistribution):
            trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high)
        else:
            trial.suggest_categorical(name, list(dist.choices))
    if seeds:
        trial.suggest_categorical(SEED_KEY, list(seeds))


def define_by_run(space: SearchSpace, K: int, seeds: list[int] | None = None):
    """Optuna define-by-run space (with ``seeds``, the training seed as one more dimension); a partial
    of a module-level function, so Tune can checkpoint the searcher (and restore it after the driver
    is killed)."""
    return functools.partial(_define, dists=distributions(space, K), seeds=tuple(seeds or ()))


def sweep_grid(space: SearchSpace, K: int, seeds: list[int] | None = None) -> dict[str, list]:
    """What Optuna's GridSampler enumerates: every combination of the grid's values, each once per
    training seed in ``seeds``."""
    grid = grid_values(space, K)
    if seeds:
        grid[SEED_KEY] = list(seeds)
    return grid


def trial_seed(params: dict[str, Any], default: int) -> tuple[int, dict[str, Any]]:
    """(training seed, the values that set the config) of a trial's parameters."""
    rest = {k: v for k, v in params.items() if k != SEED_KEY}
    return int(params.get(SEED_KEY, default)), rest


def best_configuration(trials: list[dict], seeds: list[int]) -> dict:
    """The sweep's best configuration when each is trained with several seeds: trials grouped by
    their values without the seed, scored by the mean over their seeds (a configuration missing a
    seed, failed or not run, is ranked on the seeds it has, and says so).

    Why the mean: one seed's validation accuracy on a 600-image split moves by several points between
    seeds at the same λ, so the best of one seed is partly the best draw (issue 27: "averaged over at
    least two training seeds"). Returns {"best": values, "best_score", "scores": {"seed": score},
    "configs": [...] (every configuration, best first)}.
    """
    groups: dict[str, dict] = {}
    for t in trials:
        if t.get("error") is not None or t.get("score") is None:
            continue
        seed, values = trial_seed(t["params"], seeds[0] if seeds else 0)
        g = groups.setdefault(repr(sorted(values.items())), {"values": values, "scores": {}, "paths": {}})
        g["scores"][str(seed)] = float(t["score"])  # str keys: the same before and after JSON
        g["paths"][str(seed)] = t.get("path")
    if not groups:
        raise ValueError("no trial finished with a score")
    configs = sorted(({"params": g["values"], "score": sum(g["scores"].values()) / len(g["scores"]),
                       "scores": g["scores"], "paths": g["paths"],
                       "missing_seeds": [s for s in seeds if str(s) not in g["scores"]]} for g in groups.values()),
                     key=lambda c: -c["score"])
    return {"best": configs[0]["params"], "best_score": configs[0]["score"], "scores": configs[0]["scores"],
            "configs": configs}


def trial_config(base: Config, method: str, params: dict[str, Any]) -> Config:
    """The base config with a trial's values set: method keys on ``method``, ``train.*`` on training."""
    from paric.catalog import check  # the registries: only when a trial is configured

    cfg = base
    for key, value in params.items():
        cfg = with_value(cfg, space_target(method, key), value)
    return check(cfg, f"sweep trial of {method} with {params}")
