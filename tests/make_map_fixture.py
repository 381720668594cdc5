"""Write ``tests/fixtures/maps_tiny/``: the tiny test config's ``maps/test`` store and the CPU it was
computed on, as the code of the day wrote it.

Why: refactors of the map code (sources, samplers, the store's schema) must leave the maps
bit-identical for the same config; ``tests/test_precompute.py::test_maps_match_the_stored_fixture``
compares a fresh run against this fixture. Rerun this only when a change is *meant* to change maps:

    python tests/make_map_fixture.py
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import TINY  # noqa: E402
from cpu_signature import cpu_signature  # noqa: E402

from paric.catalog import load_config  # noqa: E402
from paric.stages.maps import run_precompute  # noqa: E402
from paric.stages.ray_env import ensure_ray  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "maps_tiny"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(REPO / "conf" / "default.yaml", [*TINY, f"run.output_dir={tmp}"])
        ensure_ray(num_cpus=2)
        run_precompute(cfg, progress=False)
        if FIXTURE.exists():
            shutil.rmtree(FIXTURE)
        shutil.copytree(cfg.layout.maps("test"), FIXTURE)
        import ray

        ray.shutdown()  # before the temp dir (the actors' checkpoints) goes
    (FIXTURE / "cpu.json").write_text(json.dumps(cpu_signature(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
