"""Group metrics, calibration and adversarial robustness on cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from paric.eval.calibration import expected_calibration_error, negative_log_likelihood
from paric.eval.groups import balanced_accuracy, group_metrics
from paric.eval.robustness import fgsm, pgd


def test_group_metrics_worst_and_mean_of_groups():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    g = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    pred = np.array([0, 0, 0, 1, 1, 1, 0, 0])
    m = group_metrics(pred, y, g, 2, 4)
    assert m["per_group_acc"] == [1.0, 0.5, 1.0, 0.0]
    assert m["worst_group_acc"] == 0.0
    assert m["mean_group_acc"] == pytest.approx(0.625)
    assert m["acc"] == pytest.approx(5 / 8)
    assert balanced_accuracy(pred, y, 2) == pytest.approx((0.75 + 0.5) / 2)


def test_group_metrics_ignore_absent_groups():
    m = group_metrics(np.array([0, 1]), np.array([0, 1]), np.array([0, 3]), 2, 4)
    assert m["per_group_acc"] == [1.0, None, None, 1.0]
    assert m["worst_group_acc"] == 1.0


def test_ece_perfectly_calibrated_and_overconfident():
    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < conf  # accuracy equals confidence in expectation
    y = np.where(correct, 0, 1)
    probs = np.stack([conf, 1 - conf], 1)
    assert expected_calibration_error(probs, y) < 0.02
    over = np.stack([np.full(n, 0.99), np.full(n, 0.01)], 1)
    y_half = np.arange(n) % 2
    assert expected_calibration_error(over, y_half) == pytest.approx(0.49, abs=1e-6)


def test_nll_matches_definition():
    logits = np.array([[2.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 0])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert negative_log_likelihood(logits, y) == pytest.approx(-np.log(p[[0, 1], y]).mean())


def _linear_model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with torch.no_grad():
        m[1].weight.copy_(torch.tensor([[1.0] * 12, [-1.0] * 12]))
        m[1].bias.copy_(torch.tensor([-6.0, 6.0]))  # decision boundary at Σx = 6
    return m


def test_fgsm_and_pgd_stay_in_budget_and_hurt_accuracy():
    model = _linear_model()
    x = torch.full((8, 3, 2, 2), 0.5) + torch.linspace(-0.04, 0.04, 8).view(8, 1, 1, 1)
    x = x[x.flatten(1).sum(1) != 6]  # every point within 0.48 of the boundary
    y = model(x).argmax(1)  # correctly classified by construction
    assert len(set(y.tolist())) == 2
    eps = 0.05
    for adv in (fgsm(model, x, y, eps), pgd(model, x, y, eps, steps=5)):
        assert float((adv - x).abs().max()) <= eps + 1e-6
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
        assert (model(adv).argmax(1) == y).float().mean() < 1.0
    assert torch.equal(pgd(model, x, y, eps, steps=3, seed=1), pgd(model, x, y, eps, steps=3, seed=1))


def test_results_csv_has_one_row_per_method_and_metric(tmp_path):
    """results.csv beside results.json: what a spreadsheet reads, with the CI and every seed's value."""
    import csv

    from paric.report.results import write_results_csv

    methods = {"gals": {"worst_group_acc": {"mean": 0.8, "std": 0.05, "runs": [0.75, 0.85], "seeds": [0, 1],
                                            "ci": {"lo": 0.75, "hi": 0.85, "n": 2}},
                        "ece": {"mean": 0.1, "std": 0.0, "runs": [0.1, 0.1], "seeds": [0, 1]},
                        "group_labels": "none"},
               "vanilla": {"worst_group_acc": {"mean": 0.4, "std": 0.1, "runs": [0.3, 0.5], "seeds": [0, 1]}}}
    write_results_csv(methods, tmp_path / "results.csv")
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [(r["method"], r["metric"]) for r in rows] == [("gals", "worst_group_acc"), ("gals", "ece"),
                                                          ("vanilla", "worst_group_acc")]
    assert rows[0]["ci_lo"] == "0.75" and rows[0]["runs"] == "0.75 0.85" and rows[0]["n"] == "2"
    assert rows[1]["ci_lo"] == "" and not list(tmp_path.glob(".*"))  # no CI: empty; no temp file left
