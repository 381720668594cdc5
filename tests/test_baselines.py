"""The group-robustness baselines (issue 18): Group DRO's online weights, DFR's last-layer refit,
the group-label column and the train-proportion-weighted accuracy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from paric.catalog import load_config
from paric.train.dfr import balanced_subsample, fit_dfr, penultimate, set_head
from paric.train.objectives import OBJECTIVES, GroupDRO, group_labels

REPO = Path(__file__).resolve().parents[1]


def test_group_dro_weights_move_toward_the_worst_group():
    """A toy problem: group 2's loss is the highest at every step, so q concentrates on it; the loss
    is Σ q_g ℓ_g with q carrying no gradient."""
    dro = GroupDRO([10, 10, 10], eta=0.5, adjust=0.0)
    group = torch.tensor([0, 0, 1, 1, 2, 2])
    ce = torch.tensor([0.1, 0.1, 0.5, 0.5, 2.0, 2.0], requires_grad=True)
    q_before = dro.q.clone()
    for _ in range(20):
        loss = dro(ce, group)
    assert float(dro.q[2]) > 0.9 and float(dro.q[2]) > float(q_before[2]) and float(dro.q.sum()) == pytest.approx(1)
    (g,) = torch.autograd.grad(loss, ce)
    np.testing.assert_allclose(g.numpy(), (dro.q[group] / 2).numpy(), rtol=1e-6)  # ∂/∂ce = q_g / n_g(batch)
    # the closed form of one update: q ∝ q · exp(η (ℓ + C/√n))
    dro = GroupDRO([4, 16, 1], eta=0.1, adjust=2.0)
    dro(ce.detach(), group)
    losses = torch.tensor([0.1, 0.5, 2.0]) + 2.0 / torch.tensor([4.0, 16.0, 1.0]).sqrt()
    expect = torch.exp(0.1 * losses) / torch.exp(0.1 * losses).sum()
    torch.testing.assert_close(dro.q, expect)


def test_objectives_and_group_labels_are_declared_per_method():
    cfg = load_config(REPO / "conf" / "default.yaml")
    assert set(OBJECTIVES.names()) >= {"erm", "group_dro"}
    labels = {m: group_labels(cfg.method(m)) for m in ("vanilla", "upweight", "gals", "group_dro", "dfr")}
    assert labels == {"vanilla": "none", "upweight": "none", "gals": "none", "group_dro": "training",
                      "dfr": "validation"}
    assert cfg.method("dfr_r100").base == "vanilla_r100"
    from paric.train.loop import selection_metric

    assert selection_metric(cfg.method("group_dro")) == "val_worst_group_acc"
    assert selection_metric(cfg.method("gals")) == "val_balanced_acc"


def test_group_dro_draws_group_balanced_batches_as_published():
    """Issue 28 item 2: Sagawa et al.'s every command passes --reweight_groups (WeightedRandomSampler at
    1/n_g). Waterbirds-like counts at ratio 0.95: uniform batches of 32 hold a minority group ~0.8
    times and miss it in ~44 % of batches; group-balanced ones hold every group 8 times in expectation."""
    from paric.train.data import epoch_order, group_balanced_probabilities, iterate

    group = np.repeat([0, 1, 2, 3], [950, 50, 50, 950])
    arrays = {"label": group // 2, "group": group, "x": np.arange(len(group))}
    cfg = load_config(REPO / "conf" / "default.yaml")
    assert cfg.method("group_dro").sampling == "group_balanced" and cfg.method("vanilla").sampling == "uniform"
    assert cfg.method("group_dro_l2").weight_decay == pytest.approx(1e-2)

    def counts(sampling: str, epochs: int = 20) -> np.ndarray:
        rows = [np.bincount(b["group"].numpy(), minlength=4) for e in range(epochs)
                for b in iterate(arrays, 32, True, 0, e, sampling) if len(b["group"]) == 32]
        return np.array(rows)

    balanced, uniform = counts("group_balanced"), counts("uniform")
    np.testing.assert_allclose(balanced.mean(0), [8, 8, 8, 8], atol=0.5)
    assert (uniform[:, 1] == 0).mean() > 0.3 and uniform[:, 1].mean() < 1.2
    assert (balanced[:, 1] == 0).mean() < 0.02
    p = group_balanced_probabilities(group)
    assert p.sum() == pytest.approx(1) and p[group == 1].sum() == pytest.approx(0.25)
    # a function of (seed, epoch) only, with replacement, as many rows as the split
    a, b = epoch_order(2000, True, 3, 1, p), epoch_order(2000, True, 3, 1, p)
    assert (a == b).all() and len(a) == 2000 and len(np.unique(a)) < 2000
    assert not (epoch_order(2000, True, 3, 2, p) == a).all()


def test_a_method_weight_decay_reaches_the_optimiser_and_group_labels_decide_selection():
    from paric.train.loop import Trainer, selection_metric

    cfg = load_config(REPO / "conf" / "default.yaml", ["train.methods.vanilla.sampling=group_balanced"])
    counts = [10, 10, 10, 10]
    assert Trainer(cfg, "group_dro_l2", 2, 4, 4, seed=0, group_counts=counts).opt.param_groups[0]["weight_decay"] \
        == pytest.approx(1e-2)
    assert Trainer(cfg, "group_dro", 2, 4, 4, seed=0, group_counts=counts).opt.param_groups[0]["weight_decay"] \
        == pytest.approx(cfg.train.weight_decay)
    # group-balanced sampling alone uses training group labels, so the run selects on worst-group validation
    assert group_labels(cfg.method("vanilla")) == "training"
    assert selection_metric(cfg.method("vanilla")) == "val_worst_group_acc"


def _toy(seed: int = 0, n: int = 400, d: int = 6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    place = np.where(rng.random(n) < 0.9, y, 1 - y)  # the spurious feature agrees with y 90 % of the time
    x = np.c_[y + 0.8 * rng.standard_normal(n), 3 * place + 0.3 * rng.standard_normal(n),
              rng.standard_normal((n, d - 2))] * rng.uniform(0.5, 3, d)
    return x, y, y * 2 + place


def test_dfr_fits_group_balanced_data_only_and_matches_scikit_learn():
    x, y, g = _toy()
    fit = fit_dfr(x, y, g, 2, 4, [1.0, 0.1], subsamples=1, seed=0)
    (rows,) = fit.subsamples
    counts = np.bincount(g[rows], minlength=4)
    assert len(set(counts.tolist())) == 1 and counts[0] == np.bincount(g).min()  # each group: the rarest's size
    scaler = StandardScaler().fit(x)
    ref = LogisticRegression(l1_ratio=1.0, C=fit.c, solver="liblinear", random_state=0).fit(
        scaler.transform(x[rows]), y[rows])
    logits = x @ fit.weight.T + fit.bias
    margin = logits[:, 1] - logits[:, 0]
    np.testing.assert_allclose(margin, ref.decision_function(scaler.transform(x)), rtol=1e-6, atol=1e-8)
    assert set(fit.tune) == {1.0, 0.1}
    # the refit layer leans on the shape, not the place: a minority-group point is classified by its label
    minority = (g == 1) | (g == 2)
    assert (np.argmax(logits, 1)[minority] == y[minority]).mean() > 0.7


def test_dfr_standardises_with_the_train_embeddings_and_tunes_every_c_on_one_subsample(monkeypatch):
    """Issue 28 item 6, as the authors: the scaler is fitted on the training embeddings, every C is fitted
    on the same balanced tuning rows, and the final layer averages 20 fits."""
    import paric.train.dfr as dfr
    from paric.train.dfr import DfrOptions

    assert DfrOptions().subsamples == 20
    x, y, g = _toy(seed=1)
    train_x = x * 1.7 + 3.0  # other statistics than validation's
    fits: list[tuple[np.ndarray, float]] = []
    real = dfr._fit
    monkeypatch.setattr(dfr, "_fit", lambda X, yy, c, seed: fits.append((X.copy(), c)) or real(X, yy, c, seed))
    fit = fit_dfr(x, y, g, 2, 4, [1.0, 0.3, 0.1], subsamples=1, seed=0, train_feats=train_x)
    tuning = fits[:3]
    assert [c for _, c in tuning] == [1.0, 0.3, 0.1]
    assert all(np.array_equal(tuning[0][0], X) for X, _ in tuning)  # one subsample for every C
    scaler = StandardScaler().fit(train_x)
    (rows,) = fit.subsamples
    ref = LogisticRegression(l1_ratio=1.0, C=fit.c, solver="liblinear", random_state=0).fit(
        scaler.transform(x[rows]), y[rows])
    margin = (x @ fit.weight.T + fit.bias) @ np.array([-1.0, 1.0])
    np.testing.assert_allclose(margin, ref.decision_function(scaler.transform(x)), rtol=1e-6, atol=1e-8)


def test_dfr_writes_the_layer_into_the_classifier_head():
    from paric.models.classifier import build_classifier

    model = build_classifier("small_resnet", 2, width=4).eval()
    x = torch.rand(16, 3, 32, 32)
    batches = [{"image": x[:8], "label": torch.zeros(8, dtype=torch.long), "group": torch.zeros(8, dtype=torch.long)},
               {"image": x[8:], "label": torch.ones(8, dtype=torch.long), "group": torch.full((8,), 3)}]
    feats, y, g = penultimate(model, model.head, batches)
    assert feats.shape == (16, model.head.in_features) and list(g[:8]) == [0] * 8
    rng = np.random.default_rng(0)
    fit = fit_dfr(feats + rng.normal(0, 1e-3, feats.shape), y, g, 2, 4, [1.0], 2, 0)
    set_head(model.head, fit)
    with torch.no_grad():
        out = model(x).double().numpy()
    np.testing.assert_allclose(out, feats @ fit.weight.T + fit.bias, rtol=1e-4, atol=1e-4)


def test_balanced_subsample_is_seeded_and_without_replacement():
    g = np.array([0] * 5 + [1] * 2 + [3] * 9)
    a = balanced_subsample(g, np.random.default_rng(1))
    assert np.array_equal(a, balanced_subsample(g, np.random.default_rng(1)))
    assert len(set(a.tolist())) == len(a) == 6 and np.bincount(g[a]).tolist() == [2, 2, 0, 2]


def test_the_average_accuracy_weights_groups_by_their_train_share():
    from paric.stages.compare import weighted_accuracy
    from paric.report.table import methods_table

    p = np.array([0.7, 0.05, 0.05, 0.2])
    assert weighted_accuracy({"per_group_acc": [1.0, 0.0, 0.5, 1.0]}, p) == pytest.approx(0.7 + 0.025 + 0.2)
    assert weighted_accuracy({"per_group_acc": [1.0, None, 0.5, 1.0]}, p) == pytest.approx(0.925 / 0.95)
    row = methods_table({"dfr": {"group_labels": "validation", "selection": "C by worst-group val",
                                 "worst_group_acc": {"mean": 0.5, "std": 0.1, "runs": [0.4, 0.6]}}})
    assert "| dfr | validation | 50.0 ± 10.0 |" in row and row.rstrip().endswith("C by worst-group val |")


def test_a_group_dro_run_checkpoints_its_weights_and_selects_by_worst_group():
    """Real digits through the Trainer: the group weights move off uniform, travel in the checkpoint,
    and the best epoch is the best worst-group validation epoch (val_worst_group_acc in history)."""
    from sklearn.datasets import load_digits

    from paric.config import Config
    from paric.train.data import iterate
    from paric.train.loop import Trainer

    cfg = Config.model_validate({"classifier": {"arch": "small_resnet", "weights": "none", "width": 8,
                                                "image_size": 16},
                                 "train": {"epochs": 2, "batch_size": 16, "lr": 0.05, "flip": False}})
    d = load_digits()
    x = (np.repeat(d.images[:96, :, :, None], 3, axis=3) * 15).astype(np.uint8)
    y = (d.target[:96] % 2).astype(np.int64)
    data = {"image": x, "label": y, "group": y * 2 + (d.target[:96] > 4)}
    counts = np.bincount(data["group"][:64], minlength=4).tolist()
    train = {k: v[:64] for k, v in data.items()}
    val = {k: v[64:] for k, v in data.items()}
    t = Trainer(cfg, "group_dro", 2, 4, 4, seed=0, group_counts=counts)
    for epoch in range(2):
        t.train_epoch(iterate(train, 16, True, 0, epoch))
        m = t.validate(iterate(val, 32, False))
        t.epoch += 1
        t.history.append({**m, "epoch": t.epoch})
    assert not torch.allclose(t.objective.q, torch.full((4,), 0.25))
    best = max(t.history, key=lambda h: h["val_worst_group_acc"])
    assert t.best["score"] == best["val_worst_group_acc"]
    again = Trainer(cfg, "group_dro", 2, 4, 4, seed=0, group_counts=counts)
    again.load_state_dict(t.state_dict())
    torch.testing.assert_close(again.objective.q, t.objective.q)


def test_jtt_error_set_is_what_the_first_stage_gets_wrong_and_is_upsampled():
    from paric.train.jtt import error_set, upsampled_rows

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))  # predicts the larger coordinate
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.2, 0.1]]).view(4, 2, 1)
    y = torch.tensor([0, 1, 1, 1])
    errors = error_set(model, [{"image": x[:2], "label": y[:2]}, {"image": x[2:], "label": y[2:]}])
    assert errors.tolist() == [False, False, True, True]
    rows = upsampled_rows(errors, 3)
    assert np.bincount(rows).tolist() == [1, 1, 3, 3]
    assert upsampled_rows(errors, 1).tolist() == [0, 1, 2, 3]


def test_jtt_is_refused_where_it_cannot_run(tmp_path, tiny_overrides):
    """JTT upsamples rows of the in-memory train set: on Ray Train (num_workers > 0, final runs and sweep
    trials) it fails before any stage, naming the key; in the plain loop its sweep is accepted."""
    from paric.stages.pipeline import check_pipeline_config

    def on_ray_train(c):
        return c.model_copy(update={"train": c.train.model_copy(update={"num_workers": 1})})

    cfg = load_config(REPO / "conf" / "default.yaml", [*tiny_overrides, f"run.output_dir={tmp_path}",
                                                       "train.compare=[vanilla,jtt]", "report.after=jtt"])
    with pytest.raises(ValueError, match="two-stage method 'jtt' runs in the plain loop only"):
        check_pipeline_config(on_ray_train(cfg))
    swept = load_config(REPO / "conf" / "default.yaml",
                        [*tiny_overrides, "train.compare=[vanilla]", "report.after=vanilla", "sweep.methods=[jtt]",
                         "sweep.spaces.jtt.two_stage_options.up={dist: categorical, choices: [10, 20]}"])
    check_pipeline_config(swept)  # train.num_workers=0: each trial runs both stages in its actor
    with pytest.raises(ValueError, match="is two-stage method 'jtt', which runs in the plain loop only"):
        check_pipeline_config(on_ray_train(swept))


def test_abn_trains_its_attention_branch_and_the_saved_model_reloads_with_it():
    """A Trainer step of ``abn`` moves the attention branch's weights (its CE is the ``branch`` term);
    the perception branch reads (1 + M)·features; a saved state reloads as an ABN classifier."""
    from sklearn.datasets import load_digits

    from paric.config import Config
    from paric.models.abn import ABNClassifier
    from paric.models.classifier import classifier_for_state
    from paric.train.data import iterate
    from paric.train.loop import Trainer

    cfg = Config.model_validate({"classifier": {"arch": "small_resnet", "weights": "none", "width": 8,
                                                "image_size": 16},
                                 "train": {"epochs": 1, "batch_size": 16, "lr": 0.05, "flip": False}})
    d = load_digits()
    x = (np.repeat(d.images[:64, :, :, None], 3, axis=3) * 15).astype(np.uint8)
    data = {"image": x, "label": (d.target[:64] % 2).astype(np.int64), "group": np.zeros(64, np.int64)}
    t = Trainer(cfg, "abn", 2, 1, 4, seed=0)
    assert isinstance(t.model, ABNClassifier)
    before = {k: v.clone() for k, v in t.model.branch.state_dict().items()}
    out = t.train_epoch(iterate(data, 16, True, 0, 0))
    assert out["train_branch"] > 0 and out["train_loss"] > out["train_ce"]
    moved = [k for k, v in t.model.branch.state_dict().items() if not torch.equal(v, before[k])]
    assert any("att_conv." in k for k in moved) and any("att_conv3" in k for k in moved)
    model = t.best_model()  # a deep copy: the last forward's attention is not carried along
    xb = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        logits = model(xb)
        _, m = model.take_attention()
    assert m.shape[1] == 1 and float(m.min()) >= 0 and float(m.max()) <= 1
    again = classifier_for_state("small_resnet", 2, 8, model.state_dict()).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(xb), logits)


def test_the_attention_branch_is_fukui_et_al_s():
    """Issue 28 item 7: a stage of layer4's blocks (stride 1, layer4's width) on the stage-3 features,
    bn_att, a 1×1 conv to K maps, bn_att2 + ReLU, a 3×3 att_conv3 + BN + sigmoid for the map, and a 1×1
    conv + GAP for the branch's logits; for ResNet-50, three Bottlenecks from 1024 to 2048 channels."""
    from torchvision.models import resnet50
    from torchvision.models.resnet import Bottleneck

    from paric.models.abn import AttentionBranch
    from paric.models.classifier import build_classifier

    small = build_classifier("small_resnet", 3, width=8, architecture="abn")
    b = small.branch
    assert len(b.att_layer) == len(small.net.layer4) == 1
    assert b.att_layer[0].conv1.in_channels == 32 and b.att_layer[0].conv2.out_channels == 64
    assert b.att_conv3.kernel_size == (3, 3) and b.att_conv3.out_channels == 1 and b.bn_att2.num_features == 3
    big = AttentionBranch.for_resnet(resnet50(weights=None), 2)
    assert len(big.att_layer) == 3 and isinstance(big.att_layer[0], Bottleneck)
    assert big.att_layer[0].conv1.in_channels == 1024 and big.bn_att.num_features == 2048
    assert all(getattr(blk, "stride", 1) == 1 for blk in big.att_layer)  # stride 1: the stage-3 grid kept
    logits, m = big.eval()(torch.rand(2, 1024, 7, 7))
    assert logits.shape == (2, 2) and m.shape == (2, 1, 7, 7)


def test_a_posthoc_method_needs_a_trained_base_in_the_table(tiny_overrides):
    from paric.stages.pipeline import check_pipeline_config

    conf = REPO / "conf" / "default.yaml"
    with pytest.raises(ValueError, match="starts from base 'vanilla', which train.compare"):
        check_pipeline_config(load_config(conf, [*tiny_overrides, "train.compare=[dfr]"]))
    with pytest.raises(ValueError, match="must be a trained method"):
        check_pipeline_config(load_config(conf, [*tiny_overrides, "train.compare=[vanilla,dfr,dfr_r100]",
                                                 "train.methods.dfr_r100.base=dfr", "train.methods.dfr_r100.posthoc=dfr"]))


def test_a_changed_form_is_in_its_runs_keys(monkeypatch):
    """LICO, ABN (regulariser versions) and DFR (its protocol's form) retrain instead of reusing a run
    stored under the earlier form; an unchanged method's key carries no version."""
    import paric.stages.train as train_stage
    from paric.train.dfr import FORM_VERSION

    monkeypatch.setattr(train_stage, "upstream_key", lambda cfg, columns: "upstream")
    monkeypatch.setattr(train_stage, "vlm_id", lambda cfg: "vlm")
    cfg = load_config(REPO / "conf" / "default.yaml")
    assert f":dfr-v{FORM_VERSION}" in train_stage.run_key(cfg, "dfr")
    assert f":dfr-v{FORM_VERSION}" in train_stage.fit_key(cfg, "dfr")
    assert train_stage.run_key(cfg, "lico").endswith(":lico-v2") and train_stage.run_key(cfg, "abn").endswith(":abn-v2")
    assert "-v" not in train_stage.run_key(cfg, "vanilla").rsplit(":", 1)[-1]


def test_every_posthoc_value_is_a_registered_posthoc_method():
    """The stages ask ``POSTHOC`` (run, key form, selection) instead of testing a method's name: a value
    of ``MethodConfig.posthoc`` other than 'none' must be registered (refused at load time, naming the
    key and the registry's names), and DFR's table line says how its model is chosen."""
    from paric.config import ConfigError
    from paric.stages.compare import selection_rule
    from paric.train.posthoc import POSTHOC

    with pytest.raises(ConfigError, match=r"train.methods.dfr.*posthoc: unknown post-hoc method 'dfx'; known: none, "
                                          r"dfr"):
        load_config(REPO / "conf" / "default.yaml", ["train.methods.dfr.posthoc=dfx"])
    cfg = load_config(REPO / "conf" / "default.yaml")
    assert selection_rule(cfg.method("dfr")) == POSTHOC.get("dfr").selection == "C by worst-group val"
    assert selection_rule(cfg.method("vanilla")) == "class-balanced val"


def test_group_dro_and_dfr_read_their_own_options():
    """Issue 29: η and C are Group DRO's ``objective_options``, DFR's Cs its ``posthoc_options``."""
    from paric.train.posthoc import POSTHOC

    cfg = load_config(REPO / "conf" / "default.yaml", ["train.methods.group_dro.objective_options.eta=0.5",
                                                       "train.methods.dfr.posthoc_options.c=[0.3]"])
    dro = OBJECTIVES.get("group_dro").build(cfg.method("group_dro"), [4, 16, 1, 9])
    assert dro.eta == 0.5 and float(dro.adjustment[1]) == pytest.approx(2.0 / 4)  # the preset's C = 2 kept
    opts = POSTHOC.get("dfr").options_of(cfg.method("dfr"))
    assert opts.c == [0.3] and opts.subsamples == 20


def test_jtts_first_stage_trains_its_own_epochs_and_upsamples_by_its_options(monkeypatch):
    """JTT behind the two-stage seam: ``two_stage_options`` (epochs, up) set the first stage's length and
    the error set's upsampling; what it reports goes into the run's result."""
    from sklearn.datasets import load_digits

    import paric.train.run as run
    from paric.config import Config
    from paric.train.two_stage import TWO_STAGE

    monkeypatch.setattr(run, "class_names", lambda root: ["even", "odd"])
    epochs = []
    real_fit = run.fit
    monkeypatch.setattr(run, "fit", lambda t, *a, **k: epochs.append(t.cfg.train.epochs) or real_fit(t, *a, **k))
    cfg = Config.model_validate({"classifier": {"arch": "small_resnet", "weights": "none", "width": 8,
                                                "image_size": 16},
                                 "train": {"epochs": 5, "batch_size": 16, "lr": 0.05, "flip": False, "methods": {
                                     "jtt": {"two_stage_options": {"epochs": 1, "up": 3}}}}})
    d = load_digits()
    x = (np.repeat(d.images[:96, :, :, None], 3, axis=3) * 15).astype(np.uint8)
    y = (d.target[:96] % 2).astype(np.int64)
    data = {"image": x, "label": y, "group": y * 2 + (d.target[:96] > 4)}
    train, val = {k: v[:64] for k, v in data.items()}, {k: v[64:] for k, v in data.items()}
    jtt = TWO_STAGE.get(cfg.method("jtt").two_stage)
    rows, report = jtt.train_set(cfg, "jtt", 0, train, val, 2, 4, None, Path("."))
    assert epochs == [1]  # the first stage's own schedule, not train.epochs
    assert len(rows["label"]) == 64 + 2 * report["jtt_errors"]  # each error row 3 times in all
