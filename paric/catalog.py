"""Where the names in a config meet the registries: one check above every plugin.

Why: the schema (:mod:`paric.config`) validates types and structure and imports no plugin, so every
plugin may import the schema and nothing runs in circles. This module imports every registry
(formats, map sources, references, regularisers, objectives, post-hoc and two-stage methods, VLM
families), and answers the schema's :class:`~paric.config.NameCheck` questions while a config is
validated: the errors still name the file or override and the key. Entry points load through
:func:`load_config` (a checked config); :func:`check` re-checks one (a sweep trial's, once its values are set).
"""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

import paric.attention.prolip_source  # noqa: F401  registers the map source 'prolip'
import paric.zeroshot.source  # noqa: F401  registers the map source 'lazsl'
from paric.attention.sources import MAP_SOURCES
from paric.config import NAMES, Config, ConfigError, MethodConfig, _format_errors
from paric.config.schema import GENERATED_FORMAT
from paric.config import load_config as load_unchecked
from paric.config.base import OPTION_SLOTS
from paric.data.formats import FORMATS
from paric.registry import NoOptions, Registry
from paric.regularizers import REGULARIZERS
from paric.regularizers.reference import REFERENCES
from paric.train.objectives import OBJECTIVES
from paric.train.posthoc import POSTHOC
from paric.train.two_stage import TWO_STAGE
from paric.vlm.families import VLM_FAMILIES


#: each plugin seam of a method (:data:`paric.config.base.OPTION_SLOTS`): its selecting field -> its registry,
#: whose entries carry an ``Options`` model
SEAMS: dict[str, Registry] = {"regularizer": REGULARIZERS, "objective": OBJECTIVES, "posthoc": POSTHOC,
                              "two_stage": TWO_STAGE}


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

    def method_options(self, m: MethodConfig) -> dict[str, dict]:
        """Every name a method uses against its registry; each plugin's options (``options``,
        ``objective_options`` …) validated by that plugin's own Options model and returned with their
        defaults filled in, by options field."""
        if m.reference != "none" and m.reference not in REFERENCES:
            raise ValueError(f"reference: unknown reference {m.reference!r}; known: none, "
                             f"{', '.join(REFERENCES.names())}")
        return {slot: self._plugin_options(m, selector, slot) for selector, slot in OPTION_SLOTS.items()}

    @staticmethod
    def _plugin_options(m: MethodConfig, selector: str, slot: str) -> dict:
        """One seam's plugin name checked and its options normalised; the field's default names no plugin
        where the registry has no entry of that name ('none': no post-hoc step, one training run)."""
        registry, name = SEAMS[selector], getattr(m, selector)
        unplugged = MethodConfig.selector_defaults()[selector]
        if name in registry:
            options = registry.get(name).Options
        elif name == unplugged:
            options = NoOptions
        else:
            known = ([] if unplugged in registry else [unplugged]) + registry.names()
            raise ValueError(f"{selector}: unknown {registry.kind} {name!r}; known: {', '.join(known)}")
        try:
            return options.model_validate(getattr(m, slot)).model_dump(mode="json")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{slot}.{where}: {first['msg']} (options of {registry.kind} '{name}')") from None

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

