"""Reference attention maps from a VLM: GALS' deterministic Grad-CAM and PARIC's K sampled maps.

Why: this is the object the whole project regularises towards. Sample k of an image uses an
image-embedding sample drawn through the image adapter *from the tower's own output* (so image
uncertainty reaches the map, unlike the public PARIC code) and a text-embedding sample from the
text adapter; its randomness depends only on (seed, image_id, k).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from paric.attention.gradcam import (
    SaliencyLayer,
    batched_vjp,
    capture_as_leaf,
    channel_weights,
    gradcam,
    looped_vjp,
    minmax_normalise,
    resolve_layer,
    saliency_head,
)
from paric.vlm.adapters import AdapterPair
from paric.vlm.factory import VLM
from paric.vlm.ggd import sample_ggd, sample_uniforms


@dataclass
class MapBatch:
    """Maps for a batch of images, all in [0, 1] at the saliency grid resolution."""

    det: np.ndarray  # (B, h, w)
    samples: np.ndarray | None  # (B, K, h, w)
    mean: np.ndarray | None
    median: np.ndarray | None
    std: np.ndarray | None


def combine_prompts(maps: torch.Tensor) -> torch.Tensor:
    """(P, ..., h, w) normalised per-prompt maps -> mean of the non-zero ones, renormalised (GALS)."""
    nonzero = (maps.flatten(-2).amax(-1) > 0).to(maps.dtype)  # (P, ...)
    total = (maps * nonzero[..., None, None]).sum(0)
    count = nonzero.sum(0).clamp_min(1.0)
    return minmax_normalise(total / count[..., None, None])


#: how K sample maps (B, K, h, w) become one map, renormalised to [0, 1]: PARIC's mean and median
AGGREGATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda samples: minmax_normalise(samples.mean(1)),
    "median": lambda samples: minmax_normalise(torch.quantile(samples, 0.5, dim=1)),
}


def sample_spread(samples: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) sample maps -> the per-pixel std over the K samples (PARIC's uncertainty)."""
    return samples.std(1, unbiased=False)


def aggregate_samples(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, K, h, w) sample maps -> (mean, median) renormalised to [0,1], and per-pixel std."""
    return AGGREGATIONS["mean"](samples), AGGREGATIONS["median"](samples), sample_spread(samples)


@dataclass
class ImageEmbedding:
    """What the tower gives an embedding sampler: the projected embedding ``v`` (B, d), as CLIP's
    ``encode_image`` returns it, and for a probabilistic tower (ProLIP) its log σ² (B, d); both
    carry the graph from the Grad-CAM leaf."""

    v: torch.Tensor
    logvar: torch.Tensor | None = None


def embed_images(model: torch.nn.Module, images: torch.Tensor) -> ImageEmbedding:
    """The tower's output for the samplers: a ProLIP tower (``encode_image_dist``) gives its log σ²
    too, from the same forward pass."""
    if hasattr(model, "encode_image_dist"):
        v, logvar = model.visual(images)
        return ImageEmbedding(v, logvar)
    return ImageEmbedding(model.encode_image(images))


class TextMatch:
    """GALS' embedding side: the image embedding itself against each prompt, v·t̂_p (one score)."""

    n_scores = 1

    def setup(self, text: torch.Tensor, prompts: list[str], vlm: VLM | None = None) -> None:
        self.text = text  # (P, d), unit norm

    def scores(self, emb: ImageEmbedding, image_ids: list[str]) -> torch.Tensor:
        return (emb.v @ self.text.T)[..., None]  # (B, P, 1)


class GGDSampler:
    """PARIC's embedding side: K samples z_k of the image adapter's GGD at the tower's unit-norm
    output against K samples of the text adapter's GGD per prompt (z_k·t_{p,k}); sample k depends
    on (seed, image_id or prompt, k) only."""

    def __init__(self, adapters: AdapterPair, K: int, seed: int, scale_by_norm: bool = False) -> None:
        if K < 1:
            raise ValueError(f"sampled maps need K >= 1, got K={K}")
        self.adapters, self.n_scores, self.seed = adapters, K, seed
        #: ours, not PARIC's: each image sample times the tower's ‖v‖ (see :meth:`scores`)
        self.scale_by_norm = scale_by_norm

    def setup(self, text: torch.Tensor, prompts: list[str], vlm: VLM | None = None) -> None:
        with torch.no_grad():
            mu, alpha, beta = self.adapters.text(text)
            d = mu.shape[-1]
            u = torch.stack(
                [torch.from_numpy(sample_uniforms(self.seed, f"text\x1f{p}", self.n_scores, d)) for p in prompts]
            ).to(mu.device, mu.dtype)
            t = sample_ggd(mu[:, None], alpha[:, None], beta[:, None], u)
        self.text_samples = F.normalize(t, dim=-1)  # (P, K, d)

    def image_uniforms(self, image_ids: list[str], d: int) -> torch.Tensor:
        """(B, K, d, 2) uniforms for the image samples, keyed by (seed, image_id)."""
        return torch.from_numpy(
            np.stack([sample_uniforms(self.seed, f"image\x1f{i}", self.n_scores, d) for i in image_ids])
        ).float()

    def scores(self, emb: ImageEmbedding, image_ids: list[str]) -> torch.Tensor:
        v = emb.v
        mu, alpha, beta = self.adapters.image(F.normalize(v, dim=-1))
        u = self.image_uniforms(image_ids, v.shape[-1]).to(v.device, v.dtype)
        z = sample_ggd(mu[:, None], alpha[:, None], beta[:, None], u)  # (B, K, d)
        if self.scale_by_norm:
            # The adapters read the unit-norm embedding, so the published score z·t is (near) a cosine,
            # whose gradient drops the component along v: the map of what t adds to the image, not of
            # where t is. Times ‖v‖, z ≈ v and the gradient is GALS' again (v·t̂, which GALS scales by
            # ‖v‖ too), with each sample's own deviation on top.
            z = z * v.norm(dim=-1)[:, None, None]
        return torch.einsum("bkd,pkd->bpk", z, self.text_samples)  # (B, P, K)


class GradCamEngine:
    """Grad-CAM maps of a VLM's image tower for any number of score columns at once.

    Why one engine: GALS' map and PARIC's K sampled maps differ only in how the image embedding
    meets the prompts (an *embedding sampler*: :class:`TextMatch`, :class:`GGDSampler`, ProLIP's
    Gaussian next); one forward pass and one batched vector-Jacobian product serve every sampler's
    columns, so adding a sampler costs its columns, not another pass over the tower.
    """

    def __init__(self, vlm: VLM, prompts: list[str], samplers: list, layer: str = "auto",
                 vjp: Literal["batched", "looped"] = "batched") -> None:
        self.vlm, self.prompts, self.samplers = vlm, list(prompts), list(samplers)
        self.layer: SaliencyLayer = resolve_layer(vlm.model.visual, vlm.image_size, layer)
        self.head = saliency_head(vlm.model.visual, self.layer)
        self._vjp = batched_vjp if vjp == "batched" else looped_vjp
        self.text = vlm.encode_text(self.prompts)  # (P, d), unit norm
        for sampler in self.samplers:
            sampler.setup(self.text, self.prompts, vlm)

    def scores(self, images: torch.Tensor, image_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward pass -> (layer activations, gradient leaf, scores (B, P, Σ n_scores)).

        The leaf is the activations themselves, or for a [CLS] ViT (:class:`ClsHead`) or an avg-pooled
        CNN (:class:`PooledHead`) one offset per channel whose gradient gives the Grad-CAM weights.
        """
        visual = self.vlm.model.visual
        with torch.set_grad_enabled(self.head is None), capture_as_leaf(visual, self.layer) as cap:
            emb = embed_images(self.vlm.model, images)  # graph starts at the leaf
        leaf = cap["acts"]
        with torch.enable_grad():
            if self.head is not None:  # recompute only what reaches the output, from the offset
                leaf = self.head.offset(leaf)
                emb = ImageEmbedding(*self.head(cap, leaf))
            scores = torch.cat([s.scores(emb, image_ids) for s in self.samplers], dim=-1)
        return cap["acts"].detach(), leaf, scores

    def __call__(self, images: torch.Tensor, image_ids: list[str]) -> list[torch.Tensor]:
        """Maps for normalised images (B, 3, H, W): one (B, n_scores, h, w) tensor per sampler, in [0, 1]."""
        if len(image_ids) != images.shape[0]:
            raise ValueError(f"{len(image_ids)} image ids for {images.shape[0]} images")
        acts, leaf, scores = self.scores(images, image_ids)
        B, P, V = scores.shape
        grads = self._vjp(scores.reshape(B, P * V), leaf)  # (P*V, B, ...)
        weights = self.head.channel_weights(grads, acts) if self.head is not None else channel_weights(grads, self.layer)
        cams = gradcam(acts, weights, self.layer)  # (P*V, B, h, w)
        cams = minmax_normalise(cams).reshape(P, V, B, *self.layer.grid)
        maps = combine_prompts(cams).transpose(0, 1)  # (B, V, h, w)
        return list(maps.split([s.n_scores for s in self.samplers], dim=1))


class ReferenceMapper:
    """GALS' deterministic map and (with adapters) PARIC's K sampled maps of image batches: the
    engine with :class:`TextMatch` and :class:`GGDSampler` (the map sources ``gals`` and ``paric``
    in :mod:`paric.attention.sources` are the same two samplers)."""

    def __init__(
        self,
        vlm: VLM,
        prompts: list[str],
        adapters: AdapterPair | None = None,
        K: int = 0,
        seed: int = 0,
        layer: str = "auto",
        vjp: Literal["batched", "looped"] = "batched",
    ):
        if adapters is None and K > 0:
            raise ValueError("K > 0 sampled maps need the probabilistic adapters")
        self.K = K
        samplers = [TextMatch()] + ([GGDSampler(adapters, K, seed)] if K > 0 else [])
        self.engine = GradCamEngine(vlm, prompts, samplers, layer, vjp)
        self.layer = self.engine.layer

    def __call__(self, images: torch.Tensor, image_ids: list[str]) -> MapBatch:
        """Maps for normalised images (B, 3, H, W) with their ids."""
        maps = self.engine(images, image_ids)
        det = maps[0][:, 0].cpu().numpy()
        if self.K == 0:
            return MapBatch(det, None, None, None, None)
        mean, median, std = (t.cpu().numpy() for t in aggregate_samples(maps[1]))
        return MapBatch(det, maps[1].cpu().numpy(), mean, median, std)
