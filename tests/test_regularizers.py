"""Each regulariser, the reference choice and the loss weighting: tests that fail if miswired."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from paric.attention.reference import aggregate_samples
from paric.config import MethodConfig
from paric.models import build_classifier, classifier_gradcam
from paric.models.cam import forward_with_features
from paric.regularizers import REGULARIZERS, StepInputs, balance_weights, build_reference, build_regularizer, total


def _model(seed: int = 0, architecture: str = "plain"):
    return build_classifier("small_resnet", 2, width=4, seed=seed, architecture=architecture)


def _inputs(method: MethodConfig, ref_map: torch.Tensor, seed: int = 0, features: bool = False):
    torch.manual_seed(seed)
    model = _model(seed, REGULARIZERS.get(method.regularizer).architecture)  # the classifier the trainer builds
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1])
    if features:
        logits, feats = forward_with_features(model, x)
    else:
        logits, feats = model(x), None
    ce = F.cross_entropy(logits, y, reduction="none")
    ref = build_reference({"mask": ref_map}, method, (32, 32))
    return model, StepInputs(model, x, y, logits, feats, ce, ref)


GRAD = MethodConfig(regularizer="gradient_outside", weight=1.0, reference="oracle")
CAM = MethodConfig(regularizer="gradcam", weight=1.0, reference="oracle")


@pytest.mark.parametrize("target", ["ce", "log_prob"])
def test_gradient_outside_zero_when_reference_covers_image(target):
    method = GRAD.model_copy(update={"options": {"target": target}})
    _, s = _inputs(method, torch.ones(4, 32, 32))
    assert float(total(build_regularizer(method)(s))) == 0.0


@pytest.mark.parametrize("target", ["ce", "log_prob"])
def test_gradient_outside_trains_the_model(target):
    method = GRAD.model_copy(update={"options": {"target": target}})
    ref = torch.zeros(4, 32, 32)
    ref[:, 8:24, 8:24] = 1.0
    model, s = _inputs(method, ref)
    penalty = total(build_regularizer(method)(s))
    assert float(penalty) > 0
    penalty.backward()  # double backprop: the penalty's gradient reaches the parameters
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_gradient_outside_matches_manual_formula():
    ref = torch.zeros(4, 32, 32)
    ref[:, :16] = 1.0
    method = GRAD.model_copy(update={"options": {"target": "ce"}, "weight": 3.0})
    _, s = _inputs(method, ref)
    (g,) = torch.autograd.grad(s.ce.sum(), s.x, retain_graph=True)
    manual = 3.0 * (g * (1 - ref).unsqueeze(1)).abs().flatten(1).mean(1).mean()
    assert float(total(build_regularizer(method)(s))) == pytest.approx(float(manual), rel=1e-5)


def test_all_zero_reference_gets_no_attention_loss():
    ref = torch.zeros(4, 32, 32)
    ref[0, :8, :8] = 1.0  # only the first image has a reference
    _, s = _inputs(GRAD, ref)
    assert s.ref.valid.tolist() == [True, False, False, False]
    full = total(build_regularizer(GRAD)(s))
    _, s0 = _inputs(GRAD, torch.zeros(4, 32, 32))
    assert float(total(build_regularizer(GRAD)(s0))) == 0.0
    assert float(full) > 0


@pytest.mark.parametrize("mode", ["suppress_outside", "match"])
def test_gradcam_regularizer(mode):
    method = CAM.model_copy(update={"options": {"mode": mode}})
    ones = torch.ones(4, 32, 32)
    model, s = _inputs(method, ones, features=True)
    value = float(total(build_regularizer(method)(s)))
    if mode == "suppress_outside":
        assert value == pytest.approx(0.0, abs=1e-7)  # nothing is outside an all-ones reference
    ref = torch.zeros(4, 32, 32)
    ref[:, :4, :4] = 1.0
    model, s = _inputs(method, ref, features=True)
    penalty = total(build_regularizer(method)(s))
    assert float(penalty) > 0
    penalty.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0


def test_gradcam_match_is_zero_at_the_models_own_cam():
    model = _model()
    x = torch.rand(4, 3, 32, 32)
    y = torch.tensor([0, 1, 0, 1])
    _, cam = classifier_gradcam(model, x, y)
    # a reference equal to the CAM (upsampled by nearest so average-pooling gives it back)
    ref = cam.detach().repeat_interleave(32 // cam.shape[-1], -1).repeat_interleave(32 // cam.shape[-2], -2)
    method = CAM.model_copy(update={"options": {"mode": "match"}})
    logits, feats = forward_with_features(model, x)
    s = StepInputs(model, x, y, logits, feats, F.cross_entropy(logits, y, reduction="none"),
                   build_reference({"mask": ref}, method, (32, 32)))
    assert float(total(build_regularizer(method)(s))) == pytest.approx(0.0, abs=1e-5)


def test_reference_sources():
    g = torch.Generator().manual_seed(0)
    samples = torch.rand(2, 8, 4, 4, generator=g)
    det = torch.rand(2, 4, 4, generator=g)
    batch = {"map_det": det.half(), "map_samples": samples.half()}
    r = build_reference(batch, MethodConfig(reference="det", renormalise=False), (4, 4))
    assert torch.allclose(r.map, det.half().float())
    r = build_reference(batch, MethodConfig(reference="mean", k=3), (4, 4))
    mean3, median3, _ = aggregate_samples(samples.half().float()[:, :3])
    assert torch.allclose(r.map, mean3)
    r = build_reference(batch, MethodConfig(reference="median", k=5), (4, 4))
    assert torch.allclose(r.map, aggregate_samples(samples.half().float()[:, :5])[1])
    up = build_reference(batch, MethodConfig(reference="det"), (16, 16))
    assert up.map.shape == (2, 16, 16)
    assert torch.all(up.weight == 1)


def test_uncertainty_weight_downweights_uncertain_pixels():
    samples = torch.zeros(1, 4, 2, 2)
    samples[0, :, 0, 0] = torch.tensor([0.0, 1.0, 0.0, 1.0])  # uncertain pixel
    samples[0, :, 1, 1] = 1.0  # certain pixel
    r = build_reference({"map_samples": samples}, MethodConfig(reference="mean", uncertainty="inverse_std"), (2, 2))
    assert float(r.weight[0, 0, 0]) < float(r.weight[0, 1, 1]) == 1.0


def test_balance_weights_equalise_classes():
    labels = np.array([0] * 90 + [1] * 10)
    w = balance_weights(labels, 2)
    assert float(w[0] * 90) == pytest.approx(float(w[1] * 10))
    assert float((w[torch.as_tensor(labels)]).mean()) == pytest.approx(1.0)
    assert balance_weights(np.array([0, 0, 2]), 3)[1] == 0


def test_energy_outside_is_share_outside_and_empty_cam_costs_most():
    method = CAM.model_copy(update={"options": {"mode": "energy_outside"}})
    ref = torch.zeros(4, 32, 32)
    ref[:, :16] = 1.0
    model, s = _inputs(method, ref, features=True)
    share = float(total(build_regularizer(method)(s)))
    assert 0.0 <= share <= 1.0
    # a model whose class evidence is zero everywhere (dead CAM) pays the maximum, 1 per image
    zero_feats = torch.zeros_like(s.features).requires_grad_(True)
    logits = zero_feats.mean((2, 3)) @ torch.ones(zero_feats.shape[1], 2)  # depends on feats, CAM = 0
    dead = StepInputs(s.model, s.x, s.y, logits, zero_feats, s.ce, s.ref)
    assert float(total(build_regularizer(method)(dead))) == pytest.approx(1.0, abs=1e-4)


def test_dilate_grows_the_reference_by_whole_pixels():
    mask = torch.zeros(1, 16, 16)
    mask[0, 8, 8] = 1.0
    r = build_reference({"mask": mask}, MethodConfig(reference="oracle", dilate=2), (16, 16))
    assert int(r.map.sum()) == 25 and float(r.map[0, 6, 6]) == 1.0 and float(r.map[0, 5, 8]) == 0.0


def test_balancing_with_unit_weights_trains_as_no_balancing():
    from paric.catalog import load_config
    from paric.train.run import effective_method

    cfg = load_config(None)
    groups = np.zeros(20, dtype=np.int64)
    balanced, skewed = np.array([0, 1] * 10), np.array([0] * 15 + [1] * 5)
    assert effective_method(cfg, "upweight", balanced, groups, 2, 4).balance == "none"
    assert effective_method(cfg, "upweight", skewed, groups, 2, 4).balance == "class"
    assert effective_method(cfg, "vanilla", skewed, groups, 2, 4) == cfg.method("vanilla")


SWAP = MethodConfig(regularizer="background_swap", weight=1.0, reference="oracle")


def test_counterfactual_keeps_the_reference_and_takes_the_rest_from_another_image():
    from paric.regularizers.background_swap import counterfactual

    x = torch.rand(3, 3, 8, 8)
    ref = torch.zeros(3, 8, 8)
    ref[:, 2:6, 2:6] = 1.0
    cf = counterfactual(x, ref, torch.ones_like(ref))
    assert torch.equal(cf[:, :, 2:6, 2:6], x[:, :, 2:6, 2:6])
    assert torch.equal(cf[1, :, 0], x[0, :, 0]) and torch.equal(cf[0, :, 0], x[2, :, 0])  # from the previous image
    unsure = counterfactual(x, ref, torch.zeros_like(ref))  # zero confidence: nothing is swapped
    assert torch.equal(unsure, x)


@pytest.mark.parametrize("loss", ["kl", "ce"])
def test_background_swap_trains_the_model_and_is_zero_without_background(loss):
    method = SWAP.model_copy(update={"options": {"loss": loss}})
    _, s_full = _inputs(method, torch.ones(4, 32, 32))  # the reference covers everything: x̃ = x
    if loss == "kl":
        assert float(total(build_regularizer(method)(s_full))) == pytest.approx(0.0, abs=1e-6)
    ref = torch.zeros(4, 32, 32)
    ref[:, 8:24, 8:24] = 1.0
    model, s = _inputs(method, ref)
    reg = build_regularizer(method)
    penalty = total(reg(s))
    assert float(penalty) > 0 and reg.last.shape == (4,)
    penalty.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0


def test_renormalised_reference_peaks_at_one_after_upsampling():
    det = torch.zeros(1, 4, 4)
    det[0, 1, 1] = 1.0  # a single-cell peak: bilinear upsampling lowers it
    batch = {"map_det": det}
    raw = build_reference(batch, MethodConfig(reference="det", renormalise=False), (16, 16))
    gals = build_reference(batch, MethodConfig(reference="det"), (16, 16))
    assert float(raw.map.max()) < 0.9
    assert float(gals.map.max()) == pytest.approx(1.0)
    assert torch.allclose(gals.map, raw.map / raw.map.max())


def test_gals_mask_resize_counts_any_coverage_as_object():
    from paric.regularizers.reference import resize_mask

    m = torch.zeros(1, 64, 64)
    m[0, 20:40, 21:41] = 1.0
    near, anyc = resize_mask(m, (48, 48), "nearest"), resize_mask(m, (48, 48), "any")
    assert torch.all(anyc >= near) and float(anyc.sum()) > float(near.sum())
    assert set(anyc.unique().tolist()) <= {0.0, 1.0}


def test_every_configurable_regularizer_is_registered_and_builds_with_its_weight():
    from paric.regularizers import Regularizer

    from paric.catalog import CATALOG
    from paric.config import NAMES

    names = set(REGULARIZERS)
    for name in names:  # the catalog accepts exactly the registered names (checked at load time)
        MethodConfig.model_validate({"regularizer": name}, context={NAMES: CATALOG})
    with pytest.raises(ValueError, match="unknown regularizer 'licoo'"):
        MethodConfig.model_validate({"regularizer": "licoo"}, context={NAMES: CATALOG})
    assert MethodConfig(regularizer="licoo").regularizer == "licoo"  # the schema alone checks structure only
    for name in names - {"none"}:
        if not REGULARIZERS.get(name).needs_reference:
            continue  # weighted by its own options (lico's w_mm, w_ot)
        reg = build_regularizer(MethodConfig(regularizer=name, weight=2.5, reference="oracle"))
        assert isinstance(reg, Regularizer) and reg.weight == 2.5, name
    bad = MethodConfig(regularizer="gradcam").model_copy(update={"regularizer": "licoo"})
    with pytest.raises(ValueError, match="unknown regularizer 'licoo'"):
        build_regularizer(bad)


def test_input_gradient_of_a_skipped_step_is_not_the_previous_steps():
    ref = torch.zeros(4, 32, 32)
    ref[:, :16] = 1.0
    reg = build_regularizer(GRAD)
    _, s = _inputs(GRAD, ref)
    reg(s)
    assert reg.input_grad is not None and reg.last is not None
    _, empty = _inputs(GRAD, torch.zeros(4, 32, 32))  # no image has a reference: the term is skipped
    assert float(total(reg(empty))) == 0.0
    assert reg.input_grad is None and reg.last is None


@pytest.mark.parametrize("name", [n for n in REGULARIZERS if n != "none"])
def test_every_registered_regularizer_is_finite_and_trains_the_model(name):
    """Conformance: what the Trainer relies on from any regulariser in the registry."""
    method = MethodConfig(regularizer=name, weight=1.0, reference="oracle")
    ref = torch.zeros(4, 32, 32)
    ref[:, 8:24, 8:24] = 1.0
    cls = REGULARIZERS.get(name)
    model, s = _inputs(method, ref, features=cls.needs_features)
    reg = build_regularizer(method, tiny_context(s.features))
    terms = reg(s)
    assert isinstance(reg, torch.nn.Module) and set(terms) == set(reg.terms), terms  # the named terms it declares
    assert not set(terms) & {"loss", "ce", "acc"}  # the trainer logs them beside these
    term = total(terms)
    assert term.dim() == 0 and bool(torch.isfinite(term)) and float(term) > 0
    if cls.needs_reference:  # an attention term: per-image values for the diagnostics
        assert reg.last is not None and reg.last.shape == (4,)
    assert (reg.input_grad is not None) == reg.needs_input_grad
    term.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0
    own = list(reg.parameters())
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in own)  # its own parameters train too


def tiny_context(features: torch.Tensor | None):
    """A run context with a random tiny VLM text tower (what a ``needs_text`` regulariser asks for)."""
    from paric.regularizers import RunContext
    from paric.vlm.factory import load_vlm

    def text_model():
        vlm = load_vlm("paric-tiny-cnn")
        return vlm.model, vlm.tokenizer

    return RunContext(class_names=["circle", "triangle"], text_model=text_model,
                      feature_shape=tuple(features.shape[1:]) if features is not None else None)


def test_the_trainer_optimises_checkpoints_and_logs_a_regularizers_own_parameters():
    """Issue 13: a regulariser is an nn.Module; its parameters train with the model, travel in the
    trainer's checkpoint, and each of its named terms is logged (the seam LICO's projection needs)."""
    from sklearn.datasets import load_digits

    from paric.config import Config
    from paric.regularizers.base import Regularizer
    from paric.train.data import iterate
    from paric.train.loop import Trainer

    class Projected(Regularizer):
        terms = ("mm", "ot")

        def __init__(self, weight: float) -> None:
            super().__init__(weight)
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, s):
            p = s.logits.softmax(1)
            return {"mm": self.weight * (self.scale - 2.0) ** 2, "ot": self.weight * p.var() * self.scale}

    REGULARIZERS.add("toy_projected", Projected)
    try:
        method = MethodConfig().model_copy(update={"regularizer": "toy_projected", "weight": 1.0})
        cfg = Config.model_validate({"classifier": {"arch": "small_resnet", "weights": "none", "width": 8,
                                                    "image_size": 16},
                                     "train": {"epochs": 1, "batch_size": 16, "lr": 0.05, "flip": False}})
        methods = {**cfg.train.methods, "toy": method}
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"methods": methods})})
        d = load_digits()
        x = (np.repeat(d.images[:64, :, :, None], 3, axis=3) * 15).astype(np.uint8)
        data = {"image": x, "label": (d.target[:64] % 2).astype(np.int64), "group": np.zeros(64, np.int64)}
        trainer = Trainer(cfg, "toy", 2, 1, 4, seed=0)
        assert any(p is trainer.regularizer.scale for g in trainer.opt.param_groups for p in g["params"])
        out = trainer.train_epoch(iterate(data, 16, True, 0, 0))
        assert {"train_mm", "train_ot", "train_loss"} <= set(out)
        moved = float(trainer.regularizer.scale)
        assert moved > 1.0  # pulled toward 2 by its own term
        state = trainer.state_dict()
        again = Trainer(cfg, "toy", 2, 1, 4, seed=0)
        again.load_state_dict(state)
        assert float(again.regularizer.scale) == moved
    finally:
        REGULARIZERS._entries.pop("toy_projected")


def test_a_new_regularizers_options_live_with_it_and_are_checked_at_load_time():
    """Issue 13: a regulariser with options is one module: its Options model, not MethodConfig fields."""
    from pydantic import BaseModel, Field

    from paric.catalog import load_config
    from paric.config import ConfigError
    from paric.regularizers.base import Regularizer

    class WithOptions(Regularizer):
        class Options(BaseModel):
            model_config = {"extra": "forbid"}
            alpha: float = Field(10.0, ge=0)

        @classmethod
        def from_method(cls, m):
            reg = cls(m.weight)
            reg.alpha = cls.options_of(m).alpha
            return reg

    REGULARIZERS.add("toy_options", WithOptions)
    try:
        key = "train.methods.toy"
        cfg = load_config(None, [f"{key}.regularizer=toy_options", f"{key}.reference=oracle", f"{key}.weight=1.0",
                                 f"{key}.options={{alpha: 2.5}}"])
        assert cfg.method("toy").options == {"alpha": 2.5}
        assert build_regularizer(cfg.method("toy")).alpha == 2.5
        assert load_config(None, [f"{key}.regularizer=toy_options"]).method("toy").options == {"alpha": 10.0}
        with pytest.raises(ConfigError, match=r"train\.methods\.toy.*options\.alpha.*toy_options"):
            load_config(None, [f"{key}.regularizer=toy_options", f"{key}.options={{alpha: -1}}"])
        with pytest.raises(ConfigError, match=r"options\.beta"):
            load_config(None, [f"{key}.regularizer=toy_options", f"{key}.options={{beta: 1}}"])
        with pytest.raises(ConfigError, match=r"options\.alpha.*regularizer 'gradcam'"):
            load_config(None, [f"{key}.regularizer=gradcam", f"{key}.options={{alpha: 1}}"])
    finally:
        REGULARIZERS._entries.pop("toy_options")


def test_each_regulariser_reads_its_own_options_and_the_old_flat_keys_still_reach_them():
    """Issue 29: ``gradient_outside``, ``gradcam`` and ``background_swap`` read their Options models; a
    method written the old way (``swap_loss="ce"``) builds the same regulariser, with a DeprecationWarning."""
    assert build_regularizer(GRAD.model_copy(update={"options": {"target": "ce", "norm": "l2"}})).norm == "l2"
    assert build_regularizer(CAM.model_copy(update={"options": {"mode": "match"}})).mode == "match"
    assert build_regularizer(CAM).mode == "energy_outside"  # the option's default
    with pytest.warns(DeprecationWarning, match=r"swap_loss is deprecated.*now options\.loss"):
        old = MethodConfig(regularizer="background_swap", weight=1.0, reference="oracle", swap_loss="ce")
    assert old.options == {"loss": "ce"} and build_regularizer(old).loss == "ce"
    with pytest.raises(ValueError, match="Input should be 'kl' or 'ce'"):
        build_regularizer(SWAP.model_copy(update={"options": {"loss": "mse"}}))
