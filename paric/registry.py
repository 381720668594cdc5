"""A small named registry: the seam through which a new regulariser, dataset format or map source
joins the pipeline (one module that registers itself, no if/elif chain on names elsewhere).

    REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")

    @REGULARIZERS.register("mine")
    class Mine(Regularizer): ...

Lookups of an unknown name fail with the registry's kind and the known names, so a typo in a
config names what was expected.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class PluginOptions(BaseModel):
    """Base of a plugin's own options (``train.methods.<m>.options``, ``objective_options`` …): unknown
    keys and silent type coercion are errors, as in the config's sections."""

    model_config = ConfigDict(extra="forbid", strict=True)


class NoOptions(PluginOptions):
    """A plugin without options of its own: any key in its options is an error."""


class Registry(Generic[T]):
    """name -> entry, in registration order; reads like a ``dict`` (``in``, iteration, ``[name]``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a second entry of the same name is a mistake."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    __getitem__ = get

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
