"""The whole pipeline once per VLM family (``report.families``), merged into one report.

    python pipelines/families.py --profile families            # CLIP and ProLIP on the embedded default
    python pipelines/families.py --quick --profile families    # the same at toy size
    ray job submit --working-dir . -- python pipelines/families.py --profile families

Each family is an ordinary ``pipelines/full.py`` run into ``<run.output_dir>/<family>`` (cached and
resumable the same way); methods that do not read the VLM are trained once. The merged methods
table, each family's zero-shot accuracy, map quality and sweeps are in
``<run.output_dir>/families.md`` (and ``families.json``).
"""
from __future__ import annotations

import argparse
import sys

from paric import cli
from paric.config import ConfigError
from paric.report.table import methods_table
from paric.stages.cache import STAGES, set_forced
from paric.stages.families import plan_families, run_families
from paric.stages.pipeline import check_pipeline_config


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help=f"redo a stage in every family even if cached: {', '.join(STAGES)}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cli.setup_logging()
    force = [s.strip() for f in args.force for s in f.split(",") if s.strip()]
    try:
        cfg = cli.config_from(args)
        for p in plan_families(cfg):
            try:
                check_pipeline_config(p.cfg)
            except ValueError as exc:
                raise ValueError(f"family '{p.family}': {exc}") from None
        set_forced(force)
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    with cli.exclusive(cfg):  # the parent directory too: one families invocation at a time
        result = run_families(cfg, force=force, progress=not args.no_progress)
    print()
    print(methods_table(result["merged"]["methods"]))
    print(f"\nfamilies report: {result['report'] / 'families.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
