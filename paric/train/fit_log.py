"""One log line per epoch, the same from the plain loop and from Ray Train workers."""
from __future__ import annotations


def epoch_line(method: str, seed: int, m: dict) -> str:
    return (f"[train] {method} s{seed} epoch {m.get('epoch')}: loss {m.get('train_loss', 0):.4f} "
            f"att {m.get('train_att', 0):.4f} val_bal {m.get('val_balanced_acc', 0):.3f} "
            f"({m.get('train_seconds', 0):.1f}s)")
