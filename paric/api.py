"""paric's public API: reference maps from any open_clip model, each attention regulariser as a loss for
any ``nn.Module``, and the pipeline as one call. What a training loop of one's own needs, and no more.

    import paric
    maps = paric.reference_maps(clip, tokenizer, images, ["a photo of a bird"], adapters=adapters, k=32)
    att = paric.AttentionLoss("background_swap", weight=1.0)
    logits, penalty = att(model, x, y, maps["mean"])
    loss = F.cross_entropy(logits, y) + penalty

Why a facade: inside the pipeline the same pieces are reached through stages, configs and the map
store; here they take plain tensors and modules (none of paric's classifier, batch or store types).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from paric.attention.reference import GGDSampler, GradCamEngine, TextMatch, aggregate_samples
from paric.vlm.adapters import AdapterPair, train_adapters
from paric.vlm.factory import VLM, _image_size
from paric.vlm.ggd import DEFAULT_GAMMA_DRAW


@contextmanager
def _frozen(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with frozen parameters for the duration, then restored as it was."""
    training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(training)


def _as_vlm(model: nn.Module, tokenizer: Any) -> VLM:
    pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = tuple(pp.get("mean", getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)))
    std = tuple(pp.get("std", getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)))
    return VLM(model=model, tokenizer=tokenizer, name=type(model).__name__, weights="user", image_size=_image_size(model),
               mean=mean, std=std)  # type: ignore[arg-type]


def clip_model(name: str, pretrained: str | None = None, checkpoint: str | Path | None = None) -> tuple[nn.Module, Any]:
    """(open_clip model, tokenizer): any open_clip model by name with a weights tag or local file
    (``pretrained``), a checkpoint the pipeline pretrained (``checkpoint``), or random weights (neither;
    e.g. paric's tiny towers ``paric-tiny-cnn16`` / ``paric-micro-cnn16``). Frozen, in eval mode."""
    from paric.vlm.factory import load_vlm

    vlm = load_vlm(name, pretrained, Path(checkpoint) if checkpoint is not None else None)
    return vlm.model, vlm.tokenizer


def reference_maps(model: nn.Module, tokenizer: Any, images: torch.Tensor, prompts: list[str], *,
                   adapters: AdapterPair | None = None, k: int = 0, seed: int = 0, layer: str = "auto",
                   image_ids: list[str] | None = None, scale_by_norm: bool = False,
                   gamma: str = DEFAULT_GAMMA_DRAW) -> dict[str, torch.Tensor]:
    """GALS' Grad-CAM map and, with ProbVLM ``adapters`` and ``k`` > 0, PARIC's k sampled maps.

    ``model``: an open_clip model; ``images``: (B, 3, H, W) at its input size, normalised as its
    preprocessing does; ``prompts``: the texts whose maps are averaged (GALS: one per class or a few
    phrasings). ``layer``: the tower's module path, or ``auto`` (RN: the last stage; ViT: the last
    block). ``image_ids`` key each image's samples (default: its position), so an image's maps do not
    depend on its batch. ``scale_by_norm``: our ‖v‖-scaled samples (PARIC-norm) instead of PARIC's.
    ``gamma``: how the GGD's gamma variate is drawn (``maps.gamma``: ``rejection`` or ``inverse``).

    Returns tensors in [0, 1] on the tower's grid: ``gals`` (B, h, w); with samples also ``samples``
    (B, k, h, w), ``mean``, ``median`` (B, h, w) and the per-pixel spread ``std``.
    """
    if k > 0 and adapters is None:
        raise ValueError("reference_maps: k > 0 sampled maps need ProbVLM adapters (paric.fit_adapters)")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"reference_maps: images must be (B, 3, H, W), got {tuple(images.shape)}")
    ids = image_ids if image_ids is not None else [str(i) for i in range(len(images))]
    with _frozen(model):
        samplers: list = [TextMatch()]
        if k > 0:
            adapters.eval()  # type: ignore[union-attr]
            samplers.append(GGDSampler(adapters, k, seed, scale_by_norm=scale_by_norm, gamma=gamma))  # type: ignore[arg-type]
        maps = GradCamEngine(_as_vlm(model, tokenizer), prompts, samplers, layer)(images, ids)
    out = {"gals": maps[0][:, 0]}
    if k > 0:
        mean, median, std = aggregate_samples(maps[1])
        out.update(samples=maps[1], mean=mean, median=median, std=std)
    return out


def fit_adapters(model: nn.Module, tokenizer: Any, images: torch.Tensor, captions: list[str], *, epochs: int = 30,
                 seed: int = 0, out_path: str | Path | None = None, batch_size: int = 256, **options: Any) -> AdapterPair:
    """Train PARIC's ProbVLM adapters on (images, captions) pairs through the frozen ``model``.

    ``images``: (N, 3, H, W) normalised like :func:`reference_maps`'; ``options``: any other
    ``adapter.*`` config key (hidden, lr, lambda_nll, cross_l1 …). Saved to ``out_path`` when given.
    """
    from paric.config import AdapterConfig

    if len(images) != len(captions):
        raise ValueError(f"fit_adapters: {len(images)} images but {len(captions)} captions")
    cfg = AdapterConfig(epochs=epochs, batch_size=batch_size, **options)
    with _frozen(model), torch.no_grad():
        vlm = _as_vlm(model, tokenizer)
        img = torch.cat([model.encode_image(images[i:i + batch_size], normalize=True)
                         for i in range(0, len(images), batch_size)])
        txt = torch.cat([vlm.encode_text(captions[i:i + batch_size]) for i in range(0, len(captions), batch_size)])
    if out_path is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            pair, _ = train_adapters(img, txt, cfg, seed, Path(tmp) / "adapters.pt", progress=False)
    else:
        pair, _ = train_adapters(img, txt, cfg, seed, Path(out_path), progress=False)
    return pair


class AttentionLoss(nn.Module):
    """One of paric's attention regularisers (``paric.regularizers.REGULARIZERS``) as a loss for any
    classifier: ``logits, penalty = loss(model, x, y, reference)``, then add ``penalty`` to your loss.

    It runs the forward pass itself, because some terms need more of it than the logits: the input
    gradient (``gradient_outside``: GALS' own penalty) or the activations at ``layer`` (``gradcam``,
    the name of a module in your model, e.g. ``"layer4"``). ``reference``: (B, h, w) in [0, 1] at any
    size (resized to the input's); an all-zero map means no reference for that image. ``weight``:
    λ; ``options={…}``: the regulariser's own options, its ``Options`` model (``{"loss": "ce"}`` for
    ``background_swap``, ``{"mode": "match"}`` for ``gradcam``, ``{"target": "ce"}`` for
    ``gradient_outside`` …; docs/reference/registries.md); the old flat keywords (``swap_loss="ce"``) still
    work, with a DeprecationWarning.
    """

    def __init__(self, regularizer: str = "background_swap", weight: float = 1.0, layer: str | None = None,
                 **options: Any) -> None:
        super().__init__()
        from paric.config import MethodConfig
        from paric.regularizers import REGULARIZERS

        cls = REGULARIZERS.get(regularizer)
        if cls.needs_text or cls.architecture != "plain":
            raise ValueError(f"AttentionLoss: '{regularizer}' needs paric's own classifier or text tower; "
                             "use it through the pipeline (train.methods)")
        if cls.needs_features and layer is None:
            raise ValueError(f"AttentionLoss: '{regularizer}' reads the model's activations: name a module (layer=…)")
        method = MethodConfig(regularizer=regularizer, weight=weight, reference="det", **options)
        self.reg = cls.build(method)
        self.layer = layer

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, reference: torch.Tensor,
                uncertainty: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, λ·L_att); ``uncertainty``: optional per-pixel weights (B, h, w) in [0, 1]."""
        from paric.regularizers import Reference, StepInputs, total
        from paric.regularizers.reference import _upsample

        reg = self.reg
        if reg.needs_input_grad and not x.requires_grad:
            x = x.detach().requires_grad_(True)
        feats: dict[str, torch.Tensor] = {}
        handle = None
        if reg.needs_features:
            modules = dict(model.named_modules())
            if self.layer not in modules:
                raise ValueError(f"AttentionLoss: the model has no module '{self.layer}' "
                                 f"(some: {', '.join(list(modules)[1:8])} …)")
            handle = modules[self.layer].register_forward_hook(lambda _m, _i, out: feats.__setitem__("a", out))
        try:
            logits = model(x)
        finally:
            if handle is not None:
                handle.remove()
        size = tuple(x.shape[-2:])
        a = _upsample(reference.to(x.dtype), size).clamp(0, 1)
        w = torch.ones_like(a) if uncertainty is None else _upsample(uncertainty.to(x.dtype), size)
        ref = Reference(map=a, weight=w, valid=a.flatten(1).amax(1) > 0)
        ce = F.cross_entropy(logits, y, reduction="none")
        terms = reg(StepInputs(model, x, y, logits, feats.get("a"), ce, ref, model))  # type: ignore[arg-type]
        return logits, total(terms)


def run(config: str | Path = "default", overrides: list[str] | None = None, profiles: list[str] | None = None,
        force: list[str] | None = None, progress: bool = False) -> dict:
    """The whole pipeline (``paric run``) on a config file or packaged config name; returns its result
    (``results``: the methods table's numbers, ``report``: the report's directory, ``stages``)."""
    from paric import cli
    from paric.catalog import load_config
    from paric.config import profile_overlays
    from paric.stages.cache import check_forced
    from paric.stages.pipeline import check_pipeline_config, run_full

    path = cli.resolve_config(str(config))
    cfg = load_config(path, overrides, overlays=profile_overlays(path, list(profiles or []), cli.CONF_DIR / "profiles"))
    check_pipeline_config(cfg)
    check_forced(list(force or []))
    with cli.exclusive(cfg):
        return run_full(cfg, force=list(force or []), progress=progress)
