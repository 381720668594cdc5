"""The method presets ``train.methods`` starts from, as data: ``paric/conf/presets/methods.yaml``
(the λ conversions are comments there), and the ``_r100`` twins every preset gets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from paric.config.base import ConfigError, _Loader

#: the method presets as data (``paric/conf/presets/methods.yaml``, with the λ conversions as comments);
#: keys starting with '.' are YAML anchors, not presets
PRESETS_FILE = Path(__file__).resolve().parents[1] / "conf" / "presets" / "methods.yaml"


def _read_presets(path: Path = PRESETS_FILE) -> dict[str, dict]:
    try:
        tree = yaml.load(path.read_text(), Loader=_Loader) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: the method presets cannot be read: {exc}") from None
    bad = [k for k, v in tree.items() if not isinstance(v, dict)]
    if bad:
        raise ConfigError(f"{path}: presets {bad} are not mappings of MethodConfig keys")
    return {k: v for k, v in tree.items() if not k.startswith(".")}


#: suffix of a method's Waterbirds-100-style twin: the same method on the majority groups only
R100 = "_r100"


def with_r100(methods: dict[str, Any], given: set[str] = frozenset()) -> dict[str, Any]:
    """Add ``<m>_r100`` (``<m>`` with ``train_groups: majority``) for every method, unless the config
    spells that name out itself: a change to ``gals`` reaches ``gals_r100`` too."""
    out = dict(methods)
    for name, spec in methods.items():
        if name.endswith(R100) or not isinstance(spec, dict) or (name + R100) in given:
            continue
        out[name + R100] = {**spec, "train_groups": "majority",
                            **({"base": spec["base"] + R100} if spec.get("base") else {})}
    return out


#: the presets ``train.methods`` starts from (read once, at import: a few milliseconds of YAML)
DEFAULT_METHODS: dict[str, dict] = _read_presets()
