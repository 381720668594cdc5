"""LICO (Lei et al., 2023; METHODS.md §6): language–image consistency as a training regulariser.

Learnable class prompts (CoOp: ``n_ctx`` context vectors per class, distinct at initialisation) run
through the *frozen* VLM text tower. Two terms align the classifier with them:

- manifold matching, L_MM = KL(A^G ‖ A^F), A = row-softmax(−D/τ) over the batch with the diagonal
  excluded, D the pairwise distances of L2-normalised features: A^F of the pooled feature maps,
  A^G (detached) of each image's class prompt feature;
- optimal transport between an image's C channel maps (HW-vectors) and its class's ``n_ctx``
  prompt features mapped to HW by an MLP, squared-Euclidean cost of the L2-normalised vectors,
  uniform marginals, log-domain Sinkhorn; L_OT = ⟨T, cost⟩ with the gradient flowing through the
  cost (the public code computes it under ``no_grad``, so it trains nothing). As the authors' code,
  the n_ctx prompt features are n_ctx whole prompts, the context rolled by j = 0 … n_ctx − 1, each
  pooled at its end-of-text token, so each sees the class name. (Until issue 28 they were the
  outputs at the context positions, which under the causal mask never see the class name: the OT
  targets of two different class-name sets were identical.)

What the public code does and this does not: softmax(+D/τ) with the diagonal, a learnable log τ
used without exp, A^G not detached, a trainable text tower, identical context copies. The text
branch is the regulariser's, not the classifier's: the exported model is unchanged.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from paric.ot import sinkhorn_log, uniform
from paric.regularizers.base import REGULARIZERS, Regularizer, RunContext, StepInputs


class LicoOptions(BaseModel):
    """LICO's own options (``train.methods.<m>.options``); weights as published (CE 1, MM 10, OT 1)."""

    model_config = ConfigDict(extra="forbid")
    w_mm: float = Field(10.0, ge=0, description="weight of the manifold-matching term")
    w_ot: float = Field(1.0, ge=0, description="weight of the optimal-transport term")
    n_ctx: int = Field(4, ge=1, description="learnable context tokens per class (the tiny VLM's context is 16)")
    tau: float = Field(1.0, gt=0, description="temperature of the affinity softmax (a fixed value, ours)")
    eps: float = Field(0.1, gt=0, description="Sinkhorn entropic regularisation")
    iters: int = Field(100, ge=1, description="Sinkhorn iterations at most")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout of the prompt MLP (published 0.5)")
    init_std: float = Field(0.02, gt=0, description="std of the context vectors at initialisation (CoOp)")


class FrozenTextTower:
    """An open_clip text transformer run on token embeddings (CoOp), frozen.

    Held outside the regulariser's module tree on purpose: its weights are never optimised,
    checkpointed or DDP-synced, and are moved to the device on first use.
    """

    def __init__(self, model: nn.Module) -> None:
        missing = [a for a in ("token_embedding", "positional_embedding", "transformer", "ln_final") if
                   not hasattr(model, a)]
        if missing:
            raise TypeError(f"LICO needs an open_clip CLIP text tower; {type(model).__name__} lacks {missing}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def to(self, device: torch.device) -> "FrozenTextTower":
        """Move once: every step calls this, and a module ``to`` walks all its tensors."""
        if self.model.positional_embedding.device != device:
            self.model.to(device)
        return self

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.token_embedding(tokens)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(C, L, width) token embeddings -> (C, L, embed_dim) per-token projected features."""
        m = self.model
        x = x + m.positional_embedding.to(x.dtype)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        proj = m.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


class PromptLearner(nn.Module):
    """CoOp prompts "X X … X {class}.": the X's embeddings are learnt per class."""

    def __init__(self, tower: FrozenTextTower, tokenizer: Any, class_names: list[str], n_ctx: int, init_std: float,
                 seed: int) -> None:
        super().__init__()
        texts = [" ".join(["X"] * n_ctx) + " " + name.replace("_", " ") + "." for name in class_names]
        tokens = tokenizer(texts)
        if int(tokens.argmax(-1).min()) < n_ctx + 2:
            raise ValueError(f"LICO: n_ctx={n_ctx} leaves no room for the class name in the text context "
                             f"({tokens.shape[-1]} tokens)")
        emb = tower.embed(tokens)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("prefix", emb[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", emb[:, 1 + n_ctx:].clone(), persistent=False)
        gen = torch.Generator().manual_seed(seed)
        self.ctx = nn.Parameter(torch.randn(len(class_names), n_ctx, emb.shape[-1], generator=gen) * init_std)
        self.n_ctx = n_ctx

    def sequences(self) -> torch.Tensor:
        """(C, n_ctx, L, width): prompt j of class c is "prefix, ctx_c rolled by j, class name, suffix"."""
        n = self.n_ctx
        rolled = torch.stack([self.ctx.roll(j, dims=1) for j in range(n)], dim=1)  # (C, n, n_ctx, width)
        C = len(self.ctx)
        return torch.cat([self.prefix[:, None].expand(C, n, -1, -1), rolled,
                          self.suffix[:, None].expand(C, n, -1, -1)], dim=2)

    def forward(self, tower: FrozenTextTower) -> tuple[torch.Tensor, torch.Tensor]:
        """(the n_ctx rolled prompts' features at their end token (C, n_ctx, D), the class feature: the
        unrolled prompt's (C, D))."""
        seq = self.sequences()
        C, n = seq.shape[:2]
        feats = tower(seq.flatten(0, 1))  # (C·n, L, D)
        eot = self.tokens.argmax(-1).repeat_interleave(n)
        pooled = feats[torch.arange(len(feats), device=feats.device), eot].view(C, n, -1)
        return pooled, pooled[:, 0]


def affinity(features: torch.Tensor, tau: float) -> torch.Tensor:
    """Row-log-softmax of −D/τ over the batch without the diagonal (log-probabilities, (B, B); the
    diagonal is −inf). D: Euclidean distances of the L2-normalised features."""
    z = F.normalize(features.flatten(1), dim=-1)
    d = torch.cdist(z, z)
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    return torch.log_softmax((-d / tau).masked_fill(eye, float("-inf")), dim=-1)


def manifold_matching(image: torch.Tensor, text: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(A^G ‖ A^F) averaged over the batch's rows; A^G (the text side) is a fixed target."""
    log_f, log_g = affinity(image, tau), affinity(text.detach(), tau)
    eye = torch.eye(len(image), dtype=torch.bool, device=image.device)
    kl = torch.where(eye, torch.zeros_like(log_f), log_g.exp() * (log_g - log_f))
    return kl.sum(-1).mean()


def transport_cost(maps: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean cost (B, C, n_ctx) between L2-normalised channel maps (B, C, HW) and mapped
    prompts (B, n_ctx, HW)."""
    a, b = F.normalize(maps, dim=-1), F.normalize(prompts, dim=-1)
    return (a.square().sum(-1, keepdim=True) + b.square().sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)
            ).clamp_min(0)


def ot_loss(maps: torch.Tensor, prompts: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Mean over the batch of ⟨T, cost⟩, T the entropic plan with uniform marginals; differentiable
    through the cost (and the unrolled Sinkhorn iterations)."""
    cost = transport_cost(maps, prompts)
    B, C, N = cost.shape
    plan = sinkhorn_log(cost, uniform((B,), C, cost), uniform((B,), N, cost), eps, iters)
    return (plan * cost).sum((-1, -2)).mean()


@REGULARIZERS.register("lico")
class Lico(Regularizer):
    """``lico``: CE + w_mm·L_MM + w_ot·L_OT (no reference map; the class prompts are the guidance)."""

    Options: ClassVar[type[BaseModel]] = LicoOptions
    needs_features: ClassVar[bool] = True
    needs_text: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False
    terms: ClassVar[tuple[str, ...]] = ("mm", "ot")
    cost: ClassVar[float] = 1.3
    version: ClassVar[int] = 2  # 2: the OT targets are the rolled prompts (issue 28)

    def __init__(self, options: LicoOptions, context: RunContext) -> None:
        super().__init__(1.0)
        if context.text_model is None or context.feature_shape is None:
            raise ValueError("lico: the run gives no text tower or feature shape (RunContext.text_model, "
                             "feature_shape); it trains inside the pipeline's Trainer")
        self.opts = options
        model, tokenizer = context.text_model()
        self.tower = FrozenTextTower(model)
        self.prompts = PromptLearner(self.tower, tokenizer, context.class_names, options.n_ctx, options.init_std,
                                     context.seed)
        with torch.no_grad():
            dim = self.prompts(self.tower)[1].shape[-1]
        _, h, w = context.feature_shape
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(options.dropout), nn.ReLU(), nn.Linear(dim, h * w))

    @classmethod
    def build(cls, m, context: RunContext | None = None) -> "Lico":
        context = context or RunContext()
        reg = cls(cls.options_of(m), context)
        reg.context = context
        return reg

    def forward(self, s: StepInputs) -> dict[str, torch.Tensor]:
        self.last = self.input_grad = None
        if s.features is None:
            raise ValueError("lico: the step carries no feature maps (needs_features)")
        self.tower.to(s.features.device)
        prompt_feats, pooled = self.prompts(self.tower)
        maps = s.features.flatten(2)  # (B, C, HW)
        mm = manifold_matching(maps.mean(-1), pooled[s.y], self.opts.tau)
        ot = ot_loss(maps, self.mlp(prompt_feats[s.y]), self.opts.eps, self.opts.iters)
        return {"mm": self.opts.w_mm * mm, "ot": self.opts.w_ot * ot}
