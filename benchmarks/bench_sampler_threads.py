"""The K sampled maps with their two serial elementwise steps split over torch's threads, against the same
steps in one call (issue 31): dG/dconc (torch's serial ``_standard_gamma_grad``) and the keyed uniforms
(numpy's Philox streams, one per image). The values are the same either way
(``tests/test_ggd.py::test_threaded_helpers_give_the_serial_values_bit_for_bit``).

Paired and interleaved in one process (the two variants alternate, in alternating order, round by round),
because this machine's timings drift by more than the difference between separate runs. Random weights;
the default tower, K = 32, the maps stage's batch of 64. Prints the median and best milliseconds per batch,
then  threaded_over_serial=<median of the per-round ratios>  sampled_over_det=<threaded, median>.

    python benchmarks/bench_sampler_threads.py [--tower paric-tiny-cnn16] [--K 32] [--batch 64] [--rounds 20]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import paric.attention.reference as reference
import paric.vlm.ggd as ggd
from timing import mappers  # benchmarks/timing.py

THREADED = {"gamma_grad": ggd.standard_gamma_grad, "uniforms": reference.keyed_uniforms}
SERIAL = {
    "gamma_grad": lambda conc, g, min_chunk=0: torch._standard_gamma_grad(conc, g),
    "uniforms": lambda seed, keys, k, dim, width=2, dtype=np.float64: np.stack(
        [ggd.sample_uniforms(seed, key, k, dim, width, dtype) for key in keys]),
}


def use(steps: dict) -> None:
    ggd.standard_gamma_grad, reference.keyed_uniforms = steps["gamma_grad"], steps["uniforms"]


def seconds(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tower", default="paric-tiny-cnn16")
    ap.add_argument("--K", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    det, sampled, x, ids = mappers(args.tower, args.K, args.batch)
    det(x, ids), sampled(x, ids)  # warm-up
    t: dict[str, list[float]] = {"det": [], "threaded": [], "serial": []}
    for r in range(args.rounds):
        t["det"].append(seconds(lambda: det(x, ids)))
        for name in (("threaded", "serial") if r % 2 else ("serial", "threaded")):
            use(THREADED if name == "threaded" else SERIAL)
            t[name].append(seconds(lambda: sampled(x, ids)))
    use(THREADED)
    ms = {k: 1000 * np.array(v) for k, v in t.items()}
    print(f"torch threads: {torch.get_num_threads()}, {args.tower}, K={args.K}, batch={args.batch}, {args.rounds} rounds")
    for k, v in ms.items():
        print(f"{k:9s} median {np.median(v):7.1f} ms  best {v.min():7.1f} ms")
    print(f"threaded_over_serial={np.median(ms['threaded'] / ms['serial']):.3f} "
          f"sampled_over_det={np.median(ms['threaded'] / ms['det']):.2f}")


if __name__ == "__main__":
    main()
