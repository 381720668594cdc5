"""Print the config a command would run (file or packaged name, profiles and overrides resolved and
validated), or every config key with its type, default and meaning (``--keys``).

    paric config --quick train.epochs=3        # the resolved YAML
    paric config --keys                        # every dotted key of the schema
"""
from __future__ import annotations

import sys

from pydantic import BaseModel

from paric import cli
from paric.config import Config, ConfigError, dump_config


def schema_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every field, sections expanded in place."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(schema_keys(ann, key + "."))
            continue
        kind = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
        if len(default) > 60:
            default = default[:57] + "..."
        rows.append((key, kind, default, (field.description or "").split("\n")[0]))
    return rows


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = cli.parser(__doc__, prog)
    p.add_argument("--keys", action="store_true", help="list every config key instead of the resolved config")
    args = p.parse_args(argv)
    if args.keys:
        for key, kind, default, doc in schema_keys():
            print(f"{key}  [{kind}] = {default}" + (f"\n    {doc}" if doc else ""))
        return 0
    try:
        cfg = cli.config_from(args)
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(dump_config(cfg))
    return 0


