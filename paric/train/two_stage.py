"""Two-stage methods: a first training run whose model chooses the second run's training set (JTT
upsamples what the first run gets wrong); the second run is an ordinary run of the method.

Why a registry: the stages ask one question of such a method (its training set, from a first run)
instead of testing a key of it in each place; a new two-stage method is one entry here. Every one
runs in the plain loop (``train.num_workers=0``): the training set is rebuilt in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pydantic import BaseModel

from paric.registry import NoOptions, Registry

if TYPE_CHECKING:
    from paric.config import Config, MethodConfig

#: ``train_set(cfg, method, seed, train, val, n_classes, n_groups, backbone, root)`` -> (the second
#: run's training rows, what to report in its result)
TrainSet = Callable[["Config", str, int, dict, dict, int, int, "Path | None", Path], "tuple[dict, dict]"]


@dataclass(frozen=True)
class TwoStage:
    """A two-stage method: ``train_set`` runs its first stage; ``Options`` are its own options
    (``MethodConfig.two_stage_options``), validated at config load time."""

    train_set: TrainSet
    Options: type[BaseModel] = NoOptions

    def options_of(self, m: "MethodConfig") -> BaseModel:
        """The method's ``two_stage_options`` as this method's Options model."""
        return self.Options.model_validate(m.two_stage_options)


def _jtt(*args) -> tuple[dict, dict]:
    from paric.train.run import jtt_train_set

    return jtt_train_set(*args)


def _jtt_entry() -> TwoStage:
    from paric.train.jtt import JttOptions

    return TwoStage(_jtt, JttOptions)


#: ``MethodConfig.two_stage`` -> the two-stage method ('none': one training run)
TWO_STAGE: Registry[TwoStage] = Registry("two-stage method")
TWO_STAGE.add("jtt", _jtt_entry())
