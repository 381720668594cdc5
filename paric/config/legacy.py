"""The plugin keys :class:`~paric.config.schema.MethodConfig` carried before issue 29 (``swap_loss``,
``dro_eta``, ``dfr_c``, ``jtt_up`` …): where each went, how an old config still loads, and the flat
form every run and sweep key is computed from.

Why a table here and not in the plugins: it records the *old schema*, which no longer changes. Its
defaults are the old fields' defaults, frozen: the key of a method that does not use a plugin held
that plugin's old default and must keep holding it, whatever the plugin's default becomes; the key of
a method that uses it holds the option when it differs from that frozen default (so a plugin that
changes its default retrains the runs that use it, as a changed field default would not have). The
plugins' ``Options`` models own the options' types, checks and current defaults; ``tests/test_config.py``
checks that every entry names an option its plugin has.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paric.config.base import OPTION_SLOTS

if TYPE_CHECKING:
    from paric.config.schema import MethodConfig


@dataclass(frozen=True)
class Legacy:
    """One pre-issue-29 ``MethodConfig`` key: now option ``option`` of the plugin ``plugin`` that the
    field ``selector`` names (in that seam's options field, :data:`OPTION_SLOTS`)."""

    key: str
    selector: str
    plugin: str
    option: str
    #: the old field's default (JSON form): what a key held when the method left it alone
    default: Any
    #: setting it (not null) chose the plugin: ``jtt_epochs`` made a method JTT
    selects: bool = False

    @property
    def slot(self) -> str:
        return OPTION_SLOTS[self.selector]

    @property
    def new_key(self) -> str:
        return f"{self.slot}.{self.option}"


LEGACY: tuple[Legacy, ...] = (
    Legacy("grad_target", "regularizer", "gradient_outside", "target", "log_prob"),
    Legacy("grad_norm", "regularizer", "gradient_outside", "norm", "l1"),
    Legacy("cam_mode", "regularizer", "gradcam", "mode", "energy_outside"),
    Legacy("cam_norm", "regularizer", "gradcam", "norm", "l1"),
    Legacy("swap_loss", "regularizer", "background_swap", "loss", "kl"),
    Legacy("dro_eta", "objective", "group_dro", "eta", 0.01),
    Legacy("dro_adjust", "objective", "group_dro", "adjust", 0.0),
    Legacy("dfr_c", "posthoc", "dfr", "c", [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]),
    Legacy("dfr_subsamples", "posthoc", "dfr", "subsamples", 20),
    Legacy("jtt_epochs", "two_stage", "jtt", "epochs", None, selects=True),
    Legacy("jtt_up", "two_stage", "jtt", "up", 20),
)
BY_KEY: dict[str, Legacy] = {e.key: e for e in LEGACY}

#: ``MethodConfig`` fields issue 29 added: in the flat form only where they hold what no old key does
NEW_FIELDS = ("objective_options", "posthoc_options", "two_stage", "two_stage_options")


def _deprecated(where: str, e: Legacy) -> None:
    warnings.warn(f"{where}{e.key} is deprecated: it is an option of {e.selector} '{e.plugin}', now "
                  f"{where}{e.new_key}", DeprecationWarning, stacklevel=2)


def from_flat(data: dict[str, Any], defaults: dict[str, Any], where: str = "") -> dict[str, Any]:
    """A method's keys with its old flat plugin keys moved into their plugin's options (each with a
    DeprecationWarning naming the old and the new key). A flat key wins over the same option set the
    new way (a preset's, under a config's old key). ``defaults``: the selecting fields' defaults.

    Raises ValueError naming the key when it belongs to a plugin the method does not use."""
    old = sorted((BY_KEY[k] for k in data if k in BY_KEY), key=lambda e: not e.selects)  # choosers first
    if not old:
        return data
    data = dict(data)
    for e in old:
        value = data.pop(e.key)
        if e.selects:
            if value is None:  # the old "not this plugin"
                _deprecated(where, e)
                if data.get(e.selector) == e.plugin:
                    data[e.selector] = defaults[e.selector]
                    data.pop(e.slot, None)
                continue
            if data.get(e.selector, defaults[e.selector]) == defaults[e.selector]:
                data[e.selector] = e.plugin
        used = data.get(e.selector, defaults[e.selector])
        if used != e.plugin:
            raise ValueError(f"{where}{e.key}: an option of {e.selector} '{e.plugin}' ({e.new_key}), but this "
                             f"method's {e.selector} is '{used}'")
        _deprecated(where, e)
        opts = data.get(e.slot, {})
        if isinstance(opts, dict):  # anything else: the field's own check names it
            data[e.slot] = {**opts, e.option: value}
    return data


def modern_key(key: str, where: str = "") -> str:
    """A dotted method key (a sweep dimension, a ``with_value`` path) with an old flat head replaced
    by its options path (``dro_eta`` -> ``objective_options.eta``), with a DeprecationWarning."""
    head, _, rest = key.partition(".")
    e = BY_KEY.get(head)
    if e is None:
        return key
    _deprecated(where, e)
    return e.new_key + ("." + rest if rest else "")


def flat_view(m: "MethodConfig", keep_defaults: bool) -> dict[str, Any]:
    """``m`` as its cache keys read it: the pre-issue-29 flat form, JSON values.

    Why: every run, fit and sweep key (and the ``train`` section's hash) was computed from the flat
    ``MethodConfig``; computing them from this view keeps every output cached before issue 29 valid.
    Options with an old flat name are written back under it (a method that does not use the plugin
    holds the old default); options without one stay in their options field, which (besides
    ``options``) appears only when not empty, as ``two_stage`` only when no old key expresses it.

    ``keep_defaults``: every old key (a section's full dump); else only those away from their defaults
    (``model_dump(exclude_defaults=True)`` of the flat form: ``method_key``).
    """
    fields = type(m).model_fields
    view = m.model_dump(mode="json", exclude_defaults=not keep_defaults,
                        exclude={*OPTION_SLOTS.values(), *NEW_FIELDS})
    rest = {slot: dict(getattr(m, slot)) for slot in OPTION_SLOTS.values()}
    for e in LEGACY:
        used = getattr(m, e.selector) == e.plugin
        value = rest[e.slot].pop(e.option, e.default) if used else e.default
        if keep_defaults or value != e.default:
            view[e.key] = value
    for slot, opts in rest.items():
        if opts or (keep_defaults and slot not in NEW_FIELDS):
            view[slot] = opts
    for name in NEW_FIELDS:
        if name in OPTION_SLOTS:  # a new selecting field
            value = getattr(m, name)
            if value != fields[name].default and not any(e.selects and e.plugin == value for e in LEGACY):
                view[name] = value
    return view


def flat_space(dims: dict[str, Any], m: "MethodConfig | None") -> dict[str, Any]:
    """A sweep space's dimensions keyed as before issue 29 (``objective_options.eta`` -> ``dro_eta``
    where ``m`` uses that plugin), for the sweep's key (see :func:`flat_view`)."""
    if m is None:
        return dims
    old = {e.new_key: e.key for e in LEGACY if getattr(m, e.selector) == e.plugin}
    return {old.get(k, k): v for k, v in dims.items()}
