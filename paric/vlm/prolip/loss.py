"""ProLIP's objectives (METHODS.md §4): PPCL, the inclusion loss and the VIB prior term.

Why our own and not the public code's: that code normalises the inclusion precisions with an
eps of −20, zeroes the term above 1e5, and uses σ where the KL needs σ²; here each term is its
closed form (checked against independent computations in tests/test_prolip_loss.py).

Reductions, since the published weights (1e-7, 1e-3, 1e-4) were tuned for them:
- PPCL: the sum over all B² pairs divided by B (the code's SigLIP form; the paper writes a mean).
- inclusion: the mean over B×D elements (paper and code).
- original ⊂ masked: the image and the text terms *added* (the code), not averaged.
- VIB: the KL's mean over B×D elements per tower, the two towers *added* (the code). Summed over D
  and averaged over towers, as before issue 28, it was D/2 = 64× stronger at D = 128, and set the σ²
  the ``prolip`` sampler draws from.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: the reductions below, in the vlm stage's cache key (a VLM pretrained with another form is retrained)
LOSS_FORM = "prolip-loss:vib-mean-towers-added:masked-added"

Dist = tuple[torch.Tensor, torch.Tensor]  # (μ (B, D), log σ² (B, D))


def csd(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Pairwise closed-form sampled distance (B1, B2): ‖μ1 − μ2‖² + Σ_d (σ²1 + σ²2) = E‖z1 − z2‖²."""
    return torch.cdist(mu1, mu2).pow(2) + logvar1.exp().sum(-1)[:, None] + logvar2.exp().sum(-1)[None, :]


def ppcl_logits(mu_v: torch.Tensor, logvar_v: torch.Tensor, mu_t: torch.Tensor, logvar_t: torch.Tensor,
                logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
    """ℓ_ij = s·(μv_i·μt_j − ½ Σ_d (σ²v_i + σ²t_j)) + b, s = exp(logit_scale): (B, B)."""
    half = 0.5 * (logvar_v.exp().sum(-1)[:, None] + logvar_t.exp().sum(-1)[None, :])
    return logit_scale.exp() * (mu_v @ mu_t.T - half) + logit_bias


def ppcl_loss(mu_v: torch.Tensor, logvar_v: torch.Tensor, mu_t: torch.Tensor, logvar_t: torch.Tensor,
              logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
    """SigLIP-style Σ_ij −log σ(y_ij ℓ_ij) / B with y = +1 on the diagonal, −1 elsewhere."""
    logits = ppcl_logits(mu_v, logvar_v, mu_t, logvar_t, logit_scale, logit_bias)
    y = 2 * torch.eye(len(logits), dtype=logits.dtype, device=logits.device) - 1
    return -F.logsigmoid(y * logits).sum() / len(logits)


def inclusion_score(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Per-dimension I(1⊂2) (B, D): with u = 1/σ², a = u1 + ½u2, b = 2μ1u1 + μ2u2, c = μ1²u1 + ½μ2²u2,
    I = −2 log σ²1 − log σ²2 − ½ log a + b²/(4a) − c. The exponent is written as the completed square
    −(u1·½u2/a)(μ1 − μ2)², which equals b²/(4a) − c without the cancellation of two large terms."""
    u1, u2 = (-logvar1).exp(), (-logvar2).exp()
    a = u1 + 0.5 * u2
    quad = -(u1 * 0.5 * u2 / a) * (mu1 - mu2).pow(2)
    return -2 * logvar1 - logvar2 - 0.5 * torch.log(a) + quad


def inclusion_loss(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor,
                   kappa: float = 1000.0) -> torch.Tensor:
    """Mean over B×D of −log σ(κ (I(1⊂2) − I(2⊂1))): pushes Z1 to be included in Z2."""
    diff = inclusion_score(mu1, logvar1, mu2, logvar2) - inclusion_score(mu2, logvar2, mu1, logvar1)
    return -F.logsigmoid(kappa * diff).mean()


def vib_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per element, ½ (σ² + μ² − 1 − log σ²), averaged over B×D (the
    published reduction, for which the weight 1e-4 was tuned)."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).mean()


@dataclass(frozen=True)
class ProlipLossWeights:
    inclusion_image_text: float = 1e-7
    inclusion_masked: float = 1e-3
    vib: float = 1e-4
    kappa: float = 1000.0


def prolip_loss(img: Dist, txt: Dist, logit_scale: torch.Tensor, logit_bias: torch.Tensor,
                weights: ProlipLossWeights, masked_img: Dist | None = None, masked_txt: Dist | None = None,
                masked_index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """PPCL + w·(image ⊂ its own caption) + w·(original ⊂ masked copy, image + text; ``masked_index``
    are the originals' rows of the copies) + w·(VIB of the image tower + VIB of the text tower)."""
    ppcl = ppcl_loss(*img, *txt, logit_scale, logit_bias)
    incl_it = inclusion_loss(*img, *txt, kappa=weights.kappa)
    incl_m = ppcl.new_zeros(())
    if masked_img is not None and masked_txt is not None and masked_index is not None:
        i = masked_index
        incl_m = (inclusion_loss(img[0][i], img[1][i], *masked_img, kappa=weights.kappa)
                  + inclusion_loss(txt[0][i], txt[1][i], *masked_txt, kappa=weights.kappa))
    vib = vib_loss(*img) + vib_loss(*txt)
    total = ppcl + weights.inclusion_image_text * incl_it + weights.inclusion_masked * incl_m + weights.vib * vib
    return {"loss": total, "ppcl": ppcl, "incl_image_text": incl_it, "incl_masked": incl_m, "vib": vib}
