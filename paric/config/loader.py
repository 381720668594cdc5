"""Loading a config: YAML files (with ``base:`` chains), profile overlays and ``key=value``
overrides, validated up front; errors name the file or override and the dotted key.

Why: a long cluster job must fail in the first second on a typo, not after an hour.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from paric.config.base import NAMES, ConfigError, NameCheck, _Loader
from paric.config.schema import Config

def _set_dotted(tree: dict, dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{source}: '{k}' in '{dotted}' is a value, not a section")
        node = nxt
    node[keys[-1]] = value


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        full = f"{prefix}{name}"
        keys.append(full)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_known_keys(ann, full + "."))
    return keys


def _format_errors(err: ValidationError, source: str) -> str:
    known = _known_keys(Config)
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(loc, known, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            lines.append(f"{source}: unknown key '{loc}'{extra}")
        else:
            got = e.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict) else ""
            if loc:
                lines.append(f"{source}: key '{loc}': {e['msg']}{shown}")
            else:  # a cross-section check: its message names the keys
                lines.append(f"{source}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=3`` -> ("a.b", 3); values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_Loader) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from exc
    return key.strip(), value


def _read_yaml(p: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file as a tree; a top-level ``base: <path>`` (relative to the file) is read first
    and this file deep-merged over it, so dataset configs state only what differs from the default."""
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    if p.resolve() in seen:
        raise ConfigError(f"{p}: 'base' chain loops back to itself ({' -> '.join(map(str, seen))})")
    try:
        loaded = yaml.load(p.read_text(), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections, got {type(loaded).__name__}")
    base = loaded.pop("base", None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ConfigError(f"{p}: key 'base' must be a path to another config file, got {base!r}")
    return _merge(_read_yaml((p.parent / base), (*seen, p.resolve())), loaded)


def _merge(base: dict, over: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in ``over`` replaces. A sweep dimension
    (a mapping with ``dist``) replaces whole: a grid over a range must not keep the range's bounds."""
    out = dict(base)
    for k, v in over.items():
        whole = isinstance(v, dict) and "dist" in v
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and not whole else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                overlays: list[str | Path] | None = None, names: NameCheck | None = None) -> Config:
    """Load a YAML config (or the defaults), deep-merge ``overlays`` (profile files such as
    ``conf/profiles/quick.yaml``) over it, apply ``key=value`` overrides, validate (with ``names``,
    the registries' names and plugin options too: :func:`paric.catalog.load_config` passes them).

    Errors name the file (or the override) and the dotted key.
    """
    ctx = {NAMES: names} if names is not None else None
    tree: dict = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        tree = _read_yaml(Path(path))
    try:
        Config.model_validate(tree, context=ctx)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    for overlay in overlays or []:
        tree = _merge(tree, _read_yaml(Path(overlay)))
        try:
            Config.model_validate(tree, context=ctx)
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, str(overlay))) from None
    applied: list[tuple[str, str]] = []  # (dotted key, override as typed)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(tree, key, value, f"override '{item}'")
        applied.append((key, item))
    # validated once all are applied: a pair such as grid=false + weight=[lo,hi] is only valid together
    try:
        cfg = Config.model_validate(tree, context=ctx)
    except ValidationError as exc:
        loc = ".".join(str(p) for p in exc.errors()[0]["loc"])
        near = lambda k: not loc or k == loc or k.startswith(loc + ".") or loc.startswith(k + ".")  # noqa: E731
        item = next((it for k, it in reversed(applied) if near(k)), None)
        raise ConfigError(_format_errors(exc, f"override '{item}'" if item else source)) from None
    # Absolute from here on: Tune trials and Ray workers run in other working directories.
    cfg.run.output_dir = str(Path(cfg.run.output_dir).expanduser().resolve())
    where = next((f"override '{it}'" for k, it in reversed(applied) if k in ("run", "run.output_dir")), source)
    _check_writable(Path(cfg.run.output_dir), where)
    return cfg


def _check_writable(out: Path, source: str) -> None:
    """``run.output_dir`` can hold the run's files: an existing writable directory, or one that can be
    made under its nearest existing parent (tried with a temporary directory, removed again), so a bad
    path fails here and not as a traceback from the first stage that writes."""
    import tempfile

    base = out
    while not base.exists() and base != base.parent:
        base = base.parent
    problem = None
    if not base.is_dir():
        problem = f"{base} is not a directory"
    else:
        try:
            tempfile.TemporaryDirectory(dir=base).cleanup()
        except OSError as exc:
            problem = f"cannot create a directory in {base} ({exc.strerror or exc})"
    if problem:
        raise ConfigError(f"{source}: run.output_dir={out}: {problem}; expected a writable directory")


def profile_overlays(config_path: str | Path, profiles: list[str], fallback: Path | None = None) -> list[Path]:
    """``--profile NAME`` files: ``profiles/NAME.yaml`` beside the config file (e.g. conf/profiles/quick.yaml),
    else in ``fallback`` (the packaged profiles, for a config of one's own)."""
    base = Path(config_path).parent / "profiles"
    paths = []
    for name in profiles:
        path = base / f"{name}.yaml"
        if not path.is_file() and fallback is not None and (fallback / f"{name}.yaml").is_file():
            path = fallback / f"{name}.yaml"
        if not path.is_file():
            have = sorted({p.stem for d in (base, fallback) if d is not None for p in d.glob("*.yaml")})
            raise ConfigError(f"--profile {name}: {path} not found (profiles: {', '.join(have) or 'none'})")
        paths.append(path)
    return paths


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (saved beside every output for provenance)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
