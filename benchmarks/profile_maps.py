"""Where the K sampled maps' time goes on the default tower (torch.profiler, CPU), beside one
deterministic map: the lead for issue 31's "K maps at about the price of one".

Prints the profiler's operator table for five batches of K sampled maps, then the seconds per
batch of the deterministic and the sampled maps and their ratio (random weights: timing does not
depend on them).

    python benchmarks/profile_maps.py [--tower paric-tiny-cnn16] [--K 32] [--batch 8]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from timing import mappers  # benchmarks/timing.py

from paric.attention.reference import ReferenceMapper


def per_batch(mapper: ReferenceMapper, x: torch.Tensor, ids: list[str], repeats: int = 5) -> float:
    t = time.perf_counter()
    for _ in range(repeats):
        mapper(x, ids)
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tower", default="paric-tiny-cnn16")
    ap.add_argument("--K", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    det, sampled, x, ids = mappers(args.tower, args.K, args.batch)
    for _ in range(3):  # warm-up
        det(x, ids)
        sampled(x, ids)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        per_batch(sampled, x, ids)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    t_det, t_k = per_batch(det, x, ids), per_batch(sampled, x, ids)
    print(f"{args.tower}: det {1000 * t_det:.1f} ms, K={args.K} {1000 * t_k:.1f} ms per batch of {args.batch}; "
          f"sampled_over_det={t_k / t_det:.2f}")


if __name__ == "__main__":
    main()
