"""Does a benchmark variant measure? Vanilla vs the oracle (ground-truth masks) on a generated
Waterbirds-format benchmark, all in memory, in minutes on one core.

Why: the embedded benchmark is valid only if, with the object masks as the reference, the attention
loss clearly beats vanilla training (issue 12's criterion: ratio 1.0 vanilla worst-group ≤ 50 and
oracle ≥ vanilla + 20; ratio 0.95 vanilla worst-group ≤ mean-of-groups − 10 and oracle ≥ vanilla + 5).
The full pipeline needs a VLM and maps for that question; this script needs neither: it renders the
benchmark and the corpus (JPEG-coded as on disk), pretrains the corpus backbone as the pipeline does,
and trains the requested methods with the pipeline's own Trainer. The design numbers in the README
come from it, e.g.::

    python benchmarks/validity.py --ratio 0.95 --epochs 24 --methods vanilla,oracle_swap
    python benchmarks/validity.py --ratio 0.95 --gen '{"pattern_contrast": [0.1, 0.3]}' --size 48
    python benchmarks/validity.py --seed 1 --train-seeds 0,1,2 --views all,majority   # both ratios, 3 seeds

``--views majority`` trains on the majority groups of the same split (ratio 1.0, as the pipeline's
``<method>_r100``); ``--place-labels`` pretrains the corpus backbone on place labels too.

Methods: vanilla, oracle_swap (the default oracle_mask loss), oracle_exact (GALS' CE input-gradient
penalty, λ = 70.6, GALS' mask resize), oracle_rrr (Σ log p target, λ = 1) and oracle_cam (the share of
the classifier's Grad-CAM outside the mask, a feature-level penalty); ``name@λ`` sets λ.
Prints one ``RESULT`` line per method, view and training seed (test worst-group, mean-of-groups,
per-group, best epoch), then a ``SUMMARY`` line per method and view (mean ± std over the seeds).
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from paric.config import Config, MethodConfig, SyntheticConfig
from paric.data import synthetic as S
from paric.eval.groups import group_metrics
from paric.train.backbone import pretrain_backbone
from paric.train.data import iterate, majority_groups, prepare, train_view
from paric.train.loop import Trainer, fit

PRESETS: dict[str, dict] = {
    "vanilla": {},
    "oracle_swap": {"regularizer": "background_swap", "weight": 1.0, "reference": "oracle"},
    "oracle_exact": {"regularizer": "gradient_outside", "weight": 70.6, "options": {"target": "ce"},
                     "reference": "oracle", "mask_resize": "any"},
    "oracle_rrr": {"regularizer": "gradient_outside", "weight": 1.0, "reference": "oracle"},
    # a feature-level penalty: the share of the classifier's own Grad-CAM outside the mask
    "oracle_cam": {"regularizer": "gradcam", "options": {"mode": "energy_outside"}, "weight": 1.0,
                   "reference": "oracle"},
}


def _jpeg(img: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", **S.JPEG_OPTIONS)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def render_benchmark(gen: SyntheticConfig) -> dict[int, dict[str, np.ndarray]]:
    """{split code: arrays} of the benchmark, pixel-identical to what the generator writes."""
    meta = S.build_metadata(gen)
    imgs, masks = [], []
    for i in range(len(meta)):
        img, m = S.render(meta["shape"].iat[i], gen.places[int(meta["place"].iat[i])], gen.image_size,
                          S._rng(gen, S._STREAM_BENCH, i), gen)
        imgs.append(_jpeg(img))
        masks.append(m)
    x, m = np.stack(imgs), np.stack(masks).astype(np.uint8)
    y, place = meta["y"].to_numpy(), meta["place"].to_numpy()
    group = y * len(gen.places) + place
    return {k: {"image": x[sel], "label": y[sel], "group": group[sel], "mask": m[sel]}
            for k in (0, 1, 2) for sel in [(meta["split"] == k).to_numpy()]}


def corpus_backbone(cfg: Config, gen: SyntheticConfig, seed: int) -> dict:
    """The corpus-pretrained backbone (shape + place labels, the benchmark's classes left out)."""
    caps = S.build_caption_table(gen)
    shapes, places = list(gen.shapes), list(gen.places)
    shape = np.array([shapes.index(s) if s else len(shapes) for s in caps["shape"]])
    place = np.array([places.index(p) for p in caps["place"]])
    keep = np.array([s == len(shapes) or shapes[s] not in gen.classes for s in shape])
    imgs = np.stack([_jpeg(S.render(s or None, p, gen.image_size, S._rng(gen, S._STREAM_CAPTION, i), gen)[0])
                     for i, (s, p) in enumerate(zip(caps["shape"], caps["place"])) if keep[i]])
    with tempfile.TemporaryDirectory() as d:
        stats = pretrain_backbone(cfg.classifier, torch.from_numpy(imgs), shape[keep], place[keep], len(shapes),
                                  len(places), seed, Path(d) / "backbone.pt", progress=False)
        print("backbone", json.dumps(stats), flush=True)
        return torch.load(Path(d) / "backbone.pt")["model"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gen", default="{}", help="JSON overrides of data.synthetic (SyntheticConfig)")
    ap.add_argument("--ratio", type=float, default=0.95)
    ap.add_argument("--methods", default="vanilla,oracle_swap")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0, help="generator seed")
    ap.add_argument("--train-seeds", default="0", help="comma-separated training seeds (backbone: seed 0)")
    ap.add_argument("--views", default="all", help="comma-separated train views: all (ratio --ratio), majority "
                    "(its majority groups: ratio 1.0)")
    ap.add_argument("--patience", type=int, default=6, help="early stopping (train.patience; 0: off)")
    ap.add_argument("--ntrain", type=int, default=2000)
    ap.add_argument("--ncap", type=int, default=20000)
    ap.add_argument("--size", type=int, default=32, help="classifier input size")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--head-lr", type=float, default=None, help="train.head_lr (GALS' parameter groups: lr / 10)")
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--place-labels", action="store_true", help="corpus backbone pretrained on place labels too")
    a = ap.parse_args()
    torch.set_num_threads(1)
    gen = SyntheticConfig(**{"n_train": a.ntrain, "n_val": 600, "n_test": 600, "n_captions": a.ncap,
                             "ratio": a.ratio, "seed": a.seed, **json.loads(a.gen)})
    cfg = Config.model_validate({"classifier": {"image_size": a.size,
                                                "pretrain": {"place_labels": a.place_labels}},
                                 "train": {"epochs": a.epochs, "batch_size": a.bs, "lr": a.lr, "head_lr": a.head_lr,
                                           "patience": a.patience or None}})
    t0 = time.time()
    splits = render_benchmark(gen)
    print(f"rendered {sum(len(s['label']) for s in splits.values())} images in {time.time() - t0:.1f}s", flush=True)
    a.backbone = corpus_backbone(cfg, gen, 0)
    full, val, test = splits[0], splits[1], splits[2]
    summary: dict[tuple[str, str], list[dict]] = {}
    for view in a.views.split(","):
        keep = train_view(view, full["label"], full["group"])
        train = full if keep is None else {k: v[keep] for k, v in full.items()}
        majority = majority_groups(full["label"], full["group"])
        for name in a.methods.split(","):
            for seed in [int(v) for v in a.train_seeds.split(",")]:
                g, best = run_one(cfg, a, name, seed, train, val, test, majority, len(gen.classes) * len(gen.places))
                summary.setdefault((name, view), []).append(g)
                print(f"RESULT {name} view {view} seed {seed} best_epoch {best} "
                      f"worst {g['worst_group_acc']:.3f} mog {g['mean_group_acc']:.3f} "
                      f"groups {[round(v, 2) for v in g['per_group_acc']]}", flush=True)
    for (name, view), rows in summary.items():
        w, m = (np.array([r[k] for r in rows]) * 100 for k in ("worst_group_acc", "mean_group_acc"))
        print(f"SUMMARY {name} view {view} ratio {a.ratio if view == 'all' else 1.0} seeds {len(rows)} "
              f"worst {w.mean():.1f} ± {w.std():.1f} mog {m.mean():.1f} ± {m.std():.1f}", flush=True)


def run_one(cfg: Config, a: argparse.Namespace, name: str, seed: int, train: dict, val: dict, test: dict,
            majority: list[int], n_groups: int) -> tuple[dict, str]:
    """Train one method and seed with the pipeline's Trainer; (test group metrics, "best/run" epochs)."""
    base, _, weight = name.partition("@")
    spec = {**PRESETS[base], **({"weight": float(weight)} if weight else {})}
    c = cfg.model_copy(deep=True)
    c.train.methods[name] = MethodConfig(**spec)
    t1 = time.time()
    trainer = Trainer(c, name, 2, n_groups, -(-len(train["label"]) // a.bs), seed, backbone=a.backbone,
                      majority_groups=majority)
    fit(trainer, lambda e: iterate(train, a.bs, True, seed, e), lambda: iterate(val, 256, False),
        lambda _t, m: print(f"  {name} s{seed} epoch {m['epoch']}: loss {m['train_loss']:.3f} att "
                            f"{m['train_att']:.4f} val_bal {m['val_balanced_acc']:.3f}", flush=True))
    model = trainer.best_model()
    with torch.no_grad():
        pred = np.concatenate([model(prepare(b, a.size, torch.device("cpu"))["image"]).argmax(1).numpy()
                               for b in iterate(test, 256, False)])
    print(f"  {name} s{seed}: {time.time() - t1:.0f}s", flush=True)
    return group_metrics(pred, test["label"], test["group"], 2, n_groups), f"{trainer.best['epoch'] + 1}/{trainer.epoch}"


if __name__ == "__main__":
    main()
