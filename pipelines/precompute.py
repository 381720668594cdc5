"""Precompute the map store: benchmark data → VLM → adapters → Ray Data maps → map quality.

    python pipelines/precompute.py --config conf/default.yaml [key=value ...]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from paric.config import ConfigError, load_config
from paric.stages.maps import run_precompute


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/default.yaml", help="YAML config file")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. maps.K=16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("paric").setLevel(logging.INFO)  # our stage lines; open_clip's chatter stays quiet
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    t0 = time.time()
    summary = run_precompute(cfg, progress=not args.no_progress)
    q = summary["quality"]["splits"].get("test")
    if q:
        e = q["energy_in_mask"]
        print(f"test energy-in-mask: det {e['det']:.3f}  mean {e['mean']:.3f}  median {e['median']:.3f}  "
              f"uniform {e['uniform']:.3f}  random-init {e.get('random_init_det', float('nan')):.3f}")
    print(f"precompute finished in {time.time() - t0:.1f}s; outputs under {cfg.output_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
