"""Train and evaluate methods on the map store (running the precompute first when needed).

    paric train train.method=gals run.seed=1               # = python pipelines/train.py …
    paric train --methods compare --seeds all              # the README table (make table)

``--methods``: comma-separated names, or ``compare`` (``train.compare``); ``--seeds``: comma-separated,
or ``all`` (``train.seeds``). Each (method, seed) is cached under ``train/<method>/seed<s>/``.
"""
from __future__ import annotations

import sys
import time

from paric import cli
from paric.config import ConfigError


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from paric.stages.cache import check_forced, stage_log

    args = cli.selection_args(cli.parser(__doc__, prog)).parse_args(argv)
    cli.setup_logging()
    try:
        cfg = cli.config_from(args)
        methods = (cfg.train.compare if args.methods == "compare" else
                   [cfg.train.method] if args.methods is None else args.methods.split(","))
        seeds = cli.seeds_from(cfg, args.seeds)
        force = check_forced(cli.forced(args))
        from paric.catalog import CATALOG

        for m in methods:
            if m not in cfg.train.methods:
                raise ConfigError(f"--methods: '{m}' is not defined in train.methods ({sorted(cfg.train.methods)})")
            CATALOG.method_in_use(m, cfg.method(m))
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from paric.report.results import build_results, load_quality, write_report
    from paric.report.table import methods_table
    from paric.stages.classifier import backbone_stage
    from paric.stages.compare import compare_stage
    from paric.stages.maps import run_precompute
    from paric.stages.pipeline import invocation
    from paric.stages.ray_env import ensure_ray
    from paric.tracking import log_artifact

    with cli.exclusive(cfg), stage_log(force):  # one invocation per run.output_dir
        t0 = time.time()
        progress = not args.no_progress
        run_precompute(cfg, progress=progress)
        root = cfg.data_root()
        backbone = backbone_stage(cfg, root, progress)
        if cfg.train.num_workers > 0:
            ensure_ray()
        with invocation(cfg, f"train {','.join(methods)}") as tracking:
            uri, rid = tracking.uri, tracking.parent_id
            result = compare_stage(cfg, root, methods, seeds, backbone, tracking)
            table = methods_table(result["methods"])
            (cfg.layout.train() / "table.md").write_text(table + "\n")
            log_artifact(uri, rid, cfg.layout.train() / "table.md")
            log_artifact(uri, rid, cfg.layout.train() / "summary.json")
            report = write_report(cfg, build_results(cfg, load_quality(cfg), result))
            for name in ("results.json", "report.md"):
                log_artifact(uri, rid, report / name, "report")
    print(table)
    print(f"train finished in {time.time() - t0:.1f}s; results under {cfg.layout.train()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
