"""Why PARIC's sampled maps localise worse than GALS' map on the embedded VLM: the same Grad-CAM at the
same layer for five ways of scoring an image against the prompts, on a pipeline's trained VLM and
adapters (its output directory), scored against the object masks of a split.

- ``det``: GALS, s = v·t̂ (v the tower's output, unnormalised);
- ``adapter_mu``: the image adapter's mean at the unit-norm embedding against the text adapter's mean,
  μ(v̂)·μ(t̂), no noise;
- ``paric``: PARIC's K samples as the pipeline draws them (the published form), their mean map;
- ``tower_centred``: the same noise around v̂ itself instead of μ(v̂);
- ``paric_norm``: PARIC's samples times ‖v‖ (the ``paric_norm`` source).

If ``adapter_mu`` ≈ ``paric`` ≈ ``tower_centred`` < ``det`` ≈ ``paric_norm``, the loss of localisation
comes from scoring a unit-norm embedding, not from the noise or from the adapter's mean.

    python benchmarks/sample_maps.py outputs/default [--split test] [--n 600]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from paric.attention.reference import GGDSampler, GradCamEngine, ImageEmbedding, TextMatch, aggregate_samples
from paric.catalog import load_config
from paric.data import WaterbirdsDataset
from paric.eval.map_quality import summarise
from paric.vlm.adapters import AdapterPair, load_adapters
from paric.vlm.families import VLM_FAMILIES
from paric.vlm.ggd import sample_ggd


class AdapterMean:
    """μ_image(v̂)·μ_text(t̂): the adapters' means, no sample."""

    n_scores = 1

    def __init__(self, adapters: AdapterPair) -> None:
        self.adapters = adapters

    def setup(self, text: torch.Tensor, prompts: list[str], vlm=None) -> None:
        with torch.no_grad():
            self.text = self.adapters.text(text)[0]

    def scores(self, emb: ImageEmbedding, image_ids: list[str]) -> torch.Tensor:
        return (self.adapters.image(F.normalize(emb.v, dim=-1))[0] @ self.text.T)[..., None]


class TowerCentred(GGDSampler):
    """PARIC's noise (the adapters' α, β and the same uniforms) around v̂ instead of μ(v̂)."""

    def scores(self, emb: ImageEmbedding, image_ids: list[str]) -> torch.Tensor:
        v = F.normalize(emb.v, dim=-1)
        _, alpha, beta = self.adapters.image(v)
        u = self.image_uniforms(image_ids, v.shape[-1]).to(v.device, v.dtype)
        z = sample_ggd(v[:, None], alpha[:, None], beta[:, None], u, self.gamma)
        return torch.einsum("bkd,pkd->bpk", z, self.text_samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", type=Path, help="a pipeline run's output directory (its config.resolved.yaml)")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=600, help="images (the first n of the split)")
    args = p.parse_args()
    out = args.output_dir
    cfg = load_config(out / "config.resolved.yaml", [f"run.output_dir={out}"])
    vlm = VLM_FAMILIES[cfg.vlm.family].load(cfg.vlm, pretrained=None, checkpoint=out / "vlm" / "clip" / "model.pt")
    pair = load_adapters(out / "vlm" / "adapters" / "adapters.pt").eval()
    K, seed = cfg.maps.K, cfg.maps.seed
    g = cfg.maps.gamma
    samplers = {"det": TextMatch(), "adapter_mu": AdapterMean(pair), "paric": GGDSampler(pair, K, seed, gamma=g),
                "tower_centred": TowerCentred(pair, K, seed, gamma=g), "paric_norm": GGDSampler(pair, K, seed, True, g)}
    engine = GradCamEngine(vlm, cfg.vlm.prompts, list(samplers.values()), layer=cfg.vlm.saliency_layer)
    ds = WaterbirdsDataset(cfg.data_root(), args.split, image_size=vlm.image_size, with_masks=True)
    n = min(args.n, len(ds))
    items = [ds[i] for i in range(n)]
    maps: dict[str, list[np.ndarray]] = {k: [] for k in samplers}
    spread: dict[str, list[float]] = {k: [] for k in samplers}
    for b in range(0, n, 50):
        batch = items[b:b + 50]
        x = vlm.normalise(torch.from_numpy(np.stack([it["image"] for it in batch])))
        for name, m in zip(samplers, engine(x, [it["image_id"] for it in batch])):
            mean, _, std = aggregate_samples(m)
            maps[name].append(mean.numpy())
            spread[name].append(float(std.mean()))
    masks = np.stack([it["mask"] for it in items])
    summary = summarise({k: np.concatenate(v) for k, v in maps.items()}, masks)
    summary["pixel_std"] = {k: float(np.mean(v)) for k, v in spread.items()}
    print(f"{cfg.vlm.name}, layer {engine.layer.path} {engine.layer.grid}, K={K}, {n} {args.split} images")
    for k in samplers:
        print(f"{k:14s} energy-in-mask {summary['energy_in_mask'][k]:.3f}  pointing game "
              f"{summary['pointing_game'][k]:.3f}  mean per-pixel std of the K maps {summary['pixel_std'][k]:.4f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
