"""ProbVLM's published adapter settings against ours, on a pipeline's trained VLM (issue 28 item 5).

Published (the public training script): Adam lr 1e-4, NLL weight 0.05 beside the L1 term, a
cross-modal term of L1 + NLL. Ours (``conf/default.yaml``): lr 1e-3, NLL weight 1, the cross-modal
NLL alone. Both train on the same embeddings of the caption corpus with the same seed, epochs and
hold-out (10 %); the script prints the held-out L1 and NLL, the mean GGD shape, and the PARIC maps'
energy-in-mask and pointing game (published PARIC and the norm-scaled option) on a split's images.

    python benchmarks/adapter_defaults.py outputs/default [--split val] [--n 600]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from paric.attention.reference import GGDSampler, GradCamEngine, aggregate_samples
from paric.catalog import load_config
from paric.data import WaterbirdsDataset
from paric.stages.prepare import load_corpus
from paric.eval.map_quality import summarise
from paric.vlm.adapters import embed_pairs, train_adapters
from paric.vlm.families import VLM_FAMILIES

PUBLISHED = {"lr": 1e-4, "lambda_nll": 0.05, "cross_l1": True}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", type=Path, help="a pipeline run's output directory (its config.resolved.yaml)")
    p.add_argument("--split", default="val", help="images scored for map quality (design on validation)")
    p.add_argument("--n", type=int, default=600)
    args = p.parse_args()
    out = args.output_dir
    cfg = load_config(out / "config.resolved.yaml", [f"run.output_dir={out}"])
    vlm = VLM_FAMILIES[cfg.vlm.family].load(cfg.vlm, pretrained=None, checkpoint=out / "vlm" / "clip" / "model.pt")
    images, captions = load_corpus(cfg.data_root(), vlm.image_size)
    img, txt = embed_pairs(vlm, images, captions)
    ds = WaterbirdsDataset(cfg.data_root(), args.split, image_size=vlm.image_size, with_masks=True)
    items = [ds[i] for i in range(min(args.n, len(ds)))]
    masks = np.stack([it["mask"] for it in items])
    rows = {}
    for name, over in (("ours", {}), ("published", PUBLISHED)):
        acfg = cfg.adapter.model_copy(update=over)
        with tempfile.TemporaryDirectory() as d:
            pair, stats = train_adapters(img, txt, acfg, cfg.run.seed, Path(d) / "adapters.pt", progress=False)
        samplers = {"paric": GGDSampler(pair, cfg.maps.K, cfg.maps.seed, gamma=cfg.maps.gamma),
                    "paric_norm": GGDSampler(pair, cfg.maps.K, cfg.maps.seed, True, cfg.maps.gamma)}
        engine = GradCamEngine(vlm, cfg.vlm.prompts, list(samplers.values()), layer=cfg.vlm.saliency_layer)
        maps: dict[str, list[np.ndarray]] = {k: [] for k in samplers}
        for b in range(0, len(items), 50):
            batch = items[b:b + 50]
            x = vlm.normalise(torch.from_numpy(np.stack([it["image"] for it in batch])))
            for k, m in zip(samplers, engine(x, [it["image_id"] for it in batch])):
                maps[k].append(aggregate_samples(m)[0].numpy())
        q = summarise({k: np.concatenate(v) for k, v in maps.items()}, masks)
        rows[name] = {"settings": {k: getattr(acfg, k) for k in ("lr", "lambda_nll", "lambda_cross", "cross_l1",
                                                                 "epochs")},
                      **{k: stats[k] for k in ("val_l1", "val_nll", "val_cross_nll", "mean_alpha", "mean_beta")},
                      **{f"{k}_energy": q["energy_in_mask"][k] for k in samplers},
                      **{f"{k}_pointing": q["pointing_game"][k] for k in samplers}}
        r = rows[name]
        print(f"{name:9s} held-out L1 {r['val_l1']:.4f} NLL {r['val_nll']:.3f} cross-NLL {r['val_cross_nll']:.3f} "
              f"(β {r['mean_beta']:.2f}) | paric mean map energy {r['paric_energy']:.3f} pointing "
              f"{r['paric_pointing']:.3f} | paric_norm {r['paric_norm_energy']:.3f} / {r['paric_norm_pointing']:.3f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
