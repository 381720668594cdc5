"""The entry points' arguments: ``key=value`` overrides anywhere on the line, as users type them."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_full_accepts_overrides_before_and_after_flags():
    """What pipelines/full.py and pipelines/families.py parse (``cli.run_stages``)."""
    from paric import cli

    args = cli.stage_parser(None).parse_args(["maps.K=8", "--force", "data,vlm", "train.epochs=3", "--quick",
                                              "--force", "sweep"])
    assert args.overrides == ["maps.K=8", "train.epochs=3"] and cli.forced(args) == ["data", "vlm", "sweep"]
    assert args.quick
    for name in ("full", "families"):
        assert "cli.run_stages(" in (REPO / "pipelines" / f"{name}.py").read_text(), name


def test_the_shared_parser_takes_overrides_anywhere():
    """Every entry point builds on ``cli.parser``, so this is what precompute, sweep and train parse."""
    from paric import cli

    p = cli.parser(None)
    p.add_argument("--methods")
    args = p.parse_args(["--methods", "gals", "train.epochs=3", "--quick", "maps.K=8"])
    assert args.overrides == ["train.epochs=3", "maps.K=8"] and args.methods == "gals" and args.quick
    for name in ("precompute", "sweep", "train"):
        assert "cli.parser(" in (REPO / "pipelines" / f"{name}.py").read_text(), name
