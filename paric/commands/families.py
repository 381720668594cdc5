"""The whole pipeline once per VLM family (``report.families``), merged into one report.

    paric families --profile families            # CLIP and ProLIP on the embedded default (= pipelines/families.py)
    paric families --quick --profile families    # the same at toy size
    ray job submit --working-dir . -- python pipelines/families.py --profile families

Each family is an ordinary ``pipelines/full.py`` run into ``<run.output_dir>/<family>`` (cached and
resumable the same way); methods that do not read the VLM are trained once. The merged methods
table, each family's zero-shot accuracy, map quality and sweeps are in
``<run.output_dir>/families.md`` (and ``families.json``).
"""
from __future__ import annotations

import sys

from paric import cli


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    result = cli.run_stages(__doc__, argv, cli.lazy("paric.stages.families:check_families"),
                            cli.lazy("paric.stages.families:run_families"), prog)
    if result is None:
        return 2
    from paric.report.table import methods_table

    print()
    print(methods_table(result["merged"]["methods"]))
    print(f"\nfamilies report: {result['report'] / 'families.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
