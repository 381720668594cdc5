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


def _define(trial, dists: dict[str, BaseDistribution]) -> None:
    for name, dist in dists.items():
        if isinstance(dist, FloatDistribution):
            trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high)
        else:
            trial.suggest_categorical(name, list(dist.choices))


def define_by_run(space: SearchSpace, K: int):
    """Optuna define-by-run space; a partial of a module-level function, so Tune can checkpoint
    the searcher (and restore it after the driver is killed)."""
    return functools.partial(_define, dists=distributions(space, K))


def trial_config(base: Config, method: str, params: dict[str, Any]) -> Config:
    """The base config with a trial's values set: method keys on ``method``, ``train.*`` on training."""
    cfg = base
    for key, value in params.items():
        cfg = with_value(cfg, space_target(method, key), value)
    return cfg
