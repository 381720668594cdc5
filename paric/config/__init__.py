"""Typed configuration: YAML files plus ``key=value`` overrides, validated up front.

A package that imports only pydantic and yaml (no torch, no plugin): the section base and the name
check the registries answer (:mod:`~paric.config.base`), the method presets as data
(:mod:`~paric.config.presets`), a sweep's search space (:mod:`~paric.config.space`), the schema
(:mod:`~paric.config.schema`) and the loader (:mod:`~paric.config.loader`). Names are checked by
:mod:`paric.catalog`, whose ``load_config`` the entry points use.
"""
from __future__ import annotations

from paric.config.base import KEYED_WHEN_SET, NAMES, ConfigError, NameCheck, _Loader, _names, _Section
from paric.config.loader import (_check_writable, _format_errors, _known_keys, _merge, _read_yaml, _set_dotted,
                                 dump_config, load_config, parse_override, profile_overlays)
from paric.config.presets import DEFAULT_METHODS, PRESETS_FILE, R100, _read_presets, with_r100
from paric.config.schema import (AdapterConfig, BackbonePretrainConfig, ClassifierConfig, CocoGenderConfig, Config,
                                 DataConfig, EvalConfig, LazslSection, MapsConfig, MethodConfig, PretrainConfig,
                                 ProlipConfig, ReportConfig, RunConfig, SweepConfig, SyntheticConfig, TrainConfig,
                                 VLMConfig, _dump, _first_error, _key_dump, with_value)
from paric.config.space import LISTS, RANGES, SAMPLE_KEYS, Dim, SearchSpace, space_target

__all__ = [
    "KEYED_WHEN_SET", "NAMES", "ConfigError", "NameCheck", "DEFAULT_METHODS", "PRESETS_FILE", "R100", "with_r100",
    "AdapterConfig", "BackbonePretrainConfig", "ClassifierConfig", "CocoGenderConfig", "Config", "DataConfig",
    "EvalConfig", "LazslSection", "MapsConfig", "MethodConfig", "PretrainConfig", "ProlipConfig", "ReportConfig",
    "RunConfig", "SweepConfig", "SyntheticConfig", "TrainConfig", "VLMConfig", "with_value", "LISTS", "RANGES",
    "SAMPLE_KEYS", "Dim", "SearchSpace", "space_target", "dump_config", "load_config", "parse_override",
    "profile_overlays", "_Loader", "_names", "_Section", "_check_writable", "_format_errors", "_known_keys", "_merge",
    "_read_yaml", "_set_dotted", "_read_presets", "_dump", "_first_error", "_key_dump",
]
