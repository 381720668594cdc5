"""The whole pipeline: data → VLM → adapters → maps → backbone → sweeps → final runs → report.

    paric run [--config default] [key=value ...]      # = python pipelines/full.py …
    paric run --quick                                 # every stage, tiny sizes (smoke test)
    paric run --force sweep --force train             # redo stages despite their cache
    ray job submit --working-dir . -- python pipelines/full.py --quick run.output_dir=/shared/out

Started plainly it starts a local Ray; under ``ray job submit`` (``RAY_ADDRESS`` set) it connects
to that cluster. Stages are cached by a hash of their config and inputs: a rerun skips finished
ones and resumes an interrupted sweep. Stages: data, vlm, adapters, maps, quality, backbone,
sweep, train, report.
"""
from __future__ import annotations

import sys

from paric import cli


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    result = cli.run_stages(__doc__, argv, cli.lazy("paric.stages.pipeline:check_pipeline_config"),
                            cli.lazy("paric.stages.pipeline:run_full"), prog)
    if result is None:
        return 2
    from paric.report.table import methods_table
    from paric.stages.pipeline import stage_table

    print()
    print(stage_table(result["stages"]))
    print()
    print(methods_table(result["results"]["methods"]))
    print(f"\npipeline finished in {result['seconds']:.1f}s; report: {result['report'] / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
