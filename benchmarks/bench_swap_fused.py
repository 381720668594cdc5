"""What fusing the background swap's counterfactual forward with the image's would save: one
forward/backward of a batch of 2B against two of B, on the default classifier, one thread (as a
final run gets it). Prints milliseconds per step and the ratio:

    separate_ms=<two passes of B> fused_ms=<one pass of 2B> one_ms=<a plain step> fused_ratio=<fused / separate>

Why a benchmark and not the default: fused, batch-norm statistics mix the images with their
counterfactuals, which changes the method; the ratio says whether that is worth a re-measured table.

    python benchmarks/bench_swap_fused.py [--batch 32] [--size 32] [--width 16] [--steps 30]
"""
from __future__ import annotations

import argparse
import time

import torch

from paric.models.classifier import build_classifier


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = build_classifier("small_resnet", 2, "none", args.width, 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x, x_cf = (torch.rand(args.batch, 3, args.size, args.size, generator=g) for _ in range(2))

    def step(*batches: torch.Tensor) -> None:
        sum(model(b).sum() for b in batches).backward()
        opt.step()
        opt.zero_grad()

    cases = {"separate": lambda: step(x, x_cf), "fused": lambda: step(torch.cat([x, x_cf])), "one": lambda: step(x)}
    best = {name: float("inf") for name in cases}
    for f in cases.values():  # warm-up
        for _ in range(5):
            f()
    for _ in range(3):  # interleaved repeats, the best of each
        for name, f in cases.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                f()
            best[name] = min(best[name], (time.perf_counter() - t0) / args.steps * 1000)
    print(f"separate_ms={best['separate']:.1f} fused_ms={best['fused']:.1f} one_ms={best['one']:.1f} "
          f"fused_ratio={best['fused'] / best['separate']:.2f}")


if __name__ == "__main__":
    main()
