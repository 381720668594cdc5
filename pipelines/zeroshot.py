"""Zero-shot classification of the test split by the pipeline's VLM: CLIP (class prompt), by
description, and LaZSL (OT between crops and attribute descriptors). Runs the data and VLM stages
(cached) first; writes ``<run.output_dir>/zeroshot/lazsl.json``.

    python pipelines/zeroshot.py --config conf/default.yaml [--descriptors file.json] [--crops 30]

Descriptors: a DCLIP / CuPL JSON ({"class": ["descriptor", ...]}); the embedded benchmark's shapes
have their own (paric.data.descriptors.SHAPE_DESCRIPTORS). A class without any falls back to its
class prompt, and is named.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from paric import cli
from paric.config import ConfigError
from paric.data import WaterbirdsDataset
from paric.data.descriptors import SHAPE_DESCRIPTORS, build, load
from paric.io import write_json
from paric.stages.prepare import data_stage, stack_images, vlm_stage
from paric.zeroshot.evaluate import zero_shot
from paric.zeroshot.lazsl import LazslConfig


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__)
    p.add_argument("--descriptors", default=None, help="DCLIP / CuPL descriptor JSON (default: the shapes')")
    p.add_argument("--crops", type=int, default=30, help="crops per image (LaZSL: 90 at 224 px; 30 at 64 px)")
    args = p.parse_args(argv)
    cli.setup_logging()
    try:
        cfg = cli.config_from(args)
        table = load(args.descriptors) if args.descriptors else SHAPE_DESCRIPTORS
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    with cli.exclusive(cfg):
        t0 = time.time()
        root = data_stage(cfg, progress=not args.no_progress)
        vlm = vlm_stage(cfg, root, progress=not args.no_progress).load()
        test = WaterbirdsDataset(root, "test", image_size=vlm.image_size, with_masks=False)
        images, labels, ids = stack_images(test), test.rows["y"].to_numpy(), list(test.rows["img_filename"])
        # among the benchmark's classes, and (harder, as the vlm stage reports) among every shape of the corpus
        label_sets = {"classes": (test.classes, labels)}
        shapes = json.loads((root / "dataset.json").read_text()).get("shapes") if (root / "dataset.json").is_file() \
            else None
        if shapes and all(c in shapes for c in test.classes):
            label_sets["all_shapes"] = (shapes, np.array([shapes.index(test.classes[y]) for y in labels]))
        result = {}
        for name, (classes, y) in label_sets.items():
            result[name] = zero_shot(vlm, images, y, ids, classes, build(classes, table, cfg.vlm.class_template),
                                     cfg.vlm.class_template, LazslConfig(crops=args.crops), cfg.run.seed)
        result["seconds"] = round(time.time() - t0, 1)
        write_json(cfg.output_path("zeroshot", "lazsl.json"), result)
    for name in label_sets:
        r, acc = result[name], result[name]["acc"]
        print(f"zero-shot among {name} on {r['n']} test images: clip {acc['clip']:.3f}  by description "
              f"{acc['by_description']:.3f}  lazsl {acc['lazsl']:.3f}  ({r['crops']} crops; fell back: "
              f"{r['fell_back'] or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
