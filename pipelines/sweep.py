"""Sweep methods' λ, sample count k, aggregation, uncertainty weighting and learning rate with
Ray Tune + Optuna (objective: class-balanced validation accuracy), precomputing maps if needed.

    python pipelines/sweep.py --config conf/default.yaml --methods paric_mean sweep.num_samples=16
    python pipelines/sweep.py --quick --methods paric_mean,gals

An interrupted sweep resumes where it stopped on rerun; results: ``sweep/<method>/best.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from paric.config import ConfigError, load_config, profile_overlays
from paric.stages.pipeline import run_sweeps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="conf/default.yaml", help="YAML config file")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: sweep.methods)")
    p.add_argument("--profile", action="append", default=[], help="overlay profiles/<name>.yaml beside the config")
    p.add_argument("--quick", action="store_true", help="same as --profile quick")
    p.add_argument("--force", action="store_true", help="start the sweep afresh instead of reusing / resuming it")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sweep.num_samples=16")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("paric").setLevel(logging.INFO)
    try:
        overlays = profile_overlays(args.config, (["quick"] if args.quick else []) + args.profile)
        cfg = load_config(args.config, args.overrides, overlays=overlays)
        methods = args.methods.split(",") if args.methods else list(cfg.sweep.methods)
        for m in methods:
            if m not in cfg.sweep.spaces or m not in cfg.train.methods:
                raise ConfigError(f"--methods: '{m}' needs an entry in train.methods and sweep.spaces "
                                  f"(spaces: {sorted(cfg.sweep.spaces)})")
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    sweeps = run_sweeps(cfg, methods, force=["sweep"] if args.force else [], progress=not args.no_progress)
    for m, sw in sweeps.items():
        print(f"{m}: best val balanced acc {sw['best_score']:.3f} with {json.dumps(sw['best'])} "
              f"({len(sw['trials'])} trials, {sw['failed']} failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
