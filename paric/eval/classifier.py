"""One classifier's evaluation suite: accuracy and group metrics, calibration, robustness, and
where its own Grad-CAM falls relative to the object mask, and how faithful that Grad-CAM is
(insertion / deletion AUC).

Takes prepared batches (images in [0, 1]) so it is the same with or without Ray.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from paric.config import EvalConfig
from paric.eval.calibration import expected_calibration_error, negative_log_likelihood
from paric.eval.faithfulness import gradcam_faithfulness, protocol
from paric.eval.groups import group_metrics
from paric.eval.map_quality import energy_in_mask
from paric.eval.robustness import fgsm, pgd
from paric.models.cam import classifier_gradcam
from paric.models.classifier import Classifier

EvalBatch = dict[str, torch.Tensor]  # image (B,3,H,W) float, label, group, optional mask (B,H,W)


def evaluate_classifier(model: Classifier, batches: Iterable[EvalBatch], n_classes: int, n_groups: int,
                        cfg: EvalConfig, robustness: bool = True,
                        extra_metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None) -> dict:
    """All metrics for one split. Robust accuracy uses the first ``cfg.adv_max_images`` images;
    ``extra_metrics(labels, predicted classes)`` adds the dataset's own (a format's paper metrics:
    :func:`paric.data.formats.dataset_metrics`)."""
    model.eval()
    logits, ys, groups, energies = [], [], [], []
    adv_seen, adv_correct = 0, {}
    faith: list[tuple[torch.Tensor, torch.Tensor]] = []  # (image, label) for insertion / deletion
    for b in batches:
        x, y = b["image"], b["label"]
        with torch.no_grad():
            out = model(x)
        logits.append(out.cpu())
        ys.append(y.cpu())
        groups.append(b["group"].cpu())
        if "mask" in b:
            with torch.enable_grad():
                _, cam = classifier_gradcam(model, x, y)
            energies.append(energy_in_mask(cam.detach().cpu().numpy(), b["mask"].cpu().numpy()))
        if len(faith) < cfg.faith_max_images:
            faith.extend(zip(x[:cfg.faith_max_images - len(faith)], y))
        if robustness and adv_seen < cfg.adv_max_images:
            take = min(len(y), cfg.adv_max_images - adv_seen)
            xa, ya = x[:take], y[:take]
            with torch.enable_grad():
                for eps in cfg.fgsm_eps:
                    pred = model(fgsm(model, xa, ya, eps)).argmax(1)
                    adv_correct[f"fgsm_acc_eps{eps:.4f}"] = adv_correct.get(f"fgsm_acc_eps{eps:.4f}", 0) + int((pred == ya).sum())
                for eps in cfg.pgd_eps:
                    pred = model(pgd(model, xa, ya, eps, cfg.pgd_steps, seed=adv_seen)).argmax(1)
                    adv_correct[f"pgd_acc_eps{eps:.4f}"] = adv_correct.get(f"pgd_acc_eps{eps:.4f}", 0) + int((pred == ya).sum())
            adv_seen += take
    lg = torch.cat(logits).double().numpy()
    y = torch.cat(ys).numpy()
    g = torch.cat(groups).numpy()
    probs = torch.softmax(torch.from_numpy(lg), 1).numpy()
    out = group_metrics(lg.argmax(1), y, g, n_classes, n_groups)
    out.update(ece=expected_calibration_error(probs, y, cfg.ece_bins), nll=negative_log_likelihood(lg, y), n=int(len(y)))
    for key, c in adv_correct.items():
        out[key] = c / adv_seen
    if cfg.fgsm_eps and adv_seen:
        out["fgsm_acc"] = out[f"fgsm_acc_eps{cfg.fgsm_eps[0]:.4f}"]
    if cfg.pgd_eps and adv_seen:
        out["pgd_acc"] = out[f"pgd_acc_eps{cfg.pgd_eps[0]:.4f}"]
    if energies:
        out["cam_energy_in_mask"] = float(np.nanmean(np.concatenate(energies)))
    if faith:
        out.update(_faithfulness(model, faith, cfg))
    if extra_metrics is not None:
        out.update(extra_metrics(y, lg.argmax(1)))
    return out


def _faithfulness(model: Classifier, items: list[tuple[torch.Tensor, torch.Tensor]], cfg: EvalConfig,
                  batch: int = 64) -> dict[str, float]:
    """Mean insertion and deletion AUC of the model's Grad-CAM; deletion fills with these images' mean colour."""
    x = torch.stack([i for i, _ in items])
    y = torch.stack([t for _, t in items])
    mean = x.mean((0, 2, 3))
    ins, dele = [], []
    for s in range(0, len(x), batch):
        a, b = gradcam_faithfulness(model, x[s:s + batch], y[s:s + batch], mean, cfg.faith_steps, cfg.faith_blur)
        ins.append(a.cpu())
        dele.append(b.cpu())
    i, d = float(torch.cat(ins).mean()), float(torch.cat(dele).mean())
    return {"insertion_auc": i, "deletion_auc": d, "faithfulness": i - d,
            "faith_protocol": protocol(x.shape[-1], cfg.faith_steps, cfg.faith_blur, len(x))}
