"""The framework-free training loop: one method (objective, loss weighting, attention regulariser)
on one classifier, checkpointable at every epoch, selecting the best epoch by class-balanced
validation accuracy (no group labels, as GALS), or by worst-group validation accuracy for a method
that uses group labels (:func:`selection_metric`).

Ray Train calls the same :class:`Trainer` from each worker (``paric/stages/train.py``); here it
knows nothing about Ray, so it is tested and usable as plain PyTorch.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from paric.config import Config, MethodConfig, TrainConfig
from paric.eval.groups import group_metrics
from paric.models.cam import forward_with_features
from paric.models.classifier import Classifier, build_classifier
from paric.precision import float_forward
from paric.regularizers import REGULARIZERS, RunContext, StepInputs, build_reference, build_regularizer, total
from paric.schedule import warmup_cosine
from paric.train.data import prepare
from paric.train.objectives import OBJECTIVES, selects_on_groups

Batch = dict[str, torch.Tensor]


#: every this many steps a method whose loss has no input gradient computes ∂CE/∂x for the diagnostics
DIAG_EVERY = 10


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf: a run (or sweep trial) with too high a learning rate or weight."""


class Trainer:
    """Model, optimiser, schedule and best-epoch bookkeeping of one run."""

    def __init__(self, cfg: Config, method_name: str, n_classes: int, n_groups: int, steps_per_epoch: int,
                 seed: int, class_weights: torch.Tensor | None = None, backbone: dict | None = None,
                 device: torch.device | str = "cpu", wrap: Callable[[nn.Module], nn.Module] | None = None,
                 majority_groups: list[int] | None = None, context: RunContext | None = None,
                 group_counts: list[int] | None = None) -> None:
        self.cfg, self.method_name = cfg, method_name
        self.method: MethodConfig = cfg.method(method_name)
        self.n_classes, self.n_groups, self.seed = n_classes, n_groups, seed
        self.device = torch.device(device)
        c = cfg.classifier
        arch_kind = REGULARIZERS.get(self.method.regularizer).architecture  # ABN brings its own branch
        self.model: Classifier = build_classifier(c.arch, n_classes, c.weights if c.weights == "imagenet" else "none",
                                                  c.width, seed, arch_kind)
        if backbone is not None:
            self.load_backbone(backbone)
        self.model.to(self.device)
        self.forward_model = wrap(self.model) if wrap else self.model  # e.g. DDP; hooks use self.model
        check_precision(cfg.train.precision, method_name, self.method.regularizer)
        self.forward_model = float_forward(self.forward_model, cfg.train.precision)  # itself for fp32
        self.regularizer = build_regularizer(self.method, self._context(context)).to(self.device)
        own = list(self.regularizer.parameters())  # a regulariser's own parameters train with the model
        self.forward_reg = wrap(self.regularizer) if wrap and own else self.regularizer
        self.class_weights = class_weights.to(self.device) if class_weights is not None else None
        self.objective = OBJECTIVES.get(self.method.objective).build(self.method, list(group_counts or [])).to(
            self.device)
        t = cfg.train
        lr = self.method.lr or t.lr
        head = list(self.model.head.parameters())
        head_ids = {id(p) for p in head}
        body = [p for p in self.model.parameters() if id(p) not in head_ids]
        groups = [{"params": body, "lr": lr, "base_lr": lr},
                  {"params": head, "lr": t.head_lr or lr, "base_lr": t.head_lr or lr}]
        if own:
            groups.append({"params": own, "lr": lr, "base_lr": lr})
        wd = t.weight_decay if self.method.weight_decay is None else self.method.weight_decay
        if t.optimizer == "sgd":
            self.opt = torch.optim.SGD(groups, lr=lr, momentum=t.momentum, weight_decay=wd)
        else:
            self.opt = torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = self.steps_per_epoch * t.epochs
        self.warmup = int(round(t.warmup_epochs * self.steps_per_epoch))
        self.step, self.epoch = 0, 0
        self.history: list[dict] = []
        self.best: dict = {"score": -math.inf, "epoch": -1, "metrics": {}, "state": None}
        self.flip_gen = torch.Generator().manual_seed(seed)
        self.resumed_at: list[int] = []  # epochs at which a checkpoint was restored (after failures)
        self.majority = torch.tensor(majority_groups, device=self.device) if majority_groups else None
        self.diag: dict[str, list] = {}  # this epoch's diagnostic sums: name -> [sum (tensor), count]

    # ---------------------------------------------------------------- state
    def _context(self, context: RunContext | None) -> RunContext:
        """The run's context, completed with what only the trainer knows: the seed and, for a
        regulariser that reads features, their shape (one dry forward of a blank image)."""
        ctx = dataclasses.replace(context or RunContext(), seed=self.seed)
        if REGULARIZERS.get(self.method.regularizer).needs_features:
            size = self.cfg.classifier.image_size
            was = self.model.training
            self.model.eval()
            with torch.no_grad():
                _, feats = forward_with_features(self.model, torch.zeros(1, 3, size, size, device=self.device))
            self.model.train(was)
            ctx.feature_shape = tuple(feats.shape[1:])
        return ctx

    def load_backbone(self, state: dict) -> None:
        """Load pretrained weights except the final layer (its classes differ)."""
        own = self.model.state_dict()
        keep = {k: v for k, v in state.items() if k in own and not k.startswith("net.fc.") and v.shape == own[k].shape}
        # the final layer's classes differ; an attention branch (ABN) is new
        missing = [k for k in own if k not in keep and not k.startswith(("net.fc.", "branch."))]
        if missing:
            raise ValueError(f"backbone checkpoint does not fit classifier.arch={self.cfg.classifier.arch} "
                             f"width={self.cfg.classifier.width}: missing {missing[:3]}")
        self.model.load_state_dict(keep, strict=False)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "regularizer": self.regularizer.state_dict(),
                "objective": self.objective.state_dict(),
                "opt": self.opt.state_dict(), "step": self.step,
                "epoch": self.epoch, "history": self.history, "best": self.best,
                "flip_gen": self.flip_gen.get_state(), "resumed_at": self.resumed_at}

    def load_state_dict(self, s: dict) -> None:
        self.model.load_state_dict(s["model"])
        self.regularizer.load_state_dict(s.get("regularizer", {}))
        self.objective.load_state_dict(s.get("objective", {}))
        self.opt.load_state_dict(s["opt"])
        self.step, self.epoch, self.history, self.best = s["step"], s["epoch"], s["history"], s["best"]
        self.flip_gen.set_state(s["flip_gen"])
        self.resumed_at = [*s.get("resumed_at", []), self.epoch]

    def best_model(self) -> Classifier:
        """A copy of the classifier at its best validation epoch."""
        m = copy.deepcopy(self.model)
        if self.best["state"] is not None:
            m.load_state_dict(self.best["state"])
        return m.eval()

    # ---------------------------------------------------------------- training
    def _set_lr(self) -> None:
        for g in self.opt.param_groups:
            g["lr"] = warmup_cosine(self.step, self.total_steps, self.warmup, g["base_lr"])

    def train_step(self, raw: Batch) -> dict[str, torch.Tensor]:
        """One optimiser step on a raw batch (uint8 images, stored maps); returns detached scalars
        (no host sync per step: the epoch averages them once)."""
        self.model.train()
        size = self.cfg.classifier.image_size
        flip = torch.rand(len(raw["label"]), generator=self.flip_gen) < 0.5 if self.cfg.train.flip else None
        b = prepare(raw, size, self.device, flip, self.method.mask_resize)
        reg = self.regularizer
        diag_grad = (self.method.reference != "none" and not reg.needs_input_grad and reg.weight > 0
                     and self.step % DIAG_EVERY == 0)
        x = b["image"].requires_grad_(reg.needs_input_grad or diag_grad)
        if reg.needs_features:
            logits, feats = forward_with_features(self.model, x, self.forward_model)
        else:
            logits, feats = self.forward_model(x), None
        ce = self._weighted_ce(logits, b)
        ref = build_reference(b, self.method, (size, size))
        terms = self.forward_reg(StepInputs(self.model, x, b["label"], logits, feats, ce, ref, self.forward_model))
        loss = self.objective(ce, b["group"]) + total(terms)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"{self.method_name} seed {self.seed}: loss is {float(loss)} at epoch {self.epoch + 1}, step "
                f"{self.step} (lr {self.method.lr or self.cfg.train.lr}, weight {self.method.weight}); "
                "lower the learning rate or the regularisation weight")
        if ref is not None:
            self._diagnose(b, x, ce, ref, diag_grad)
        self._set_lr()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        acc = (logits.argmax(1) == b["label"]).float().mean()
        return {"loss": loss.detach(), "ce": ce.mean().detach(), **{k: v.detach() for k, v in terms.items()},
                "acc": acc}

    def _weighted_ce(self, logits: torch.Tensor, b: Batch) -> torch.Tensor:
        ce = F.cross_entropy(logits, b["label"], reduction="none")
        if self.method.balance != "none":
            key = b["label"] if self.method.balance == "class" else b["group"]
            ce = ce * self.class_weights[key]
        return ce

    def _add(self, name: str, values: torch.Tensor) -> None:
        """Accumulate a diagnostic on the device (no host sync per step; read once per epoch)."""
        if values.numel():
            acc = self.diag.setdefault(name, [values.new_zeros(()), 0])
            acc[0] = acc[0] + values.detach().sum()
            acc[1] += values.numel()

    def _diagnose(self, b: Batch, x: torch.Tensor, ce: torch.Tensor, ref, with_grad: bool) -> None:
        """What a researcher looks at when a regulariser fails: CE and penalty on the majority vs the
        minority groups, and the mean |∂CE/∂x| inside vs outside the reference (input-gradient
        methods: their own gradient, every step; others: ∂CE/∂x every DIAG_EVERY steps)."""
        reg = self.regularizer
        groups = {"all": torch.ones_like(b["label"], dtype=torch.bool)}
        if self.majority is not None:
            maj = torch.isin(b["group"], self.majority)
            groups = {"majority": maj, "minority": ~maj}
        for name, sel in groups.items():
            self._add(f"diag_ce_{name}", ce.detach()[sel])
            if reg.last is not None:
                self._add(f"diag_att_{name}", reg.last[sel & ref.valid])
        g = reg.input_grad
        if g is None and with_grad:
            (g,) = torch.autograd.grad(ce.sum(), x, retain_graph=True)
        if g is not None and bool(ref.valid.any()):
            mag = g.detach().abs().mean(1)[ref.valid]  # (B', H, W)
            a = ref.map.detach()[ref.valid]
            self._add("diag_grad_inside", (mag * a).flatten(1).sum(1) / a.flatten(1).sum(1).clamp_min(1e-8))
            self._add("diag_grad_outside", (mag * (1 - a)).flatten(1).sum(1) / (1 - a).flatten(1).sum(1).clamp_min(1e-8))

    def train_epoch(self, batches: Iterable[Batch]) -> dict[str, float]:
        t0, rows, n = time.time(), [], 0
        self.diag = {}
        for raw in batches:
            rows.append(self.train_step(raw))
            n += len(raw["label"])
        if not rows:
            raise ValueError("train_epoch: the training data yielded no batches")
        out = {f"train_{k}": float(torch.stack([r[k] for r in rows]).double().mean()) for k in rows[0]}
        out.update({k: float(total) / count for k, (total, count) in self.diag.items() if count})
        out.update(train_seconds=time.time() - t0, train_images=n)
        return out

    @torch.no_grad()
    def predict(self, batches: Iterable[Batch]) -> dict[str, np.ndarray]:
        model = self.model
        model.eval()
        logits, ys, gs = [], [], []
        for raw in batches:
            b = prepare(raw, self.cfg.classifier.image_size, self.device)
            logits.append(model(b["image"]).float().cpu())
            ys.append(b["label"].cpu())
            gs.append(b["group"].cpu())
        return {"logits": torch.cat(logits).numpy(), "label": torch.cat(ys).numpy(), "group": torch.cat(gs).numpy()}

    def validate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Validation metrics; keeps the model state of the best selection score so far
        (:func:`selection_metric`)."""
        p = self.predict(batches)
        m = group_metrics(p["logits"].argmax(1), p["label"], p["group"], self.n_classes, self.n_groups)
        out = {"val_acc": m["acc"], "val_balanced_acc": m["balanced_acc"]}
        if "worst_group_acc" in m:
            out["val_worst_group_acc"] = m["worst_group_acc"]
        key = selection_metric(self.method)
        if key not in out:
            raise ValueError(f"{self.method_name}: selects epochs by {key}, but the validation data has no groups")
        if out[key] > self.best["score"]:
            self.best = {"score": out[key], "epoch": self.epoch, "metrics": out,
                         "state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}
        return out


def check_precision(precision: str, method_name: str, regularizer: str) -> None:
    """``train.precision`` other than fp32 runs the forward passes under autocast and hands float32 logits
    on: a regulariser that reads features or input gradients (or brings its own architecture) would
    compute on lower-precision graphs, so it is refused. fp32 accepts every regulariser."""
    if precision == "fp32":
        return
    spec = REGULARIZERS.get(regularizer)
    if spec.needs_features or spec.needs_input_grad or spec.architecture != "plain":
        raise ValueError(f"train.precision={precision}: method '{method_name}' uses regularizer '{regularizer}', "
                         "which reads features, input gradients or its own architecture; only fp32 trains it")


def selection_metric(m: MethodConfig) -> str:
    """The validation metric that picks a run's best epoch (and a sweep's best trial): class-balanced
    accuracy (no group labels, as GALS), or worst-group accuracy for a method that uses group labels
    (as Group DRO, JTT and DFR select)."""
    return "val_worst_group_acc" if selects_on_groups(m) else "val_balanced_acc"


def completed(history: list[dict], train_cfg: TrainConfig) -> bool:
    """Whether a run's history is a finished run: every epoch trained, or ``patience`` epochs without
    a new best (as opposed to a trial ASHA or a failure cut short). :func:`fit` stops on the same
    rule, read from the history, so a resumed run agrees."""
    if not history:
        return False
    last = history[-1]
    p = train_cfg.patience
    return last["epoch"] >= train_cfg.epochs or (p is not None and last["epoch"] - last["best_epoch"] >= p)


def fit(trainer: Trainer, train_batches: Callable[[int], Iterable[Batch]], val_batches: Callable[[], Iterable[Batch]],
        on_epoch: Callable[[Trainer, dict], None] | None = None) -> Trainer:
    """Train from ``trainer.epoch`` (0, or where a checkpoint left off) to ``train.epochs``, or until
    ``train.patience`` epochs pass without a new best.

    ``on_epoch`` gets the trainer and the epoch's metrics after validation: the place to
    checkpoint (Ray Train's ``report``) or log.
    """
    for epoch in range(trainer.epoch, trainer.cfg.train.epochs):
        if completed(trainer.history, trainer.cfg.train):  # early stopping (train.patience)
            break
        metrics = trainer.train_epoch(train_batches(epoch))
        metrics.update(trainer.validate(val_batches()))
        trainer.epoch = epoch + 1
        metrics["epoch"] = trainer.epoch
        metrics["best_epoch"] = trainer.best["epoch"] + 1
        trainer.history.append(metrics)
        if on_epoch is not None:
            on_epoch(trainer, metrics)
    return trainer
