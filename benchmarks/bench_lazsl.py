"""Throughput of LaZSL's batched classifier against a per-image, per-class loop like the public code's.

The public LaZSL code scores one image at a time and, inside, loops over the classes in Python,
running one Sinkhorn per (image, class). Here every (image, class) problem of a batch is one
batched log-domain Sinkhorn on the device. Both use the same solver, settings and inputs, so the
ratio is the batching alone; the plans agree (checked below).

Prints images/s of each for the OT classifier alone (embeddings given) and end to end (the tower
encodes the global view and the crops: per image in the loop, per batch here), then
``ot_speedup=<x> end_to_end_speedup=<y>``. Random weights (timing does not depend on them);
the embedded size by default (paric-tiny-cnn at 64 px, 30 crops, 4 classes, 3–4 descriptors each).

    python benchmarks/bench_lazsl.py [--images 64] [--crops 30] [--classes 4] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from timing import best_time  # benchmarks/timing.py

from paric.data.descriptors import SHAPE_DESCRIPTORS, build
from paric.ot import sinkhorn_log
from paric.vlm.factory import load_vlm
from paric.zeroshot.evaluate import LazslScorer, encode_descriptors
from paric.zeroshot.lazsl import LazslConfig, classify, crop_boxes, crop_mass, crop_views


def looped_scores(g: torch.Tensor, r: torch.Tensor, t: torch.Tensor, valid: torch.Tensor,
                  cfg: LazslConfig) -> torch.Tensor:
    """The public code's shape: for each image, for each class, one Sinkhorn (B = 1) and its score."""
    out = torch.empty(len(g), len(t))
    for i in range(len(g)):
        a = crop_mass(g[i:i + 1], r[i:i + 1])  # (1, M)
        for c in range(len(t)):
            tc = t[c][valid[c]]
            fused = (1 - cfg.alpha) * (g[i] @ tc.T).unsqueeze(0) + cfg.alpha * (r[i] @ tc.T)  # (M, N_c)
            b = torch.full((1, len(tc)), 1.0 / len(tc))
            plan = sinkhorn_log((1 - fused).unsqueeze(0), a, b, cfg.eps, cfg.iters, cfg.tol)
            out[i, c] = (plan[0] * fused).sum()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--crops", type=int, default=30)
    p.add_argument("--classes", type=int, default=4, help="the first n of the shapes (4: the embedded corpus')")
    p.add_argument("--tower", default="paric-tiny-cnn")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: as each map actor runs; 2 threads "
                   "on a busy 2-core machine spin in OpenMP and slow the batched solver ~50×, measured)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vlm = load_vlm(args.tower)
    cfg = LazslConfig(crops=args.crops)
    classes = list(SHAPE_DESCRIPTORS)[: args.classes]
    desc = build(classes, SHAPE_DESCRIPTORS)
    t, valid = encode_descriptors(vlm, desc)
    S, n = vlm.image_size, args.images
    x = torch.randn(n, 3, S, S, generator=torch.Generator().manual_seed(1))
    ids = [f"img{i}" for i in range(n)]
    with torch.no_grad():
        g = vlm.model.encode_image(x, normalize=True)
        boxes = crop_boxes(ids, S, S, cfg.crops, 0, cfg.scale)
        r = vlm.model.encode_image(crop_views(x, boxes, S).flatten(0, 1), normalize=True).view(n, cfg.crops, -1)
        batched = classify(g, r, t, valid, cfg).scores
        looped = looped_scores(g, r, t, valid, cfg)
    err = float((batched - looped).abs().max())
    print(f"max |batched − looped| score: {err:.2e} ({n} images × {len(classes)} classes)")

    def ot_batched():
        with torch.no_grad():
            classify(g, r, t, valid, cfg)

    def ot_looped():
        with torch.no_grad():
            looped_scores(g, r, t, valid, cfg)

    scorer = LazslScorer(vlm, desc, cfg, 0)

    def e2e_batched():
        for s in range(0, n, 32):
            scorer(x[s:s + 32], ids[s:s + 32])

    def e2e_looped():
        with torch.no_grad():
            for i in range(n):
                gi = vlm.model.encode_image(x[i:i + 1], normalize=True)
                bi = crop_boxes(ids[i:i + 1], S, S, cfg.crops, 0, cfg.scale)
                ri = F.normalize(vlm.model.encode_image(crop_views(x[i:i + 1], bi, S)[0]), dim=-1)
                looped_scores(gi, ri.unsqueeze(0), t, valid, cfg)

    rates = {}
    for name, fn in (("ot batched", ot_batched), ("ot looped", ot_looped), ("end-to-end batched", e2e_batched),
                     ("end-to-end looped", e2e_looped)):
        rates[name] = n / best_time(fn, args.repeats)
        print(f"{name:>20}: {rates[name]:9.1f} images/s")
    print(f"ot_speedup={rates['ot batched'] / rates['ot looped']:.1f} "
          f"end_to_end_speedup={rates['end-to-end batched'] / rates['end-to-end looped']:.1f}")


if __name__ == "__main__":
    main()
