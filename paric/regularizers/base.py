"""What a regulariser sees at each step, and the interface all of them share.

Why one small interface: the training loop computes the forward pass once and hands each
regulariser exactly what it needs (input gradients, the classifier's features, the class names and
text embeddings of its run); adding LICO or another regulariser means one module and its
``@REGULARIZERS.register`` line, not another training loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from paric.models.classifier import Classifier
from paric.registry import NoOptions, Registry
from paric.regularizers.reference import Reference

if TYPE_CHECKING:
    from paric.config import MethodConfig


@dataclass
class StepInputs:
    """One training step's tensors. ``x`` requires grad when the regulariser asks for it."""

    model: Classifier
    x: torch.Tensor  # (B, 3, H, W) in [0, 1]
    y: torch.Tensor  # (B,)
    logits: torch.Tensor  # (B, C)
    features: torch.Tensor | None  # (B, C', h, w) at the model's cam_layer
    ce: torch.Tensor  # (B,) per-sample cross-entropy (already class/group weighted)
    ref: Reference | None
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # the (possibly DDP-wrapped) model's forward


@dataclass
class RunContext:
    """What a regulariser may ask of its run beyond one batch.

    ``class_names`` are the dataset's classes in label order; ``text_features`` and ``text_model``
    load (on first call, so runs that never ask pay nothing) the frozen text tower's embeddings of
    those classes and the tower itself, for regularisers with ``needs_text`` (LICO's text branch).
    """

    class_names: list[str] = field(default_factory=list)
    text_features: Callable[[], torch.Tensor] | None = None
    #: the frozen VLM (open_clip model, tokenizer), loaded when called (``needs_text``)
    text_model: Callable[[], tuple[nn.Module, Any]] | None = None
    #: (C, h, w) of the classifier's feature map at its CAM layer (set by the trainer)
    feature_shape: tuple[int, int, int] | None = None
    seed: int = 0


class Regularizer(nn.Module):
    """A loss term added to the classification loss, as named terms: ``{"att": λ·L_att}`` here, a
    regulariser with several parts returns each (``terms`` names them; the trainer logs every term
    as ``train_<name>`` and adds them all to the loss).

    An ``nn.Module``, so a regulariser may own parameters (a projection head, a learned prompt): the
    trainer optimises them with the model, checkpoints them and wraps them for DDP. Capability flags
    tell the trainer what to compute: ``needs_input_grad`` (x requires grad), ``needs_features`` (the
    classifier's feature map at its CAM layer), ``needs_text`` (``context.text_features``).

    Subclasses of this attention base give ``per_image`` (B,) values; the term is λ times their mean
    over the images that have a reference. The last call's per-image values (``last``) and, for
    input-gradient regularisers, its input gradient (``input_grad``) are kept detached for the
    training diagnostics; both are reset at every call, so a skipped step never reports a stale one.
    """

    #: the regulariser's own options (``MethodConfig.options``), validated at config load time; a new
    #: regulariser declares its options here instead of adding fields to ``MethodConfig``
    Options: ClassVar[type[BaseModel]] = NoOptions
    needs_input_grad: ClassVar[bool] = False
    needs_features: ClassVar[bool] = False
    needs_text: ClassVar[bool] = False
    #: whether the method must name a reference map (``MethodConfig.reference``)
    needs_reference: ClassVar[bool] = True
    #: the names of the terms ``forward`` returns (logged every epoch, zero when a step skips them)
    terms: ClassVar[tuple[str, ...]] = ("att",)
    #: relative cost of a training step with this term (1 = a plain step): final runs start costliest first
    cost: ClassVar[float] = 1.0
    #: the classifier it trains (``paric.models.classifier.build_classifier``): ``plain``, or ``abn`` (the
    #: attention branch network, whose branch loss is the regulariser's term)
    architecture: ClassVar[str] = "plain"
    #: bumped when the loss (or its architecture) changes form: its runs' cache keys change with it, so a
    #: run trained with the old form is retrained, not reused (0: the key as before versions existed)
    version: ClassVar[int] = 0

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight
        self.context = RunContext()
        self.last: torch.Tensor | None = None
        self.input_grad: torch.Tensor | None = None

    @classmethod
    def from_method(cls, m: "MethodConfig") -> "Regularizer":
        """Build from a method's config (subclasses read their own keys)."""
        return cls(m.weight)

    @classmethod
    def options_of(cls, m: "MethodConfig") -> BaseModel:
        """The method's ``options`` as this regulariser's Options model."""
        return cls.Options.model_validate(m.options)

    @classmethod
    def build(cls, m: "MethodConfig", context: RunContext | None = None) -> "Regularizer":
        """``from_method`` with the run's context attached."""
        reg = cls.from_method(m)
        reg.context = context or RunContext()
        return reg

    def per_image(self, s: StepInputs) -> torch.Tensor:
        """L_att of each image (B,)."""
        raise NotImplementedError

    def penalty(self, s: StepInputs) -> torch.Tensor:
        """L_att for the batch (a scalar); images without a valid reference contribute zero."""
        per = self.per_image(s)
        self.last = per.detach()
        return masked_mean(per, s.ref.valid)

    def zeros(self, s: StepInputs) -> dict[str, torch.Tensor]:
        return {name: s.logits.new_zeros(()) for name in self.terms}

    def forward(self, s: StepInputs) -> dict[str, torch.Tensor]:
        self.last = self.input_grad = None
        if self.weight == 0 or s.ref is None or not bool(s.ref.valid.any()):
            return self.zeros(s)
        return {"att": self.weight * self.penalty(s)}


def total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of a regulariser's terms: what is added to the loss."""
    return torch.stack(list(terms.values())).sum()


#: regularizer name (``MethodConfig.regularizer``) -> its class; a class joins with ``@REGULARIZERS.register``
REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """``none`` (and ``upweight``, whose change is in the CE weights): no attention term."""

    needs_reference: ClassVar[bool] = False

    def __init__(self, weight: float = 0.0) -> None:
        super().__init__(0.0)


def masked_mean(per_image: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the images that have a reference; zero (with grad) when none has."""
    v = valid.to(per_image.dtype)
    return (per_image * v).sum() / v.sum().clamp_min(1.0)


def norm_of(t: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-image mean |t| (l1) or mean t² (l2) over all but the batch dim."""
    return (t.abs() if kind == "l1" else t.square()).flatten(1).mean(1)
