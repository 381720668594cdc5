"""LaZSL's crop count chosen on validation (issue 28 item 9): zero-shot accuracy of CLIP, classification
by description and LaZSL on a split, for several ``lazsl.crops``, on a pipeline's trained VLM.

The published LaZSL uses 90 crops at 224 px; the default config's count must come from this table on
the *validation* split (the test split is read once, for the report). The same crops' seed
(``maps.seed``) and descriptors as the pipeline's ``zeroshot`` stage.

    python benchmarks/lazsl_crops.py outputs/default [--split val] [--crops 10,30,60,90]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from paric.catalog import load_config
from paric.data import WaterbirdsDataset
from paric.stages.prepare import label_sets, stack_images
from paric.vlm.families import VLM_FAMILIES
from paric.zeroshot.evaluate import descriptors_for, lazsl_config, zero_shot_tasks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", type=Path, help="a pipeline run's output directory (its config.resolved.yaml)")
    p.add_argument("--split", default="val")
    p.add_argument("--crops", default="10,30,60,90", help="comma-separated crop counts")
    args = p.parse_args()
    out = args.output_dir
    cfg = load_config(out / "config.resolved.yaml", [f"run.output_dir={out}"])
    vlm = VLM_FAMILIES[cfg.vlm.family].load(cfg.vlm, pretrained=None, checkpoint=out / "vlm" / "clip" / "model.pt")
    root = cfg.data_root()
    ds = WaterbirdsDataset(root, args.split, image_size=vlm.image_size, with_masks=False)
    images, ids = stack_images(ds), list(ds.rows["img_filename"])
    tasks = {name: (classes, y, descriptors_for(classes, cfg.lazsl.descriptors, cfg.vlm.class_template))
             for name, (classes, y) in label_sets(root, ds).items()}
    rows = {}
    for crops in [int(c) for c in args.crops.split(",")]:
        lz = lazsl_config(cfg.lazsl.model_copy(update={"crops": crops}))
        res = zero_shot_tasks(vlm, images, ids, tasks, cfg.vlm.class_template, lz, cfg.maps.seed)
        rows[crops] = {name: r["acc"] for name, r in res.items()}
        print(f"{crops:3d} crops on {len(ids)} {args.split} images: " + "  ".join(
            f"{name}: clip {100 * a['clip']:.1f} by description {100 * a['by_description']:.1f} "
            f"lazsl {100 * a['lazsl']:.1f}" for name, a in rows[crops].items()))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
