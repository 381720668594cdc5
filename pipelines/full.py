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
import sys

from paric import cli
from paric.config import ConfigError
from paric.report.table import methods_table
from paric.stages.cache import STAGES, set_forced
from paric.stages.pipeline import check_pipeline_config, run_full, stage_table


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help=f"redo a stage even if cached (repeatable or comma-separated): {', '.join(STAGES)}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cli.setup_logging()
    force = [s.strip() for f in args.force for s in f.split(",") if s.strip()]
    try:
        cfg = cli.config_from(args)
        check_pipeline_config(cfg)
        set_forced(force)
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    with cli.exclusive(cfg):  # one invocation per run.output_dir
        result = run_full(cfg, force=force, progress=not args.no_progress)
    print()
    print(stage_table(result["stages"]))
    print()
    print(methods_table(result["results"]["methods"]))
    print(f"\npipeline finished in {result['seconds']:.1f}s; report: {result['report'] / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
