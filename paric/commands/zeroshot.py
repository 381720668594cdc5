"""Zero-shot classification of the test split by the pipeline's VLM: CLIP (class prompt), by
description, and LaZSL (OT between crops and attribute descriptors). Runs the data and VLM stages
(cached) first; writes ``<run.output_dir>/zeroshot/lazsl.json`` and ``lazsl_crops.png`` (the
pipeline runs the same stage when ``maps.sources`` has ``lazsl``).

    paric zeroshot [--config default] [lazsl.descriptors=file.json] [lazsl.crops=90]   # = pipelines/zeroshot.py

Descriptors: a DCLIP / CuPL JSON ({"class": ["descriptor", ...]}) named by ``lazsl.descriptors``;
the embedded benchmark's shapes have their own (paric.data.descriptors.SHAPE_DESCRIPTORS). A class
without any falls back to its class prompt, and is named.
"""
from __future__ import annotations

import sys

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
    from paric.stages.prepare import data_stage, vlm_stage
    from paric.stages.zeroshot import accuracy_lines, zeroshot_stage

    with cli.exclusive(cfg), stage_log(force):
        root = data_stage(cfg, progress=not args.no_progress)
        result = zeroshot_stage(cfg, root, vlm_stage(cfg, root, progress=not args.no_progress))
    print("\n".join(accuracy_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
