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
    capture_as_leaf,
    channel_weights,
    gradcam,
    minmax_normalise,
    resolve_layer,
    saliency_head,
)
from paric.vlm.adapters import AdapterPair
from paric.vlm.factory import VLM
from paric.vlm.ggd import DEFAULT_GAMMA_DRAW, gamma_draw, keyed_uniforms, sample_ggd, sample_uniforms


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


@dataclass
class ScoreGraph:
    """A sampler's score columns and where their vector–Jacobian products start.

    ``values`` (B, P, n) are the scores; ``outputs`` are tensors that carry the graph from the
    Grad-CAM leaf, and ``cotangents[i]`` (P, n, *outputs[i].shape) holds each score column's
    gradient w.r.t. ``outputs[i]``. The plain form (:meth:`of`) starts at the scores themselves with
    one-hot cotangents; a sampler whose scores are elementwise in a few tensors can start below
    that part of the graph and spare every column's backward pass through it.
    """

    values: torch.Tensor
    outputs: tuple[torch.Tensor, ...]
    cotangents: tuple[torch.Tensor, ...]

    @classmethod
    def of(cls, scores: torch.Tensor) -> "ScoreGraph":
        """Scores (B, P, n) with the graph: column (p, j)'s cotangent is one at [:, p, j]."""
        B, P, n = scores.shape
        eye = torch.eye(P * n, dtype=scores.dtype, device=scores.device).view(P, n, 1, P, n)
        return cls(scores.detach(), (scores,), (eye.expand(P, n, B, P, n),))


def score_graph(sampler, emb: "ImageEmbedding", image_ids: list[str]) -> ScoreGraph:
    """The sampler's own :class:`ScoreGraph` when it has one, else the plain form of its scores."""
    own = getattr(sampler, "score_graph", None)
    return own(emb, image_ids) if own is not None else ScoreGraph.of(sampler.scores(emb, image_ids))


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

    def __init__(self, adapters: AdapterPair, K: int, seed: int, scale_by_norm: bool = False,
                 gamma: str = DEFAULT_GAMMA_DRAW) -> None:
        if K < 1:
            raise ValueError(f"sampled maps need K >= 1, got K={K}")
        self.adapters, self.n_scores, self.seed = adapters, K, seed
        #: ours, not PARIC's: each image sample times the tower's ‖v‖ (see :meth:`scores`)
        self.scale_by_norm = scale_by_norm
        #: how the GGD's gamma variate is drawn (``maps.gamma``, :data:`paric.vlm.ggd.GAMMA_DRAWS`)
        self.gamma, self.draw = gamma, gamma_draw(gamma)

    def setup(self, text: torch.Tensor, prompts: list[str], vlm: VLM | None = None) -> None:
        with torch.no_grad():
            mu, alpha, beta = self.adapters.text(text)
            d = mu.shape[-1]
            u = torch.stack(
                [torch.from_numpy(sample_uniforms(self.seed, f"text\x1f{p}", self.n_scores, d, self.draw.width,
                                                  self.draw.dtype))
                 for p in prompts]
            ).to(mu.device, mu.dtype)
            t = sample_ggd(mu[:, None], alpha[:, None], beta[:, None], u, self.gamma)
        self.text_samples = F.normalize(t, dim=-1)  # (P, K, d)

    def image_uniforms(self, image_ids: list[str], d: int) -> torch.Tensor:
        """(B, K, d, width) uniforms for the image samples, keyed by (seed, image_id)."""
        return torch.from_numpy(keyed_uniforms(self.seed, [f"image\x1f{i}" for i in image_ids], self.n_scores, d,
                                               self.draw.width, self.draw.dtype)).float()

    def scores(self, emb: ImageEmbedding, image_ids: list[str]) -> torch.Tensor:
        v = emb.v
        mu, alpha, beta = self.adapters.image(F.normalize(v, dim=-1))
        u = self.image_uniforms(image_ids, v.shape[-1]).to(v.device, v.dtype)
        z = sample_ggd(mu[:, None], alpha[:, None], beta[:, None], u, self.gamma)  # (B, K, d)
        if self.scale_by_norm:
            # The adapters read the unit-norm embedding, so the published score z·t is (near) a cosine,
            # whose gradient drops the component along v: the map of what t adds to the image, not of
            # where t is. Times ‖v‖, z ≈ v and the gradient is GALS' again (v·t̂, which GALS scales by
            # ‖v‖ too), with each sample's own deviation on top.
            z = z * v.norm(dim=-1)[:, None, None]
        return torch.einsum("bkd,pkd->bpk", z, self.text_samples)  # (B, P, K)

    def score_graph(self, emb: ImageEmbedding, image_ids: list[str]) -> ScoreGraph:
        """The scores of :meth:`scores`, with the VJP starting at the tower's embedding ``v``.

        Why: sample k's score reads only sample k, and a sample is elementwise in the adapter's
        (μ, α, β). Pushed through the sampler by autograd, every one of the P·K columns' backward
        passes runs the GGD's power and gamma gradients over all K samples, K − 1 of them zero. Here
        one backward pass over the K samples (batched over the P prompts) gives every column's
        gradient at (μ, α, β) at once; functorch's ``vmap`` then pulls the P·K columns through the
        adapter (and ‖v‖ for ``paric_norm``) to ``v`` in one batched pass, where the engine's
        batched VJP would loop over the columns for the adapter's softplus and clamps. The maps are
        the same floats as autograd's from the plain scores (tested bit for bit against :meth:`scores`).
        """
        v = emb.v
        K, t = self.n_scores, self.text_samples  # t: (P, K, d)
        P, B = t.shape[0], v.shape[0]

        def params(vv: torch.Tensor) -> tuple[torch.Tensor, ...]:
            mu, alpha, beta = self.adapters.image(F.normalize(vv, dim=-1))
            return (mu, alpha, beta, vv.norm(dim=-1)) if self.scale_by_norm else (mu, alpha, beta)

        with torch.enable_grad():
            values, pull = torch.func.vjp(params, v.detach())
        mu, alpha, beta = values[:3]
        norm = values[3] if self.scale_by_norm else None
        u = self.image_uniforms(image_ids, v.shape[-1]).to(v.device, v.dtype)
        # one leaf per sample and dimension, so each sample's gradient stays its own
        leaves = [x.detach()[:, None].expand(-1, K, -1).clone().requires_grad_(True) for x in (mu, alpha, beta)]
        with torch.enable_grad():
            z = sample_ggd(*leaves, u, self.gamma)  # (B, K, d)
        dz = t[:, None].expand(-1, B, -1, -1)  # (P, B, K, d): ∂(z·t_pk)/∂z_k
        if norm is not None:
            dz = dz * norm.detach()[:, None, None]
        grads = torch.autograd.grad(z, leaves, grad_outputs=dz, is_grads_batched=True)  # each (P, B, K, d)
        z = z.detach()
        # column (p, k) reads sample k only: (P, B, K, d) -> (P·K, B, d)
        cotangents = [g.transpose(1, 2).reshape(P * K, B, -1) for g in grads]
        if norm is not None:
            # ∂s_pk/∂‖v‖ = z_k·t_pk, (P·K, B)
            cotangents.append((t[:, :, None] * z.transpose(0, 1)[None]).sum(-1).reshape(P * K, B))
            z = z * norm.detach()[:, None, None]
        (dv,) = torch.func.vmap(pull)(tuple(cotangents))  # (P·K, B, D)
        scores = torch.einsum("bkd,pkd->bpk", z, t)
        return ScoreGraph(scores, (v,), (dv.reshape(P, K, *v.shape),))


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
        self.vjp = vjp
        self.text = vlm.encode_text(self.prompts)  # (P, d), unit norm
        for sampler in self.samplers:
            sampler.setup(self.text, self.prompts, vlm)

    def scores(self, images: torch.Tensor, image_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[ScoreGraph]]:
        """One forward pass -> (layer activations, gradient leaf, each sampler's :class:`ScoreGraph`).

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
            graphs = [score_graph(s, emb, image_ids) for s in self.samplers]
        return cap["acts"].detach(), leaf, graphs

    def gradients(self, graphs: list[ScoreGraph], leaf: torch.Tensor) -> torch.Tensor:
        """Every score column's gradient w.r.t. the leaf, (P·V, *leaf.shape) with V = Σ n_scores.

        ``batched``: one vector–Jacobian product for all columns (scores of different images do not
        interact: no batch statistics in eval mode); ``looped``: one backward pass per column (the
        reference it is tested against).
        """
        P = graphs[0].values.shape[1]
        V = sum(g.values.shape[2] for g in graphs)
        outputs, cotangents, start = [], [], 0
        for g in graphs:  # each sampler's cotangents in its own columns, zeros in the others'
            n = g.values.shape[2]
            for out, cot in zip(g.outputs, g.cotangents):
                full = cot.new_zeros(P, V, *out.shape)
                full[:, start:start + n] = cot
                outputs.append(out)
                cotangents.append(full.reshape(P * V, *out.shape))
            start += n
        if self.vjp == "batched":
            return torch.autograd.grad(outputs, leaf, grad_outputs=cotangents, is_grads_batched=True)[0]
        return torch.stack([torch.autograd.grad(outputs, leaf, grad_outputs=[c[j] for c in cotangents],
                                                retain_graph=True)[0] for j in range(P * V)])

    def __call__(self, images: torch.Tensor, image_ids: list[str]) -> list[torch.Tensor]:
        """Maps for normalised images (B, 3, H, W): one (B, n_scores, h, w) tensor per sampler, in [0, 1]."""
        if len(image_ids) != images.shape[0]:
            raise ValueError(f"{len(image_ids)} image ids for {images.shape[0]} images")
        acts, leaf, graphs = self.scores(images, image_ids)
        B, P, V = len(image_ids), graphs[0].values.shape[1], sum(g.values.shape[2] for g in graphs)
        grads = self.gradients(graphs, leaf)  # (P*V, B, ...)
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
        gamma: str = DEFAULT_GAMMA_DRAW,
    ):
        if adapters is None and K > 0:
            raise ValueError("K > 0 sampled maps need the probabilistic adapters")
        self.K = K
        samplers = [TextMatch()] + ([GGDSampler(adapters, K, seed, gamma=gamma)] if K > 0 else [])
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
