"""``abn``: the Attention Branch Network's training loss (Fukui et al., 2019; GALS' attention baseline).

ABN trains two heads on one network: the perception branch (the classifier's output, whose CE the
trainer already has) and the attention branch, whose own CE is this term, so the loss is
L_att + L_per as the paper's (``weight`` 1). The classifier is built with the branch
(``architecture = "abn"``, :mod:`paric.models.abn`); no reference map, no group labels.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from paric.regularizers.base import REGULARIZERS, Regularizer, StepInputs


@REGULARIZERS.register("abn")
class ABN(Regularizer):
    needs_reference: ClassVar[bool] = False
    architecture: ClassVar[str] = "abn"
    terms: ClassVar[tuple[str, ...]] = ("branch",)
    cost: ClassVar[float] = 1.3  # the branch: a stage of layer4's blocks on the stage-3 features
    version: ClassVar[int] = 2  # 2: Fukui et al.'s branch (issue 28)

    def forward(self, s: StepInputs) -> dict[str, torch.Tensor]:
        self.last = self.input_grad = None
        logits, _map = s.model.take_attention()
        if self.weight == 0:
            return self.zeros(s)
        return {"branch": self.weight * F.cross_entropy(logits, s.y)}
