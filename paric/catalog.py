"""Where the names in a config meet the registries: one check above every plugin.

Why: the schema (:mod:`paric.config`) validates types and structure and imports no plugin, so every
plugin may import the schema and nothing runs in circles. This module imports every registry
(formats, map sources, references, regularisers, objectives, post-hoc methods, VLM families), and
answers the schema's :class:`~paric.config.NameCheck` questions while a config is validated: the
errors still name the file or override and the key. Entry points load through
:func:`load_config` (a checked config); :func:`check` re-checks one (a sweep trial's, once its values are set).
"""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

import paric.attention.prolip_source  # noqa: F401  registers the map source 'prolip'
import paric.zeroshot.source  # noqa: F401  registers the map source 'lazsl'
from paric.attention.sources import MAP_SOURCES
from paric.config import NAMES, Config, ConfigError, MethodConfig, _format_errors
from paric.config import load_config as load_unchecked
from paric.data.formats import FORMATS
from paric.regularizers import REGULARIZERS
from paric.regularizers.reference import REFERENCES
from paric.train.objectives import OBJECTIVES
from paric.train.posthoc import POSTHOC
from paric.vlm.families import VLM_FAMILIES

#: the dataset format generated here rather than read from a native directory (no ``FORMATS`` entry)
GENERATED_FORMAT = "synthetic"


class Catalog:
    """The registries' answers to the schema's questions (:class:`paric.config.NameCheck`)."""

    def data_format(self, name: str) -> None:
        if name != GENERATED_FORMAT and name not in FORMATS:
            raise ValueError(f"unknown dataset format {name!r}; known: {GENERATED_FORMAT}, {', '.join(FORMATS.names())}")

    def map_sources(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in MAP_SOURCES]
        if unknown:
            raise ValueError(f"unknown map source(s) {unknown}; registered: {MAP_SOURCES.names()}")

    def descriptors(self, path: str) -> None:
        from paric.data.descriptors import load

        load(path)

    def method_options(self, m: MethodConfig) -> dict:
        """Every name a method uses against its registry; its regulariser's options validated by the
        regulariser's own Options model and returned with their defaults filled in."""
        if m.objective not in OBJECTIVES:
            raise ValueError(f"objective: unknown objective {m.objective!r}; known: {OBJECTIVES.names()}")
        if m.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer: unknown regularizer {m.regularizer!r}; known: {REGULARIZERS.names()}")
        if m.reference != "none" and m.reference not in REFERENCES:
            raise ValueError(f"reference: unknown reference {m.reference!r}; known: none, "
                             f"{', '.join(REFERENCES.names())}")
        if m.posthoc != "none" and m.posthoc not in POSTHOC:
            raise ValueError(f"posthoc: unknown post-hoc method {m.posthoc!r}; known: none, "
                             f"{', '.join(POSTHOC.names())}")
        try:
            opts = REGULARIZERS.get(m.regularizer).Options.model_validate(m.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"options.{where}: {first['msg']} (options of regularizer '{m.regularizer}')") from None
        return opts.model_dump(mode="json")

    def method_in_use(self, name: str, m: MethodConfig) -> None:
        """What a method that runs (``train.method``, ``train.compare``, a swept one) must have."""
        if REGULARIZERS.get(m.regularizer).needs_reference and m.reference == "none":
            raise ValueError(f"train.methods.{name}: regularizer '{m.regularizer}' needs a reference "
                             "(det, mean, median or oracle)")

    def vlm_families(self, names: list[str]) -> None:
        for name in names:
            if name not in VLM_FAMILIES:
                raise ValueError(f"unknown VLM family {name!r}; known: {', '.join(VLM_FAMILIES.names())}")

    def sampled_reference(self, name: str) -> bool:
        return name in REFERENCES and REFERENCES.get(name).sampled


CATALOG = Catalog()


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                overlays: list[str | Path] | None = None) -> Config:
    """:func:`paric.config.load_config` with every name and plugin option checked (errors name the
    file or override and the key), then :func:`check` for the sections left at their defaults."""
    cfg = load_unchecked(path, overrides, overlays, names=CATALOG)
    return check(cfg, str(path) if path is not None else "<defaults>")


def check(cfg: Config, source: str = "config") -> Config:
    """``cfg`` validated once more with the catalog (every section, defaults included): names known,
    options normalised. Returns the checked copy; raises ConfigError naming ``source`` and the key."""
    try:
        return Config.model_validate(cfg.model_dump(), context={NAMES: CATALOG})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None

