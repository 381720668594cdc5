"""What fusing the background swap's counterfactual forward with the image's would save: one
forward/backward of a batch of 2B against two of B, on the default classifier, one thread (as a
final run gets it). Prints milliseconds per step and the ratio:

    separate_ms=<two passes of B> fused_ms=<one pass of 2B> one_ms=<a plain step> fused_ratio=<fused / separate>

Why a benchmark and not the default: fused, batch-norm statistics mix the images with their
counterfactuals, which changes the method; the ratio says whether that is worth a re-measured table.

``--compile`` adds the two separate passes through ``torch.compile(model)`` (inductor on the CPU), and
prints its one-off compilation seconds (each final run is a process of its own and would pay it):

    compiled_ms=<two passes, compiled> compile_s=<first steps> compiled_ratio=<compiled / separate>

    python benchmarks/bench_swap_fused.py [--batch 32] [--size 32] [--width 16] [--steps 30] [--compile]
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
    p.add_argument("--compile", action="store_true", help="also time the separate passes under torch.compile")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = build_classifier("small_resnet", 2, "none", args.width, 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x, x_cf = (torch.rand(args.batch, 3, args.size, args.size, generator=g) for _ in range(2))

    def step(*batches: torch.Tensor, net: torch.nn.Module = model) -> None:
        sum(net(b).sum() for b in batches).backward()
        opt.step()
        opt.zero_grad()

    cases = {"separate": lambda: step(x, x_cf), "fused": lambda: step(torch.cat([x, x_cf])), "one": lambda: step(x)}
    if args.compile:
        compiled = torch.compile(model)
        cases["compiled"] = lambda: step(x, x_cf, net=compiled)
    best = {name: float("inf") for name in cases}
    warm = {}
    for name, f in cases.items():  # warm-up (the compiled case compiles here)
        t0 = time.perf_counter()
        for _ in range(5):
            f()
        warm[name] = time.perf_counter() - t0
    for _ in range(3):  # interleaved repeats, the best of each
        for name, f in cases.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                f()
            best[name] = min(best[name], (time.perf_counter() - t0) / args.steps * 1000)
    print(f"separate_ms={best['separate']:.1f} fused_ms={best['fused']:.1f} one_ms={best['one']:.1f} "
          f"fused_ratio={best['fused'] / best['separate']:.2f}")
    if args.compile:
        print(f"compiled_ms={best['compiled']:.1f} compile_s={warm['compiled']:.1f} "
              f"compiled_ratio={best['compiled'] / best['separate']:.2f}")


if __name__ == "__main__":
    main()
