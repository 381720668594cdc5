"""PARIC's K embedding samples drawn from ProLIP's own Gaussians instead of the GGD adapters.

Why a sampler of the shared Grad-CAM engine: the K maps then cost one forward pass and one batched
VJP, as for the adapters. The image sample z_k = μ + σ ⊙ ε_k is reparameterised through the tower's
μ and log σ², so image uncertainty reaches the Grad-CAM gradient; ε_k comes from the same
(seed, image_id, k) Philox stream as the adapters' samples (common random numbers across samplers).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from paric.attention.reference import ImageEmbedding
from paric.vlm.factory import VLM
from paric.vlm.ggd import sample_uniforms


def gaussian_noise(seed: int, key: str, k: int, dim: int) -> np.ndarray:
    """(k, dim) standard normals by the inverse CDF of the (seed, key) uniforms: row j is the same
    whatever k is."""
    from scipy.special import ndtri

    return ndtri(sample_uniforms(seed, key, k, dim)[..., 0])


class ProlipSampler:
    """K samples of the image Gaussian against K samples of each prompt's Gaussian: z_k·t_{p,k}."""

    def __init__(self, K: int, seed: int) -> None:
        if K < 1:
            raise ValueError(f"sampled maps need K >= 1, got K={K}")
        self.n_scores, self.seed = K, seed

    def setup(self, text: torch.Tensor, prompts: list[str], vlm: VLM | None = None) -> None:
        if vlm is None or not hasattr(vlm.model, "encode_text_dist"):
            raise ValueError("map source 'prolip' needs a ProLIP VLM (vlm.family=prolip)")
        device = text.device
        with torch.no_grad():
            dist = vlm.model.encode_text_dist(vlm.tokenizer(prompts).to(device))
        eps = self._noise("text", prompts, text.shape[-1]).to(device, text.dtype)
        self.text_samples = dist.mean[:, None] + (0.5 * dist.logvar).exp()[:, None] * eps  # (P, K, d)

    def _noise(self, kind: str, keys: list[str], dim: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([gaussian_noise(self.seed, f"{kind}\x1f{k}", self.n_scores, dim)
                                          for k in keys]))

    def samples(self, emb: ImageEmbedding, image_ids: list[str]) -> torch.Tensor:
        """(B, K, d) image samples around the unit-norm μ, with the graph through μ and log σ²."""
        if emb.logvar is None:
            raise ValueError("map source 'prolip' needs a ProLIP tower's log σ² (vlm.family=prolip)")
        mu = F.normalize(emb.v, dim=-1)
        eps = self._noise("image", image_ids, mu.shape[-1]).to(mu.device, mu.dtype)
        return mu[:, None] + (0.5 * emb.logvar).exp()[:, None] * eps

    def scores(self, emb: ImageEmbedding, image_ids: list[str]) -> torch.Tensor:
        return torch.einsum("bkd,pkd->bpk", self.samples(emb, image_ids), self.text_samples)  # (B, P, K)
