"""The whole pipeline: data → VLM → adapters → maps → backbone → sweeps → final runs → report.

    python pipelines/full.py --config conf/default.yaml [key=value ...]
    python pipelines/full.py --quick                       # every stage, tiny sizes (smoke test)
    python pipelines/full.py --force sweep --force train   # redo stages despite their cache
    ray job submit --working-dir . -- python pipelines/full.py --quick run.output_dir=/shared/out

Started plainly it starts a local Ray; under ``ray job submit`` (``RAY_ADDRESS`` set) it connects
to that cluster. Stages are cached by a hash of their config and inputs: a rerun skips finished
ones and resumes an interrupted sweep. Stages: data, vlm, adapters, maps, quality, backbone,
sweep, train, report.
"""
from __future__ import annotations

import argparse
import logging
import sys

from paric.config import ConfigError, load_config, profile_overlays
from paric.report.table import methods_table
from paric.stages.cache import STAGES, set_forced
from paric.stages.pipeline import check_pipeline_config, run_full, stage_table


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="conf/default.yaml", help="YAML config file")
    p.add_argument("--profile", action="append", default=[],
                   help="overlay profiles/<name>.yaml beside the config file (e.g. conf/profiles/quick.yaml)")
    p.add_argument("--quick", action="store_true", help="same as --profile quick")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help=f"redo a stage even if cached (repeatable or comma-separated): {', '.join(STAGES)}")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("paric").setLevel(logging.INFO)
    profiles = (["quick"] if args.quick else []) + args.profile
    force = [s.strip() for f in args.force for s in f.split(",") if s.strip()]
    try:
        overlays = profile_overlays(args.config, profiles)
        cfg = load_config(args.config, args.overrides, overlays=overlays)
        check_pipeline_config(cfg)
        set_forced(force)
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    result = run_full(cfg, force=force, progress=not args.no_progress)
    print()
    print(stage_table(result["stages"]))
    print()
    print(methods_table(result["results"]["methods"]))
    print(f"\npipeline finished in {result['seconds']:.1f}s; report: {result['report'] / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
