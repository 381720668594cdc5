"""Shared by the benchmark scripts (run as ``python benchmarks/<script>.py``: this folder is on sys.path)."""
from __future__ import annotations

import time
from typing import Callable


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls after one warm-up call, in seconds (the least disturbed run)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved_best(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` calls of each function, calling them in turn (one warm-up each first).

    Why: on a shared 2-core VM the machine's speed drifts over seconds; timing one function's repeats
    after another's puts the drift into their ratio (the same build measured 1.73× and 2.02× one map
    that way), while rounds of one call each expose every function to the same spells.
    """
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def mappers(tower: str, K: int, batch: int):
    """(one-map mapper, K-sample mapper, images, ids) on ``tower`` with random weights and fresh adapters (timing
    does not depend on the weights): what the map benchmarks compare."""
    import torch

    from paric.attention.reference import ReferenceMapper
    from paric.config import AdapterConfig
    from paric.vlm.adapters import build_adapters
    from paric.vlm.factory import load_vlm

    torch.manual_seed(0)
    vlm = load_vlm(tower)
    adapters = build_adapters(vlm.encode_text(["x"]).shape[1], AdapterConfig()).eval()
    x = torch.randn(batch, 3, vlm.image_size, vlm.image_size)
    ids = [f"img{i}" for i in range(batch)]
    prompts = ["a photo of a bird"]
    return ReferenceMapper(vlm, prompts), ReferenceMapper(vlm, prompts, adapters, K=K), x, ids
