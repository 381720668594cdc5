"""Precompute the map store: benchmark data → VLM → adapters → Ray Data maps → map quality.

    paric precompute [--config default] [key=value ...]   # = python pipelines/precompute.py …
"""
from __future__ import annotations

import sys
import time

from paric import cli
from paric.config import ConfigError


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from paric.stages.cache import check_forced, stage_log

    args = cli.parser(__doc__, prog).parse_args(argv)
    cli.setup_logging()
    try:
        cfg = cli.config_from(args)
        force = check_forced(cli.forced(args))
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from paric.stages.maps import run_precompute

    with cli.exclusive(cfg), stage_log(force):  # one invocation per run.output_dir
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
