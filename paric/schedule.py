"""Learning-rate schedule shared by every training loop here: linear warm-up, then cosine decay."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, base_lr: float) -> float:
    """LR at ``step`` (0-based) of ``total``: linear ramp over ``warmup`` steps, cosine to 0 after."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))
