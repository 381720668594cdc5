"""Post-hoc methods: a method that trains nothing itself and starts from its ``base`` method's
trained model of the same seed (DFR retrains the last layer on group-balanced validation features).

Why a registry: the stages ask one question of such a method (run it on the base's model, key it
by its protocol's form, state how its model is chosen) instead of testing its name in each place.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from paric.registry import Registry

if TYPE_CHECKING:
    from paric.config import Config


@dataclass(frozen=True)
class PostHoc:
    """``run(cfg, root, method, seed, base_model, base_result, model_path)`` -> the run's result;
    ``form_version`` enters the run's cache key (a changed protocol refits); ``selection`` is how
    the methods table states its model choice."""

    run: Callable[["Config", Path, str, int, Path, dict, Path | None], dict]
    form_version: int
    selection: str


def _dfr(cfg: "Config", root: Path, method: str, seed: int, base_model: Path, base_result: dict,
         model_path: Path | None) -> dict:
    from paric.train.run import run_dfr

    return run_dfr(cfg, root, method, seed, base_model, base_result, model_path)


def _dfr_form() -> int:
    from paric.train.dfr import FORM_VERSION

    return FORM_VERSION


#: ``MethodConfig.posthoc`` -> the post-hoc method ('none': the method trains)
POSTHOC: Registry[PostHoc] = Registry("post-hoc method")
POSTHOC.add("dfr", PostHoc(_dfr, _dfr_form(), "C by worst-group val"))
