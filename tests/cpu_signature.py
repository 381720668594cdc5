"""What decides whether two CPUs compute the same floats: the CPU model, the vector ISA torch
dispatches to, and the torch build. Used to tell a regression from another machine's rounding."""
from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_signature() -> dict[str, str]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
    return {"cpu": model or platform.processor(), "isa": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__.split("+")[0], "machine": platform.machine()}
