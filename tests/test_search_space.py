"""The generic sweep space: ``{dotted.key: {dist, low, high | choices}}`` over a method's keys, its
regulariser's options and training settings; the first fixed schema still reads the same."""
from __future__ import annotations

from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import BaseModel, ConfigDict, Field

from paric.catalog import load_config
from paric.config import ConfigError, SearchSpace
from paric.regularizers import REGULARIZERS
from paric.regularizers.base import NoRegularizer
from paric.search_space import SEED_KEY, best_configuration, distributions, grid_values, trial_config

CONF = Path(__file__).resolve().parents[1] / "conf" / "default.yaml"


def test_the_fixed_schema_reads_as_the_dimensions_it_meant():
    legacy = SearchSpace.model_validate({"weight": [0.1, 10.0], "k": [4, 32], "reference": ["mean", "median"],
                                         "uncertainty": [], "lr": []})
    generic = SearchSpace.model_validate({
        "weight": {"dist": "log_uniform", "low": 0.1, "high": 10.0}, "k": {"dist": "int", "low": 4, "high": 32},
        "reference": {"dist": "categorical", "choices": ["mean", "median"]}})
    assert legacy == generic
    grid = SearchSpace.model_validate({"grid": True, "weight": [0.3, 1.0, 3.0], "k": []})
    assert grid.is_grid and grid.choices("weight") == [0.3, 1.0, 3.0] and "k" not in grid


def test_nested_yaml_and_dotted_overrides_reach_the_same_dimension():
    a = SearchSpace.model_validate({"train": {"weight_decay": {"dist": "grid", "choices": [1e-4, 1e-3]}}})
    b = SearchSpace.model_validate({"train.weight_decay": {"dist": "grid", "choices": [1e-4, 1e-3]}})
    assert a == b and list(a.root) == ["train.weight_decay"]


def test_distributions_cap_k_at_the_stored_samples_and_grids_list_every_value():
    space = SearchSpace.model_validate({"weight": {"dist": "log_uniform", "low": 0.1, "high": 10},
                                        "k": {"dist": "int", "low": 4, "high": 64},
                                        "lr": {"dist": "uniform", "low": 0.01, "high": 0.02},
                                        "reference": {"dist": "categorical", "choices": ["median", "mean", "mean"]}})
    d = distributions(space, K=16)
    assert d["weight"] == FloatDistribution(0.1, 10.0, log=True) and d["lr"] == FloatDistribution(0.01, 0.02)
    assert d["k"] == IntDistribution(4, 16) and d["reference"] == CategoricalDistribution(["mean", "median"])
    grid = SearchSpace.model_validate({"weight": {"dist": "grid", "choices": [3.0, 0.3]},
                                       "k": {"dist": "grid", "choices": [8, 64]}})
    assert grid_values(grid, K=16) == {"weight": [0.3, 3.0], "k": [8, 16]}


class _Scaled(NoRegularizer):
    """A regulariser with an option of its own (registered for these tests only)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scale: float = Field(1.0, gt=0)


@pytest.fixture
def scaled():
    REGULARIZERS.add("test_scaled", _Scaled)
    yield "test_scaled"
    REGULARIZERS._entries.pop("test_scaled")


def test_a_trial_sets_options_and_training_keys_validated_where_they_live(scaled):
    cfg = load_config(CONF, [f"train.methods.mine={{regularizer: {scaled}, weight: 1.0, reference: det}}",
                             "sweep.spaces.mine.options.scale={dist: log_uniform, low: 0.5, high: 2}",
                             "sweep.spaces.mine.train.weight_decay={dist: log_uniform, low: 1.0e-5, high: 1.0e-3}"])
    trial = trial_config(cfg, "mine", {"options.scale": 1.5, "train.weight_decay": 1e-3, "weight": 2.0})
    assert trial.method("mine").options == {"scale": 1.5} and trial.method("mine").weight == 2.0
    assert trial.train.weight_decay == 1e-3
    assert cfg.method("mine").options == {"scale": 1.0} and cfg.train.weight_decay == 1e-4  # base unchanged
    with pytest.raises(Exception, match=r"scale.*greater than 0"):
        trial_config(cfg, "mine", {"options.scale": -1.0})


@pytest.mark.parametrize("overrides, message", [
    (["sweep.spaces.paric_mean.wieght={dist: grid, choices: [1.0]}"], r"wieght: .*no key 'wieght'"),
    (["sweep.spaces.paric_mean.train.seeds={dist: grid, choices: [1]}"], r"train.seeds: a sweep sets train"),
    (["sweep.spaces.gals.weight={dist: uniform, low: 0.1, high: 1}", "sweep.spaces.gals.k={dist: int, low: 1, high: 4}"],
     r"sweep.spaces.gals.k: method 'gals' uses reference \['det'\], which reads no stored samples"),
    (["sweep.spaces.paric_mean.lr={dist: uniform, low: 0.01, high: 0.1}"],
     r"a grid space lists every dimension's values; \['lr'\] are ranges"),
    (["sweep.spaces.paric_mean.dilate={dist: grid, choices: [1.5]}"], r"dilate: value 1.5 is not valid there"),
    (["sweep.spaces.paric_mean.weight={dist: log_uniform, low: 0, high: 1}"], r"log_uniform: needs low > 0"),
    (["sweep.spaces.paric_mean.weight={dist: categorical, low: 0.1, high: 1}"], r"expected a non-empty list of choices"),
])
def test_a_bad_dimension_fails_at_load_time_naming_it(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONF, overrides)


def test_a_grid_with_seeds_trains_each_configuration_once_per_seed():
    from paric.search_space import SEED_KEY, sweep_grid, trial_seed

    space = SearchSpace.model_validate({"weight": {"dist": "grid", "choices": [3.0, 0.3]}})
    assert sweep_grid(space, K=8) == {"weight": [0.3, 3.0]}
    grid = sweep_grid(space, K=8, seeds=[0, 1])
    assert grid == {"weight": [0.3, 3.0], SEED_KEY: [0, 1]}
    assert trial_seed({"weight": 0.3, SEED_KEY: 1}, default=7) == (1, {"weight": 0.3})
    assert trial_seed({"weight": 0.3}, default=7) == (7, {"weight": 0.3})
    # the seed is not a config key: setting the trial's values on a config leaves run.seed alone
    cfg = load_config(CONF)
    seed, values = trial_seed({"weight": 3.0, SEED_KEY: 1}, cfg.run.seed)
    assert trial_config(cfg, "gals", values).method("gals").weight == 3.0


def test_the_best_configuration_is_the_best_mean_over_seeds_not_the_best_single_trial():
    from paric.search_space import SEED_KEY, best_configuration

    def t(w, s, score, error=None):
        return {"params": {"weight": w, SEED_KEY: s}, "score": score, "error": error, "path": f"/t/{w}-{s}"}

    trials = [t(0.3, 0, 0.95), t(0.3, 1, 0.55),   # one lucky draw: mean 0.75
              t(1.0, 0, 0.80), t(1.0, 1, 0.78),   # mean 0.79: the best
              t(3.0, 0, 0.99, error="TrainingDiverged"), t(3.0, 1, 0.70)]
    best = best_configuration(trials, [0, 1])
    assert best["best"] == {"weight": 1.0} and best["best_score"] == pytest.approx(0.79)
    assert best["scores"] == {"0": 0.80, "1": 0.78}
    assert [c["params"]["weight"] for c in best["configs"]] == [1.0, 0.3, 3.0]
    failed = best["configs"][-1]
    assert failed["missing_seeds"] == [0] and failed["score"] == pytest.approx(0.70)
    assert best["configs"][0]["paths"]["0"] == "/t/1.0-0"
    # one seed: the best trial, as before seeds existed
    single = best_configuration([{"params": {"weight": w}, "score": sc, "error": None} for w, sc in
                                 ((0.3, 0.6), (1.0, 0.9))], [0])
    assert single["best"] == {"weight": 1.0} and single["best_score"] == 0.9
    with pytest.raises(ValueError, match="no trial"):
        best_configuration([t(1.0, 0, None)], [0, 1])


def test_seeds_need_a_grid_space_and_distinct_values():
    with pytest.raises(ConfigError, match="must be a grid"):
        load_config(CONF, ["sweep.methods=[gals]", "sweep.seeds=[0,1]",
                           "sweep.spaces.gals.weight={dist: log_uniform, low: 0.1, high: 10}"])
    with pytest.raises(ConfigError, match="each seed once"):
        load_config(CONF, ["sweep.seeds=[1,1]"])
    cfg = load_config(CONF, ["sweep.methods=[gals]", "sweep.seeds=[0,1]"])
    assert cfg.sweep.seeds == [0, 1]
    with pytest.raises(ValueError, match="sweep.spaces.lico must be a grid"):  # pipelines/sweep.py --methods lico
        cfg.check_sweep_seeds("lico")


def test_the_best_trial_of_each_swept_seed_can_stand_in_for_that_seeds_final_run():
    """A sweep over ``sweep.seeds`` trained the best configuration once per seed: each of those trials is
    that seed's final run (adopted), not only ``run.seed``'s; a seed the sweep did not train has none."""
    from paric.stages.sweep import best_trial_path

    trials = [{"params": {"weight": w, SEED_KEY: s}, "score": sc, "error": None, "path": f"/t/{w}-{s}"}
              for w, s, sc in [(1.0, 0, 0.9), (1.0, 1, 0.8), (3.0, 0, 0.95), (3.0, 1, 0.6)]]
    summary = {**best_configuration(trials, [0, 1]), "best_path": "/t/1.0-0"}
    assert summary["best"] == {"weight": 1.0}  # mean 0.85 beats 0.775
    assert [best_trial_path(summary, s, 0) for s in (0, 1, 2)] == ["/t/1.0-0", "/t/1.0-1", None]
    legacy = {"best": {"weight": 1.0}, "best_path": "/t/old"}  # a best.json from before configs were kept
    assert [best_trial_path(legacy, s, 0) for s in (0, 1)] == ["/t/old", None]
    assert best_trial_path(None, 0, 0) is None
