"""Compute precision of the two training loops (the VLM's pretraining, a classifier run).

Why an option and not the default: on a CPU with native bfloat16 (AVX512_BF16, AMX) autocast runs the
convolutions far faster (``benchmarks/bench_bf16.py``: a VLM step 0.54×, a background-swap step 0.71–0.73×
on an AMD EPYC with AVX512_BF16), while a CPU without it emulates them, and every trained number changes.
Weights, optimiser state, losses and evaluation stay float32: only the forward passes (and their
backward) of the towers and the classifier run in the lower precision.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

#: precision name (``vlm.pretrain.precision``, ``train.precision``) -> autocast dtype (None: float32 as is)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def autocast(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def float_forward(forward: Callable[[torch.Tensor], torch.Tensor], precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` run under ``precision``'s autocast, its output back in float32 (losses and
    regularisers then compute in float32); ``forward`` itself for fp32."""
    if PRECISIONS[precision] is None:
        return forward

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast(precision, x.device):
            return forward(x).float()

    return run
