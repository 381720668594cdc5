"""The entry points' arguments: ``key=value`` overrides anywhere on the line, as users type them."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _entry(name: str):
    spec = importlib.util.spec_from_file_location(f"pipelines_{name}", REPO / "pipelines" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_full_accepts_overrides_before_and_after_flags():
    args = _entry("full").parse(["maps.K=8", "--force", "data", "train.epochs=3", "--quick"])
    assert args.overrides == ["maps.K=8", "train.epochs=3"] and args.force == ["data"] and args.quick


@pytest.mark.parametrize("name", ["precompute", "sweep", "train"])
def test_every_entry_point_parses_intermixed(name):
    src = (REPO / "pipelines" / f"{name}.py").read_text()
    assert ".parse_intermixed_args(" in src and ".parse_args(" not in src
