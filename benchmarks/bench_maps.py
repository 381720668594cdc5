"""Cost of PARIC's K sampled Grad-CAM maps relative to one deterministic (GALS) map.

Prints, per tower, time(K sampled maps) / time(1 deterministic map) with the gradients of all
K scores from one batched vector–Jacobian product ("batched") and from one backward pass per
sample ("naive"). Random weights (timing does not depend on them). Towers: the embedded
default (paric-tiny-cnn16, 16×16 grid at 64 px), the 8×8 paric-tiny-cnn, the earlier ModifiedResNet and ViT tiny towers, and ViT-B-32 at 224 px.
ProLIP rows (``--prolip``, issue 15): its K maps from the tower's own Gaussians against its one
deterministic map, on ProLIP towers (paric/vlm/prolip/configs; ViT-B-16 is the published shape at 224 px).
Batched rows use the default rejection gamma draw; the inverse-CDF draw (``maps.gamma=inverse``, scipy's
``gammaincinv``: the samples before issue 31) is timed beside it.
Last line, for the last CLIP tower (ViT-B-32 by default):  batched_over_det=<x> naive_over_det=<y> inverse_over_det=<z>;
then for the last ProLIP tower:  prolip_batched_over_det=<x>  (goal ≤ 1.5 at K = 32 on ViT-B-16)

    python benchmarks/bench_maps.py [--K 32] [--batch 8] [--repeats 3] [--towers NAME ...] [--prolip NAME ...]
"""
from __future__ import annotations

import argparse

import torch

from timing import best_time, interleaved_best  # benchmarks/timing.py

from paric.attention.reference import GradCamEngine, ReferenceMapper, TextMatch
from paric.config import AdapterConfig
from paric.vlm.adapters import build_adapters
from paric.vlm.factory import VLM, VLMLoadError, frozen, load_vlm
from paric.vlm.prolip.factory import SIGLIP_MEAN, SIGLIP_STD, build_prolip, load_prolip, model_config
from paric.attention.prolip_sampler import ProlipSampler

PROMPTS = ["a photo of a bird"]


def measure(name: str, K: int, batch: int, repeats: int) -> tuple[float, float, float, float]:
    """Seconds per batch: one map, K maps (batched VJP, the default rejection draw), K maps with one
    backward per sample, and K maps with the inverse-CDF gamma draw (``maps.gamma=inverse``)."""
    torch.manual_seed(0)
    vlm = load_vlm(name)
    adapters = build_adapters(vlm.encode_text(["x"]).shape[1], AdapterConfig()).eval()
    x = torch.randn(batch, 3, vlm.image_size, vlm.image_size)
    ids = [f"img{i}" for i in range(batch)]
    det = ReferenceMapper(vlm, PROMPTS)
    fast = ReferenceMapper(vlm, PROMPTS, adapters, K=K)
    slow = ReferenceMapper(vlm, PROMPTS, adapters, K=K, vjp="looped")
    inverse = ReferenceMapper(vlm, PROMPTS, adapters, K=K, gamma="inverse")
    t = interleaved_best({"det": lambda: det(x, ids), "fast": lambda: fast(x, ids), "slow": lambda: slow(x, ids),
                          "inverse": lambda: inverse(x, ids)}, repeats)
    return t["det"], t["fast"], t["slow"], t["inverse"]


def offline_tokens(name: str) -> VLM:
    """The ProLIP tower (random weights) with a stand-in tokenizer: every prompt is token 1 then
    padding. Its SigLIP tokenizer is not here offline, and the prompt does not change the timing."""
    ctx = model_config(name)["text_cfg"]["context_length"]

    def tokens(texts: list[str]) -> torch.Tensor:
        t = torch.zeros(len(texts), ctx, dtype=torch.long)
        t[:, 0] = 1
        return t

    model = frozen(build_prolip(name))
    return VLM(model, tokens, name, "random", int(model.visual.image_size), SIGLIP_MEAN, SIGLIP_STD)


def measure_prolip(name: str, K: int, batch: int, repeats: int) -> tuple[float, float, float]:
    torch.manual_seed(0)
    try:
        vlm = load_prolip(name)
    except VLMLoadError:  # the published shape's SigLIP tokenizer is not here offline; the prompt's tokens
        vlm = offline_tokens(name)  # do not change the timing of random weights
    x = torch.randn(batch, 3, vlm.image_size, vlm.image_size)
    ids = [f"img{i}" for i in range(batch)]
    det = GradCamEngine(vlm, PROMPTS, [TextMatch()])
    fast = GradCamEngine(vlm, PROMPTS, [ProlipSampler(K, 0)])
    slow = GradCamEngine(vlm, PROMPTS, [ProlipSampler(K, 0)], vjp="looped")
    return (best_time(lambda: det(x, ids), repeats), best_time(lambda: fast(x, ids), repeats),
            best_time(lambda: slow(x, ids), repeats))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--K", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--towers", nargs="+", default=["paric-tiny-cnn16", "paric-tiny-cnn", "paric-tiny-rn", "paric-tiny-vit", "ViT-B-32"],
                   help="open_clip model names; the last one gives the final line")
    p.add_argument("--prolip", nargs="*", default=["paric-tiny-cnn", "ViT-B-16"],
                   help="ProLIP config names (paric/vlm/prolip/configs); the last one gives the prolip line")
    args = p.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, K={args.K}, batch={args.batch}")
    result = None
    for name in args.towers:
        t_det, t_fast, t_slow, t_inv = measure(name, args.K, args.batch, args.repeats)
        result = (t_fast / t_det, t_slow / t_det, t_inv / t_det)
        print(f"{name:16s} det {t_det * 1e3:8.1f} ms  batched {t_fast * 1e3:8.1f} ms ({result[0]:.2f}x)  "
              f"naive {t_slow * 1e3:8.1f} ms ({result[1]:.2f}x)  inverse-CDF draw {t_inv * 1e3:8.1f} ms "
              f"({result[2]:.2f}x)")
    print(f"batched_over_det={result[0]:.2f} naive_over_det={result[1]:.2f} inverse_over_det={result[2]:.2f}")
    pro = None
    for name in args.prolip:
        t_det, t_fast, t_slow = measure_prolip(name, args.K, args.batch, args.repeats)
        pro = t_fast / t_det
        print(f"prolip {name:9s} det {t_det * 1e3:8.1f} ms  batched {t_fast * 1e3:8.1f} ms ({pro:.2f}x)  "
              f"naive {t_slow * 1e3:8.1f} ms ({t_slow / t_det:.2f}x)")
    if pro is not None:
        print(f"prolip_batched_over_det={pro:.2f}")


if __name__ == "__main__":
    main()
