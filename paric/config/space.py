"""A sweep's search space: one :class:`Dim` per swept key (a range or listed values), validated as
the schema's ``sweep.spaces.<method>``.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, RootModel, model_validator

from paric.config.base import _Section
from paric.config.legacy import modern_key

#: a sweep dimension's distribution: a range over [low, high], or listed values (``categorical``:
#: sampled; ``grid``: every value tried once, Optuna's GridSampler)
RANGES = ("log_uniform", "uniform", "int")
LISTS = ("categorical", "grid")


class Dim(_Section):
    """One sweep dimension of a method's space."""

    dist: Literal["log_uniform", "uniform", "int", "categorical", "grid"]
    low: float | None = None
    high: float | None = None
    choices: list[float | int | str | bool | None] | None = None

    @model_validator(mode="before")
    @classmethod
    def _ints_as_floats(cls, data: Any) -> Any:
        """``low: 4`` in YAML is an int; the bound is a number either way."""
        if isinstance(data, dict):
            data = {k: float(v) if k in ("low", "high") and isinstance(v, int) and not isinstance(v, bool) else v
                    for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _shape(self) -> "Dim":
        if self.dist in RANGES:
            if self.low is None or self.high is None or self.choices is not None:
                raise ValueError(f"dist {self.dist}: expected low and high (no choices)")
            if self.low > self.high:
                raise ValueError(f"dist {self.dist}: expected low ≤ high, got [{self.low}, {self.high}]")
            if self.dist == "log_uniform" and self.low <= 0:
                raise ValueError(f"dist log_uniform: needs low > 0, got {self.low}")
            if self.dist == "int" and not (self.low.is_integer() and self.high.is_integer()):
                raise ValueError(f"dist int: low and high must be whole numbers, got [{self.low}, {self.high}]")
        elif not self.choices or self.low is not None or self.high is not None:
            raise ValueError(f"dist {self.dist}: expected a non-empty list of choices (no low/high)")
        return self

    def values(self) -> list[Any]:
        """The values a trial may take: the bounds of a range, or the listed choices."""
        if self.dist == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high] if self.dist in RANGES else list(self.choices)


# The five dimensions of the first, fixed schema (``{weight: [lo, hi], k: [], grid: true, …}``):
# still read, as the dimensions they meant.
_LEGACY = {"weight": "log_uniform", "lr": "log_uniform", "k": "int", "reference": "categorical",
           "uncertainty": "categorical"}


def _flatten_dims(tree: dict, prefix: str = "") -> dict:
    """``{options: {w: {dist: …}}}`` as ``{"options.w": {dist: …}}``: a dotted override
    (``sweep.spaces.m.options.w=…``) and nested YAML reach the same dimension."""
    out: dict[str, Any] = {}
    for key, v in tree.items():
        if isinstance(v, dict) and "dist" not in v:
            out.update(_flatten_dims(v, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = v
    return out


class SearchSpace(RootModel[dict[str, Dim]]):
    """One method's sweep: ``{dotted.key: {dist, low, high | choices}}``.

    A key is a path into the method's config (``weight``, ``k``, ``reference``, ``options.w_mm``)
    or, starting with ``train.``, a training setting (``train.weight_decay``); each trial's values
    are set there and validated like any config value. A space with a ``grid`` dimension is a grid:
    every dimension then lists its values (``grid`` or ``categorical``), one trial per combination.
    """

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """The fixed schema's lists as dimensions: ``grid: true`` lists values; otherwise a
        range is [low, high] and reference / uncertainty are categorical; an empty list is absent.
        A method's old flat plugin key is its option's key (:func:`paric.config.legacy.modern_key`)."""
        if not isinstance(data, dict):
            return data
        data = {modern_key(k): v for k, v in _flatten_dims(data).items()}  # dro_eta: objective_options.eta
        if not ("grid" in data or any(isinstance(v, list) for v in data.values())):
            return data
        grid = data.pop("grid", False)
        if not isinstance(grid, bool):
            raise ValueError(f"grid: expected true or false, got {grid!r}")
        out: dict[str, Any] = {}
        for key, v in data.items():
            if not isinstance(v, list) or key not in _LEGACY:
                out[key] = v
            elif not v:
                continue
            elif grid:
                out[key] = {"dist": "grid", "choices": v}
            elif _LEGACY[key] == "categorical":
                out[key] = {"dist": "categorical", "choices": v}
            elif len(v) != 2:
                raise ValueError(f"{key}: expected [low, high] with low ≤ high (or grid: true to list values), "
                                 f"got {v}")
            else:
                out[key] = {"dist": _LEGACY[key], "low": v[0], "high": v[1]}
        return out

    @model_validator(mode="after")
    def _one_kind(self) -> "SearchSpace":
        if self.is_grid:
            sampled = [k for k, d in self.root.items() if d.dist not in LISTS]
            if sampled:
                raise ValueError(f"a grid space lists every dimension's values; {sampled} are ranges")
        return self

    @property
    def is_grid(self) -> bool:
        return any(d.dist == "grid" for d in self.root.values())

    def choices(self, key: str) -> list[Any]:
        """The values a listed dimension may take; [] when the space does not sweep ``key``."""
        d = self.root.get(key)
        return d.values() if d is not None else []

    def items(self):
        return self.root.items()

    def __contains__(self, key: object) -> bool:
        return key in self.root


#: training settings a sweep may not set (they choose what is trained, not how)
_UNSWEPT_TRAIN = {"method", "methods", "compare", "seeds"}
#: method keys that only matter when the reference reads the K stored samples
SAMPLE_KEYS = ("k", "uncertainty")


def space_target(method: str, key: str) -> str:
    """The full dotted config key a sweep dimension sets."""
    return key if key.split(".")[0] == "train" else f"train.methods.{method}.{key}"
