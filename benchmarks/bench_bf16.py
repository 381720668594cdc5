"""What bfloat16 autocast would save on this CPU: one training step of the default VLM (image and text
towers, open_clip's ClipLoss, both threads, batch 128 at 64 px) and of the default classifier's
background-swap step (two forward/backward passes of batch 32 at 32 px, one thread, as a final run
gets it), in float32 and under ``torch.autocast("cpu", torch.bfloat16)``, interleaved, best of three:

    vlm_fp32_s=<s> vlm_bf16_s=<s> vlm_ratio=<bf16 / fp32>
    swap_fp32_ms=<ms> swap_bf16_ms=<ms> swap_ratio=<bf16 / fp32>

Why: the two stages are 90 % of the default run's compute, and a CPU with native bfloat16 (AVX512_BF16,
AMX) runs its convolutions far faster; one without it emulates them. ``vlm.pretrain.precision`` and
``train.precision`` (``paric.precision``) apply it; the trained numbers change (docs/results.md).

    python benchmarks/bench_bf16.py [--steps 5]
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import open_clip
import torch
from open_clip.loss import ClipLoss

from paric.models.classifier import build_classifier
from paric.vlm.factory import build_model


def best_of(cases: dict[str, Callable[[], None]], steps: int, repeats: int = 3) -> dict[str, float]:
    """Seconds per step of each case: warmed up, then interleaved repeats, the best of each."""
    for f in cases.values():
        for _ in range(2):
            f()
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, f in cases.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                f()
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)

    torch.set_num_threads(2)
    vlm = build_model("paric-tiny-cnn16", 0).train()
    images = torch.randn(128, 3, 64, 64, generator=g)
    tokens = open_clip.get_tokenizer("paric-tiny-cnn16")([f"a photo of shape {i}" for i in range(128)])
    loss_fn = ClipLoss()

    def vlm_step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            img = vlm.encode_image(images, normalize=True).float()
            txt = vlm.encode_text(tokens, normalize=True).float()
        loss_fn(img, txt, vlm.logit_scale.exp()).backward()
        vlm.zero_grad(set_to_none=True)

    t = best_of({"fp32": lambda: vlm_step(False), "bf16": lambda: vlm_step(True)}, args.steps)
    print(f"vlm_fp32_s={t['fp32']:.3f} vlm_bf16_s={t['bf16']:.3f} vlm_ratio={t['bf16'] / t['fp32']:.2f}")

    torch.set_num_threads(1)
    clf = build_classifier("small_resnet", 2, "none", 16, 0).train()
    x, x_cf = (torch.rand(32, 3, 32, 32, generator=g) for _ in range(2))

    def swap_step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = clf(x).float().logsumexp(1).mean() + clf(x_cf).float().logsumexp(1).mean()
        loss.backward()
        clf.zero_grad(set_to_none=True)

    t = best_of({"fp32": lambda: swap_step(False), "bf16": lambda: swap_step(True)}, args.steps * 6)
    print(f"swap_fp32_ms={t['fp32'] * 1000:.1f} swap_bf16_ms={t['bf16'] * 1000:.1f} "
          f"swap_ratio={t['bf16'] / t['fp32']:.2f}")


if __name__ == "__main__":
    main()
