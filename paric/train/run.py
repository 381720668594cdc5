"""One training run (method × seed) end to end without Ray: data in memory, fit, test metrics.

Why: the plain path is what a researcher debugs in a notebook and what ``train.num_workers=0``
runs; the Ray Train path (``paric/stages/train.py``) builds the same :class:`RunSpec` and calls the
same :func:`make_trainer` / :func:`test_metrics` inside each worker.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from paric.config import Config, MethodConfig
from paric.data import WaterbirdsDataset
from paric.data.formats import dataset_metrics
from paric.eval.classifier import evaluate_classifier
from paric.models.classifier import classifier_for_state
from paric.io import atomic_path
from paric.regularizers import REGULARIZERS, RunContext, balance_weights, needed_columns
from paric.train.data import iterate, load_split, majority_groups, prepare, train_view
from paric.train.fit_log import epoch_line
from paric.train.loop import Batch, Trainer, fit, selection_metric
from paric.train.two_stage import TWO_STAGE

log = logging.getLogger("paric")


@dataclass
class RunSpec:
    """Everything a run needs besides its data; plain values, so it travels to Ray workers."""

    cfg: dict
    method: str
    seed: int
    n_classes: int
    n_groups: int
    n_train: int
    class_weights: list[float] | None
    backbone: str | None
    world_size: int = 1
    classes: list[str] = field(default_factory=list)  # class names, for per-dataset metrics (food, coco)
    majority_groups: list[int] = field(default_factory=list)  # each class's most frequent train group
    group_counts: list[int] = field(default_factory=list)  # train images per group (Group DRO's n_g)

    def config(self) -> Config:
        return Config.model_validate(self.cfg)

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(self.n_train / self.world_size / batch_size)

    def to_dict(self) -> dict:
        return asdict(self)


def method_weights(m: MethodConfig, train_label: "object", train_group: "object", n_classes: int,
                   n_groups: int) -> torch.Tensor | None:
    """The CE weight per class (or per group) of a balancing method; None without balancing."""
    if m.balance == "none":
        return None
    keys, n = (train_label, n_classes) if m.balance == "class" else (train_group, n_groups)
    return balance_weights(keys, n)


def make_spec(cfg: Config, method: str, seed: int, train_label: "object", train_group: "object", n_classes: int,
              n_groups: int, backbone: Path | None, world_size: int = 1,
              classes: list[str] | None = None) -> RunSpec:
    weights = method_weights(cfg.method(method), train_label, train_group, n_classes, n_groups)
    weights = weights.tolist() if weights is not None else None
    return RunSpec(cfg.model_dump(mode="json"), method, seed, n_classes, n_groups, len(train_label), weights,
                   str(backbone) if backbone else None, world_size, list(classes or []),
                   majority_groups(train_label, train_group),
                   np.bincount(np.asarray(train_group, dtype=np.int64), minlength=n_groups).tolist())


def effective_method(cfg: Config, method: str, train_label: "object", train_group: "object", n_classes: int,
                     n_groups: int) -> MethodConfig:
    """The method as training sees it: class or group balancing whose weights are all 1 (a balanced
    train split) is no balancing, so such a run trains exactly as its unbalanced twin."""
    m = cfg.method(method)
    weights = method_weights(m, train_label, train_group, n_classes, n_groups)
    if weights is not None and bool((weights == 1.0).all()):
        return m.model_copy(update={"balance": "none"})
    return m


def make_trainer(spec: RunSpec, device: torch.device | str = "cpu", wrap=None) -> Trainer:
    cfg = spec.config()
    backbone = torch.load(spec.backbone, map_location="cpu")["model"] if spec.backbone else None
    weights = torch.tensor(spec.class_weights) if spec.class_weights is not None else None
    return Trainer(cfg, spec.method, spec.n_classes, spec.n_groups, spec.steps_per_epoch(cfg.train.batch_size),
                   spec.seed, weights, backbone, device, wrap, spec.majority_groups,
                   RunContext(class_names=list(spec.classes), text_model=text_model_loader(cfg, spec.method)),
                   spec.group_counts)


def text_model_loader(cfg: Config, method: str) -> Callable[[], tuple[torch.nn.Module, object]] | None:
    """For a regulariser with ``needs_text``: a loader of the pipeline's VLM (published weights, or the
    checkpoint the vlm stage wrote), called once when the regulariser is built."""
    if not REGULARIZERS.get(cfg.method(method).regularizer).needs_text:
        return None
    ckpt = None if cfg.vlm.pretrained is not None else cfg.layout.vlm_checkpoint()
    return functools.partial(_text_model, cfg.vlm.name, cfg.vlm.pretrained, ckpt)


def _text_model(name: str, pretrained: str | None, checkpoint: Path | None) -> tuple[torch.nn.Module, object]:
    from paric.vlm.factory import load_vlm

    if checkpoint is not None and not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: a regulariser with a text branch needs the VLM the vlm stage "
                                "trains; run the precompute stage first")
    vlm = load_vlm(name, pretrained, checkpoint)
    return vlm.model, vlm.tokenizer


def evaluate_model(cfg: Config, model: torch.nn.Module, n_classes: int, n_groups: int, batches: Iterable[Batch],
                   classes: list[str] | None = None, device: torch.device | str = "cpu") -> dict:
    """The evaluation suite on raw test batches (plus the dataset's own metrics when ``classes``
    are given: Food worst-class accuracy, COCO gender ratio / outcome divergence)."""
    prepared = (prepare(b, cfg.classifier.image_size, torch.device(device)) for b in batches)
    extra = functools.partial(dataset_metrics, cfg.data.format, classes=list(classes)) if classes else None
    return evaluate_classifier(model, prepared, n_classes, n_groups, cfg.eval, extra_metrics=extra)


def test_metrics(trainer: Trainer, batches: Iterable[Batch], classes: list[str] | None = None) -> dict:
    """The evaluation suite on the trainer's best-validation model."""
    out = evaluate_model(trainer.cfg, trainer.best_model(), trainer.n_classes, trainer.n_groups, batches, classes,
                         trainer.device)
    out["best_epoch"] = trainer.best["epoch"] + 1
    out["epochs_trained"] = trainer.epoch
    out["val_balanced_acc"] = trainer.best["metrics"].get("val_balanced_acc")
    out["val_score"], out["selection"] = trainer.best["score"], selection_metric(trainer.method)
    return out


def evaluate_saved(cfg: Config, root: Path, best_state: dict, fit: dict) -> dict:
    """Test metrics of weights trained elsewhere (a sweep trial that is a final run); ``fit``: that
    run's ``best_epoch``, ``val_balanced_acc`` and ``history``, kept in the result."""
    n_classes, n_groups, has_masks = dataset_info(root)
    c = cfg.classifier
    model = classifier_for_state(c.arch, n_classes, c.width, best_state)
    test = load_split(root, cfg.layout.maps("test"), "test", c.image_size, [], has_masks)
    out = evaluate_model(cfg, model.eval(), n_classes, n_groups, iterate(test, 128, False), class_names(root))
    out.update({k: fit[k] for k in ("best_epoch", "val_balanced_acc", "history", "resumed_at_epochs") if k in fit})
    out.update(fit.get("first_stage") or {})  # what a two-stage method's first stage reports (JTT's error set)
    out["epochs_trained"] = len(fit.get("history", [])) or None
    return out


def class_names(root: Path) -> list[str]:
    return WaterbirdsDataset(root, "test", with_masks=False).classes


def dataset_info(root: Path) -> tuple[int, int, bool]:
    """(number of classes, number of groups, whether object masks exist) of a dataset."""
    ds = WaterbirdsDataset(root, "test", with_masks=True)
    return ds.n_classes, ds.n_groups, ds.has_masks


def split_columns(cfg: Config, method: str, references: list[str] | None = None) -> tuple[list[str], bool]:
    """Map-store columns a method's training batches need, and whether they need masks; with
    ``references`` (a sweep's aggregation choices), what any of those references needs."""
    base = cfg.method(method)
    cols = {c for ref in references or [base.reference]
            for c in needed_columns(base.model_copy(update={"reference": ref}))}
    return sorted(cols - {"mask"}), "mask" in cols


def save_best(state: dict | None, fallback: dict, path: Path) -> None:
    """The best-validation weights (``fallback``: the last ones) as ``{"model": state_dict}``, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"model": state if state is not None else fallback}, tmp)


@dataclass
class RunData:
    """One run's splits in memory: ``train`` after the method's group view and its two-stage step (JTT's
    upsampled rows), ``val``, ``test`` (None when the run only validates: a sweep trial), what the
    first stage reports, and the dataset's class names and group count (read once)."""

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray] | None
    first_stage: dict
    classes: list[str]
    n_classes: int
    n_groups: int


def load_run_data(cfg: Config, root: Path, method: str, seed: int, backbone: Path | None,
                  test: bool = True) -> RunData:
    """The splits a plain-loop run of ``method`` reads, from the map store and the images."""
    cols, need_mask = split_columns(cfg, method)
    maps = cfg.layout.maps()
    size = cfg.classifier.image_size
    n_classes, n_groups, has_masks = dataset_info(root)
    train = load_split(root, maps / "train", "train", size, cols, need_mask, cfg.method(method).k)
    keep = train_view(cfg.method(method).train_groups, train["label"], train["group"])
    if keep is not None:
        train = {k: v[keep] for k, v in train.items()}
    val = load_split(root, maps / "val", "val", size, [], False)
    test_split = load_split(root, maps / "test", "test", size, [], has_masks) if test else None
    first_stage = {}
    if (two_stage := cfg.method(method).two_stage) != "none":  # a first run chooses the training set (JTT)
        train, first_stage = TWO_STAGE.get(two_stage).train_set(cfg, method, seed, train, val, n_classes, n_groups,
                                                                backbone, root)
    return RunData(train, val, test_split, first_stage, class_names(root), n_classes, n_groups)


def plain_trainer(cfg: Config, method: str, seed: int, backbone: Path | None, data: RunData) -> Trainer:
    """The trainer of a plain-loop run on ``data`` (its class weights and groups from ``data.train``)."""
    return make_trainer(make_spec(cfg, method, seed, data.train["label"], data.train["group"], data.n_classes,
                                  data.n_groups, backbone, classes=data.classes))


def fit_plain(trainer: Trainer, data: RunData, on_epoch: Callable[[Trainer, dict], None] | None = None) -> Trainer:
    """The plain loop over ``data`` (from ``trainer.epoch``: a restored trainer resumes); each epoch logged,
    then passed to ``on_epoch``."""
    bs, sampling, seed = trainer.cfg.train.batch_size, trainer.method.sampling, trainer.seed

    def epoch_done(t: Trainer, m: dict) -> None:
        log.info(epoch_line(t.method_name, seed, m))
        if on_epoch is not None:
            on_epoch(t, m)

    return fit(trainer, lambda e: iterate(data.train, bs, True, seed, e, sampling),
               lambda: iterate(data.val, 256, False), epoch_done)


def run_in_memory(cfg: Config, root: Path, method: str, seed: int, backbone: Path | None,
                  model_path: Path | None = None, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train and test one method/seed in this process (``train.num_workers=0``); ``model_path``
    receives the best-validation weights; ``on_epoch`` each epoch's metrics as it ends (live tracking)."""
    t0 = time.time()
    data = load_run_data(cfg, root, method, seed, backbone)
    trainer = plain_trainer(cfg, method, seed, backbone, data)
    fit_plain(trainer, data, None if on_epoch is None else lambda _t, m: on_epoch(m))
    out = test_metrics(trainer, iterate(data.test, 128, False), data.classes)
    if model_path is not None:
        save_best(trainer.best["state"], trainer.model.state_dict(), model_path)
    out.update(method=method, seed=seed, seconds=round(time.time() - t0, 1), history=trainer.history,
               **data.first_stage)
    return out


def jtt_train_set(cfg: Config, method: str, seed: int, train: dict, val: dict, n_classes: int, n_groups: int,
                  backbone: Path | None, root: Path) -> tuple[dict, dict]:
    """JTT's first stage (``two_stage: jtt``): ERM for ``epochs`` epochs (its own schedule, no early
    stopping), the training points its last model misclassifies, and the train set with those upsampled
    ``up`` times. Returns (train set, what to report)."""
    from paric.train.jtt import JttOptions, error_set, upsampled_rows

    opts = JttOptions.model_validate(cfg.method(method).two_stage_options)
    first = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": opts.epochs, "patience": None})})
    spec = make_spec(first, method, seed, train["label"], train["group"], n_classes, n_groups, backbone,
                     classes=class_names(root))
    stage1 = make_trainer(spec)
    bs = cfg.train.batch_size
    fit(stage1, lambda e: iterate(train, bs, True, seed, e), lambda: iterate(val, 256, False),
        lambda _t, mt: log.info("jtt stage 1 " + epoch_line(method, seed, mt)))
    size = cfg.classifier.image_size
    errors = error_set(stage1.model, (prepare(b, size, torch.device("cpu")) for b in iterate(train, 256, False)))
    rows = upsampled_rows(errors, opts.up)
    minority = ~np.isin(train["group"], majority_groups(train["label"], train["group"]))
    report = {"jtt_errors": int(errors.sum()), "jtt_error_minority_share":
              float(minority[errors].mean()) if errors.any() else None, "jtt_minority_share": float(minority.mean())}
    log.info("jtt %s s%d: error set %d of %d train images (%.0f%% of them minority-group; of all: %.0f%%)",
             method, seed,
             report["jtt_errors"], len(errors), 100 * (report["jtt_error_minority_share"] or 0),
             100 * report["jtt_minority_share"])
    return {k: v[rows] for k, v in train.items()}, report


def run_dfr(cfg: Config, root: Path, method: str, seed: int, base_model: Path, base_result: dict,
            model_path: Path | None = None) -> dict:
    """DFR (``posthoc: dfr``): ``base``'s trained model (this seed) with its last layer retrained on
    group-balanced validation features (:mod:`paric.train.dfr`); then the usual test metrics."""
    from paric.train.dfr import DfrOptions, fit_dfr, penultimate, set_head

    t0 = time.time()
    m = cfg.method(method)
    if not base_model.is_file():
        raise FileNotFoundError(f"{base_model}: {method} retrains the last layer of {m.base}'s model (seed {seed}); "
                                f"train {m.base} first (list it in train.compare)")
    n_classes, n_groups, has_masks = dataset_info(root)
    c = cfg.classifier
    model = classifier_for_state(c.arch, n_classes, c.width,
                                 torch.load(base_model, map_location="cpu", weights_only=False)["model"])
    def features(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = load_split(root, cfg.layout.maps(split), split, c.image_size, [], False)
        return penultimate(model, model.head, (prepare(b, c.image_size, torch.device("cpu"))
                                               for b in iterate(rows, 256, False)))

    feats, y, g = features("val")
    opts = DfrOptions.model_validate(m.posthoc_options)
    fit = fit_dfr(feats, y, g, n_classes, n_groups, opts.c, opts.subsamples, seed, features("train")[0])
    set_head(model.head, fit)
    if model_path is not None:
        save_best(None, model.state_dict(), model_path)
    test = load_split(root, cfg.layout.maps("test"), "test", c.image_size, [], has_masks)
    out = evaluate_model(cfg, model.eval(), n_classes, n_groups, iterate(test, 128, False), class_names(root))
    out.update(method=method, seed=seed, seconds=round(time.time() - t0, 1), dfr_c=fit.c,
               dfr_tune={str(k): v for k, v in fit.tune.items()}, selection="dfr_c on worst-group val (half)",
               **{k: base_result.get(k) for k in ("best_epoch", "epochs_trained")})
    return out
