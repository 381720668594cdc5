"""The registry every extension point uses: names in order, a clear error for an unknown or twice-
registered name."""
from __future__ import annotations

import pytest

from paric.registry import Registry


def test_registry_keeps_order_and_names_what_was_expected():
    r: Registry[int] = Registry("map source")

    @r.register("paric")
    def _paric() -> int:
        return 2

    r.add("gals", 1)
    assert r.names() == ["paric", "gals"] and "gals" in r and len(r) == 2 and list(r) == r.names()
    assert r["paric"]() == 2 and r.get("gals") == 1
    with pytest.raises(ValueError, match=r"unknown map source 'prolip'; known: gals, paric"):
        r.get("prolip")
    with pytest.raises(ValueError, match="map source 'gals' is registered twice"):
        r.add("gals", 3)
