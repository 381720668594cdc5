"""The entry points' arguments: ``key=value`` overrides anywhere on the line, as users type them."""
from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _entry(name: str):
    spec = importlib.util.spec_from_file_location(f"pipelines_{name}", REPO / "pipelines" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_full_accepts_overrides_before_and_after_flags():
    args = _entry("full").parse(["maps.K=8", "--force", "data", "train.epochs=3", "--quick"])
    assert args.overrides == ["maps.K=8", "train.epochs=3"] and args.force == ["data"] and args.quick


def test_the_shared_parser_takes_overrides_anywhere():
    """Every entry point builds on ``cli.parser``, so this is what precompute, sweep and train parse."""
    from paric import cli

    p = cli.parser(None)
    p.add_argument("--methods")
    args = p.parse_args(["--methods", "gals", "train.epochs=3", "--quick", "maps.K=8"])
    assert args.overrides == ["train.epochs=3", "maps.K=8"] and args.methods == "gals" and args.quick
    for name in ("precompute", "sweep", "train"):
        assert "cli.parser(" in (REPO / "pipelines" / f"{name}.py").read_text(), name
