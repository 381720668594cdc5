"""LICO (issue 17): the batched Sinkhorn against POT, the OT term's gradient against finite
differences, manifold matching against a hand computation, and a training step that leaves the
text tower frozen and the exported classifier unchanged in size."""
from __future__ import annotations

import math

import numpy as np
import ot as pot
import pytest
import torch
from sklearn.datasets import load_digits

from paric.config import Config, MethodConfig
from paric.ot import sinkhorn_log, uniform
from paric.regularizers import RunContext
from paric.regularizers.lico import manifold_matching, ot_loss, transport_cost
from paric.vlm.factory import load_vlm


def test_batched_sinkhorn_matches_pot_on_random_problems():
    gen = torch.Generator().manual_seed(0)
    cost = torch.rand(5, 7, 4, generator=gen, dtype=torch.float64)
    a = torch.rand(5, 7, generator=gen, dtype=torch.float64) + 0.1
    b = torch.rand(5, 4, generator=gen, dtype=torch.float64) + 0.1
    a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    plans = sinkhorn_log(cost, a, b, eps=0.1, iters=2000)
    for i in range(5):
        ref = pot.sinkhorn(a[i].numpy(), b[i].numpy(), cost[i].numpy(), 0.1, method="sinkhorn_log",
                           numItermax=5000, stopThr=1e-13)
        np.testing.assert_allclose(plans[i].numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(plans.sum(-1).numpy(), a.numpy(), atol=1e-6)  # marginals
    np.testing.assert_allclose(plans.sum(-2).numpy(), b.numpy(), atol=1e-6)


def test_sinkhorn_tolerance_is_checked_per_problem():
    """One problem that converges slowly keeps the whole batch iterating."""
    gen = torch.Generator().manual_seed(1)
    easy = torch.zeros(1, 6, 6, dtype=torch.float64)
    hard = torch.rand(1, 6, 6, generator=gen, dtype=torch.float64) * 3
    cost = torch.cat([easy, hard])
    plans = sinkhorn_log(cost, uniform((2,), 6, cost), uniform((2,), 6, cost), eps=0.05, iters=20000, tol=1e-6)
    assert float((plans.sum(-1) - 1 / 6).abs().sum(-1).max()) < 1e-6


def test_ot_gradient_flows_through_the_cost_and_matches_finite_differences():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    prompts = torch.rand(2, 4, 5, generator=gen, dtype=torch.float64)
    loss = ot_loss(maps, prompts, eps=0.1, iters=100)
    (grad,) = torch.autograd.grad(loss, maps)
    assert float(grad.abs().sum()) > 0  # the public code's no_grad OT gives none
    assert torch.autograd.gradcheck(lambda m: ot_loss(m, prompts, 0.1, 100), (maps,), eps=1e-6, atol=1e-5)


def test_transport_cost_is_the_squared_distance_of_normalised_vectors():
    maps, prompts = torch.rand(1, 3, 6), torch.rand(1, 2, 6)
    a, b = maps[0] / maps[0].norm(dim=-1, keepdim=True), prompts[0] / prompts[0].norm(dim=-1, keepdim=True)
    by_hand = torch.stack([torch.stack([(a[i] - b[j]).square().sum() for j in range(2)]) for i in range(3)])
    torch.testing.assert_close(transport_cost(maps, prompts)[0], by_hand)


def test_manifold_matching_is_kl_of_the_text_affinities_to_the_image_ones():
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(4, 6, generator=gen), torch.randn(4, 3, generator=gen)
    tau = 0.7

    def affinities(z: np.ndarray) -> np.ndarray:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        out = np.zeros((len(z), len(z)))
        for i in range(len(z)):
            logits = {j: -np.linalg.norm(z[i] - z[j]) / tau for j in range(len(z)) if j != i}  # diagonal excluded
            norm = sum(math.exp(v) for v in logits.values())
            for j, v in logits.items():
                out[i, j] = math.exp(v) / norm
        return out

    f, g = affinities(img.numpy().astype(np.float64)), affinities(txt.numpy().astype(np.float64))
    by_hand = np.mean([sum(g[i, j] * math.log(g[i, j] / f[i, j]) for j in range(4) if j != i) for i in range(4)])
    assert float(manifold_matching(img, txt, tau)) == pytest.approx(by_hand, rel=1e-5)
    txt.requires_grad_(True)
    manifold_matching(img.requires_grad_(True), txt, tau).backward()
    assert txt.grad is None or float(txt.grad.abs().sum()) == 0  # A^G is a fixed target
    assert float(img.grad.abs().sum()) > 0


def _digits(n: int = 32) -> dict:
    d = load_digits()
    x = (np.repeat(d.images[:n, :, :, None], 3, axis=3) * 15).astype(np.uint8)
    return {"image": x, "label": (d.target[:n] % 2).astype(np.int64), "group": np.zeros(n, np.int64)}


def _cfg() -> Config:
    return Config.model_validate({"classifier": {"arch": "small_resnet", "weights": "none", "width": 8,
                                                 "image_size": 16},
                                  "train": {"epochs": 1, "batch_size": 16, "lr": 0.05, "flip": False,
                                            "methods": {"lico": {"options": {"n_ctx": 3}}}}})


def test_a_lico_step_trains_prompts_and_features_but_not_the_text_tower():
    from paric.train.data import iterate
    from paric.train.loop import Trainer

    vlm = load_vlm("paric-tiny-cnn")
    tower = {k: v.clone() for k, v in vlm.model.state_dict().items()}
    context = RunContext(class_names=["even", "odd"], text_model=lambda: (vlm.model, vlm.tokenizer))
    trainer = Trainer(_cfg(), "lico", 2, 1, 2, seed=0, context=context)
    reg = trainer.regularizer
    ctx0, mlp0 = reg.prompts.ctx.detach().clone(), reg.mlp[0].weight.detach().clone()
    assert not torch.equal(ctx0[0], ctx0[1])  # class contexts differ at initialisation (the public code's do not)
    out = trainer.train_epoch(iterate(_digits(), 16, True, 0, 0))
    assert {"train_mm", "train_ot"} <= set(out) and out["train_ot"] > 0 and out["train_mm"] > 0
    assert not torch.equal(reg.prompts.ctx, ctx0) and not torch.equal(reg.mlp[0].weight, mlp0)
    for k, v in vlm.model.state_dict().items():  # frozen: not one weight moved
        assert torch.equal(v, tower[k]), k
    assert not any(k.startswith("tower") for k in trainer.state_dict()["regularizer"])  # nor checkpointed
    vanilla = Trainer(_cfg(), "vanilla", 2, 1, 2, seed=0)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(trainer.best_model()) == count(vanilla.best_model())  # the text branch is not exported


def test_the_ot_targets_carry_the_class_name():
    """Issue 28 item 1: each of the n_ctx OT targets is a whole prompt (the context rolled by j) pooled at
    its end-of-text token. The context positions' outputs, used before, never see the class name under
    the causal mask: two class-name sets gave targets that differed by exactly 0."""
    from paric.regularizers.lico import FrozenTextTower, PromptLearner

    vlm = load_vlm("paric-tiny-cnn")
    tower = FrozenTextTower(vlm.model)
    a = PromptLearner(tower, vlm.tokenizer, ["circle", "triangle"], 3, 0.02, seed=0)
    b = PromptLearner(tower, vlm.tokenizer, ["square", "star"], 3, 0.02, seed=0)
    assert torch.equal(a.ctx, b.ctx)  # the same seed: only the class names differ
    with torch.no_grad():
        (ta, ca), (tb, cb) = a(tower), b(tower)
    assert ta.shape == (2, 3, ca.shape[-1])
    assert float((ta - tb).abs().amax(-1).min()) > 1e-3  # every target of every class moved with the name
    # the old targets (context positions of the unrolled prompt) are blind to the name: the defect is real
    seq_a, seq_b = a.sequences()[:, 0], b.sequences()[:, 0]
    with torch.no_grad():
        old_a, old_b = tower(seq_a)[:, 1:4], tower(seq_b)[:, 1:4]
    assert torch.equal(old_a, old_b)
    # prompt j's context is the class's context rolled by j; prompt 0 is the unrolled one (the MM feature)
    seq = a.sequences()
    assert torch.equal(seq[1, 2, 1:4], a.ctx[1].roll(2, dims=0))
    with torch.no_grad():
        direct = tower(torch.cat([a.prefix, a.ctx, a.suffix], 1))
    torch.testing.assert_close(ca, direct[torch.arange(2), a.tokens.argmax(-1)])
    # the rolled prompts differ from one another (n_ctx distinct targets, not one repeated)
    assert float((ta[:, 0] - ta[:, 1]).abs().max()) > 1e-4


def test_lico_is_a_method_without_a_reference_and_its_options_are_checked():
    from paric.catalog import CATALOG
    from paric.config import NAMES

    assert MethodConfig(regularizer="lico").reference == "none"
    CATALOG.method_in_use("lico", _cfg().method("lico"))  # no reference needed
    assert _cfg().method("lico").options["n_ctx"] >= 1  # the checked config holds its options' defaults
    with pytest.raises(ValueError, match=r"options.n_ctx: Input should be greater than or equal to 1"):
        MethodConfig.model_validate({"regularizer": "lico", "options": {"n_ctx": 0}}, context={NAMES: CATALOG})
    with pytest.raises(ValueError, match="needs a reference"):
        CATALOG.method_in_use("x", MethodConfig(regularizer="gradcam", weight=1.0))
