"""A decoy the attention loss must remove (RRR's decoy-MNIST protocol on real handwritten digits).

Why: the embedded benchmark's validity rests on the oracle being able to help; this is the
smallest case of the same property. In training a coloured corner patch gives the label away; at
test time its colour is swapped. Vanilla training reads the patch; the default attention loss with
the digit's region as the reference (everything but the patch) must not.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from paric.config import Config, MethodConfig
from paric.eval.groups import group_metrics
from paric.train.data import iterate, prepare
from paric.train.loop import Trainer, fit

SIZE = 16
DIGITS = (3, 8)


def decoy_digits(swap: bool, seed: int) -> dict[str, np.ndarray]:
    """uint8 (N, 16, 16, 3) digits with a label-coloured 4×4 corner patch, masks of the rest."""
    d = load_digits()
    keep = np.isin(d.target, DIGITS)
    x, y = d.images[keep] / 16.0, (d.target[keep] == DIGITS[1]).astype(np.int64)
    rng = np.random.default_rng(seed)
    n = len(y)
    img = np.zeros((n, SIZE, SIZE, 3), np.float32)
    big = np.kron(x, np.ones((1, 1, 1)))[:, :, :, None]  # (n, 8, 8, 1)
    big = big.repeat(2, axis=1).repeat(2, axis=2)[:, :12, :12]  # 16 -> crop 12 px of the digit
    img[:, 4:16, 4:16] = big * rng.uniform(0.6, 1.0, (n, 1, 1, 3))
    patch_class = (1 - y) if swap else y
    colours = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1]], np.float32)
    img[:, :4, :4] = colours[patch_class][:, None, None]
    mask = np.ones((n, SIZE, SIZE), np.uint8)
    mask[:, :4, :4] = 0
    group = y * 2 + patch_class  # (class, decoy colour): test groups are all "minority"
    return {"image": (img * 255).round().astype(np.uint8), "label": y, "group": group, "mask": mask}


def _train_and_test(method: dict) -> float:
    cfg = Config.model_validate({
        "classifier": {"arch": "small_resnet", "weights": "none", "width": 8, "image_size": SIZE},
        "train": {"epochs": 6, "batch_size": 32, "lr": 0.02, "flip": False, "num_workers": 0,
                  "methods": {"m": method}, "method": "m", "compare": ["m"]}})
    train, test = decoy_digits(False, 0), decoy_digits(True, 1)
    n = len(train["label"])
    idx = np.random.default_rng(0).permutation(n)
    tr = {k: v[idx[: n * 3 // 4]] for k, v in train.items()}
    va = {k: v[idx[n * 3 // 4:]] for k, v in train.items()}
    trainer = Trainer(cfg, "m", 2, 4, (len(tr["label"]) + 31) // 32, seed=0)
    fit(trainer, lambda e: iterate(tr, 32, True, 0, e), lambda: iterate(va, 256, False))
    model = trainer.model.eval()  # the last epoch: validation shares the decoy, so it cannot select
    with torch.no_grad():
        pred = torch.cat([model(prepare(b, SIZE, torch.device("cpu"))["image"]).argmax(1)
                          for b in iterate(test, 256, False)]).numpy()
    return group_metrics(pred, test["label"], None, 2)["acc"]


def test_attention_loss_removes_a_decoy_that_vanilla_learns():
    torch.set_num_threads(1)
    vanilla = _train_and_test({})
    oracle = _train_and_test(MethodConfig(regularizer="background_swap", weight=1.0,
                                          reference="oracle").model_dump())
    assert vanilla < 0.6, f"vanilla should read the decoy (swapped at test): acc {vanilla:.3f}"
    assert oracle > vanilla + 0.3 and oracle > 0.85, f"oracle {oracle:.3f} vs vanilla {vanilla:.3f}"
