"""Sweep methods' λ, sample count k, aggregation, uncertainty weighting and learning rate with
Ray Tune + Optuna (objective: class-balanced validation accuracy), precomputing maps if needed.

    paric sweep --methods paric_mean sweep.num_samples=16     # = python pipelines/sweep.py …
    paric sweep --quick --methods paric_mean,gals
    paric sweep --methods gals --force sweep                   # start afresh instead of resuming

An interrupted sweep resumes where it stopped on rerun; results: ``sweep/<method>/best.json``.
"""
from __future__ import annotations

import json
import sys

from paric import cli
from paric.config import ConfigError


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from paric.stages.cache import check_forced

    p = cli.selection_args(cli.parser(__doc__, prog))
    args = p.parse_args(argv)
    cli.setup_logging()
    try:
        cfg = cli.config_from(args)
        methods = args.methods.split(",") if args.methods else list(cfg.sweep.methods)
        for m in methods:
            if m not in cfg.sweep.spaces or m not in cfg.train.methods:
                raise ConfigError(f"--methods: '{m}' needs an entry in train.methods and sweep.spaces "
                                  f"(spaces: {sorted(cfg.sweep.spaces)})")
            cfg.check_sweep_seeds(m)
        force = check_forced(cli.forced(args))
        if args.seeds is not None:
            raise ConfigError("--seeds: a sweep's seeds are sweep.seeds (each grid point is trained with each)")
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from paric.stages.pipeline import run_sweeps

    with cli.exclusive(cfg):  # one invocation per run.output_dir
        sweeps = run_sweeps(cfg, methods, force=force, progress=not args.no_progress)
    for m, sw in sweeps.items():
        print(f"{m}: best val balanced acc {sw['best_score']:.3f} with {json.dumps(sw['best'])} "
              f"({len(sw['trials'])} trials, {sw['failed']} failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
