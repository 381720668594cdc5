"""The schema's base: the section base class, the config error, and what the schema asks of the
registries (a :class:`NameCheck`, answered by :mod:`paric.catalog`) without importing any of them.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, ValidationInfo

if TYPE_CHECKING:
    from paric.config.schema import MethodConfig


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the source and the key."""


#: each plugin seam a method names: its selecting field -> the field holding that plugin's own options
#: (validated by the plugin's ``Options`` model through the :class:`NameCheck`; "none" takes no options)
OPTION_SLOTS: dict[str, str] = {"regularizer": "options", "objective": "objective_options",
                                "posthoc": "posthoc_options", "two_stage": "two_stage_options"}

#: a field's ``json_schema_extra`` flag: the field joined its section after outputs were cached, so it
#: enters a stage's key only when set away from its default (those outputs keep their keys)
KEYED_WHEN_SET = "keyed_when_set"


class _Section(BaseModel):
    """Base for all sections: unknown keys and silent type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class NameCheck(Protocol):
    """What the schema asks of the registries, answered by :mod:`paric.catalog`, which passes one in the
    validation context (``context={NAMES: ...}``). Why a protocol: the schema then imports no registry
    (and no torch); validated without one, a config is checked for types and structure only, and
    ``paric.catalog.check`` checks its names and plugin options."""

    def data_format(self, name: str) -> None: ...
    def map_sources(self, names: list[str]) -> None: ...
    def descriptors(self, path: str) -> None: ...
    def method_options(self, m: "MethodConfig") -> dict[str, dict]: ...
    def method_in_use(self, name: str, m: "MethodConfig") -> None: ...
    def vlm_families(self, names: list[str]) -> None: ...
    def sampled_reference(self, name: str) -> bool: ...


#: the validation-context key of the :class:`NameCheck`
NAMES = "paric_names"


def _names(info: ValidationInfo | None) -> NameCheck | None:
    """The name checker this validation runs with, if any."""
    ctx = info.context if info is not None else None
    return ctx.get(NAMES) if isinstance(ctx, dict) else None


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)
