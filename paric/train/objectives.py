"""How a batch's per-sample cross-entropies become the classification loss: ERM's mean, or Group
DRO's online worst-group weighting (Sagawa et al., 2020).

Why a registry beside the regularisers: Group DRO changes the classification loss itself, not an
added term, and keeps state (the group weights q) that must be checkpointed with the run; a new
objective (CVaR DRO, …) is one class here and its ``@OBJECTIVES.register`` line.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from paric.registry import NoOptions, PluginOptions, Registry

if TYPE_CHECKING:
    from paric.config import MethodConfig


class Objective(nn.Module):
    """``forward(ce (B,), group (B,))`` -> the scalar loss. An ``nn.Module`` so its state is checkpointed."""

    #: which group labels the objective reads during training (the methods table's column)
    group_labels: ClassVar[Literal["none", "training"]] = "none"
    #: the objective's own options (``MethodConfig.objective_options``), validated at config load time
    Options: ClassVar[type[BaseModel]] = NoOptions

    @classmethod
    def build(cls, m: "MethodConfig", group_counts: list[int]) -> "Objective":
        return cls()

    @classmethod
    def options_of(cls, m: "MethodConfig") -> BaseModel:
        """The method's ``objective_options`` as this objective's Options model."""
        return cls.Options.model_validate(m.objective_options)

    def forward(self, ce: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


#: ``MethodConfig.objective`` -> its class
OBJECTIVES: Registry[type[Objective]] = Registry("objective")


@OBJECTIVES.register("erm")
class ERM(Objective):
    """Empirical risk: the mean (class- or group-weighted when the method balances) cross-entropy."""

    def forward(self, ce: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        return ce.mean()


class GroupDROOptions(PluginOptions):
    """Group DRO's options (before issue 29: the method keys ``dro_eta``, ``dro_adjust``)."""

    eta: float = Field(0.01, gt=0, description="step size η of the group weights")
    adjust: float = Field(0.0, ge=0, description="generalisation adjustment C (C/√n_g added to each group's "
                          "loss in the weight update)")


@OBJECTIVES.register("group_dro")
class GroupDRO(Objective):
    """Online Group DRO (Sagawa et al., Algorithm 1 with the generalisation adjustment):

    ℓ_g = mean CE of the batch's group-g samples (0 when the batch has none);
    q_g ← q_g · exp(η (ℓ_g + C / √n_g)), then q ← q / Σq (no gradient through q);
    loss = Σ_g q_g ℓ_g,

    n_g the group's training count. As the authors' code, a group absent from the batch still has
    its weight multiplied by exp(η C / √n_g).
    """

    group_labels = "training"
    Options = GroupDROOptions

    def __init__(self, group_counts: list[int], eta: float, adjust: float) -> None:
        super().__init__()
        counts = torch.tensor(group_counts, dtype=torch.float32)
        self.eta = eta
        self.register_buffer("q", torch.full((len(group_counts),), 1.0 / len(group_counts)))
        self.register_buffer("adjustment", torch.where(counts > 0, adjust / counts.clamp_min(1).sqrt(),
                                                       torch.zeros_like(counts)))

    @classmethod
    def build(cls, m: "MethodConfig", group_counts: list[int]) -> "GroupDRO":
        if not group_counts:
            raise ValueError("objective group_dro needs the training split's group counts (Trainer group_counts)")
        opts = cls.options_of(m)
        return cls(group_counts, opts.eta, opts.adjust)

    def group_losses(self, ce: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(group, len(self.q)).to(ce.dtype)  # (B, G)
        return (onehot * ce.unsqueeze(1)).sum(0) / onehot.sum(0).clamp_min(1.0)

    def forward(self, ce: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        losses = self.group_losses(ce, group)
        with torch.no_grad():
            q = self.q * torch.exp(self.eta * (losses.detach() + self.adjustment))
            self.q.copy_(q / q.sum())
        return (self.q * losses).sum()


def group_labels(m: "MethodConfig") -> Literal["none", "validation", "training"]:
    """Which group labels a method uses: in training (Group DRO, group balancing), on validation only
    (DFR's last-layer data, JTT's selection, or worst-group selection), or none (GALS' setting)."""
    if m.balance == "group" or m.sampling == "group_balanced" or OBJECTIVES.get(m.objective).group_labels == "training":
        return "training"
    if m.posthoc != "none" or m.two_stage != "none" or m.selection == "worst_group":
        return "validation"
    return "none"


def selects_on_groups(m: "MethodConfig") -> bool:
    """Whether the best epoch is chosen by worst-group validation accuracy: ``selection: auto`` follows
    the methods table's column (any group label used)."""
    if m.selection == "auto":
        return group_labels(m) != "none"
    return m.selection == "worst_group"
