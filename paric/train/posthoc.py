"""Post-hoc methods: a method that trains nothing itself and starts from its ``base`` method's
trained model of the same seed (DFR retrains the last layer on group-balanced validation features).

Why a registry: the stages ask one question of such a method (run it on the base's model, key it
by its protocol's form, state how its model is chosen) instead of testing its name in each place.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pydantic import BaseModel

from paric.registry import NoOptions, Registry

if TYPE_CHECKING:
    from paric.config import Config, MethodConfig


@dataclass(frozen=True)
class PostHoc:
    """``run(cfg, root, method, seed, base_model, base_result, model_path)`` -> the run's result;
    ``form_version`` enters the run's cache key (a changed protocol refits); ``selection`` is how
    the methods table states its model choice; ``Options`` its own options
    (``MethodConfig.posthoc_options``), validated at config load time."""

    run: Callable[["Config", Path, str, int, Path, dict, Path | None], dict]
    form_version: int
    selection: str
    Options: type[BaseModel] = NoOptions

    def options_of(self, m: "MethodConfig") -> BaseModel:
        """The method's ``posthoc_options`` as this method's Options model."""
        return self.Options.model_validate(m.posthoc_options)


def _dfr(cfg: "Config", root: Path, method: str, seed: int, base_model: Path, base_result: dict,
         model_path: Path | None) -> dict:
    from paric.train.run import run_dfr

    return run_dfr(cfg, root, method, seed, base_model, base_result, model_path)


def _dfr_entry() -> PostHoc:
    from paric.train.dfr import FORM_VERSION, DfrOptions

    return PostHoc(_dfr, FORM_VERSION, "C by worst-group val", DfrOptions)


#: ``MethodConfig.posthoc`` -> the post-hoc method ('none': the method trains)
POSTHOC: Registry[PostHoc] = Registry("post-hoc method")
POSTHOC.add("dfr", _dfr_entry())
