"""Dataset metrics of GALS' Food-101 and COCO gender tables, on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from paric.data.formats import dataset_metrics
from paric.eval.fairness import (
    gender_ratio,
    outcome_divergence,
    outcome_rates,
    per_class_accuracy,
    worst_class_accuracy,
)

COCO = ["man", "woman", "person"]
MAN, WOMAN, PERSON = 0, 1, 2


def test_worst_class_accuracy_food():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 0, 2, 2, 2, 2])
    assert per_class_accuracy(y, p, 4) == [0.75, 0.5, 1.0, None]
    assert worst_class_accuracy(y, p, 4) == 0.5  # class 3 is absent: ignored, not 0
    m = dataset_metrics("food101", y, p, ["a", "b", "c", "d"])
    assert m == {"worst_class_acc": 0.5, "acc_a": 0.75, "acc_b": 0.5, "acc_c": 1.0}
    with pytest.raises(ValueError, match="empty"):
        worst_class_accuracy(np.array([]), np.array([]), 2)


def test_ratio_delta_by_hand():
    # 4 men, 4 women; predictions: man x5, woman x2, person x1
    y = np.array([MAN] * 4 + [WOMAN] * 4)
    p = np.array([MAN, MAN, MAN, WOMAN, MAN, MAN, WOMAN, PERSON])
    assert gender_ratio(y, p, MAN, WOMAN) == pytest.approx(2 / 5)
    m = dataset_metrics("coco_gender", y, p, COCO)
    assert m["ratio"] == pytest.approx(0.4) and m["ratio_delta"] == pytest.approx(0.6)
    assert m["acc_man"] == 0.75 and m["acc_woman"] == 0.25
    # person-labelled images do not count towards the ratio
    y2, p2 = np.append(y, [PERSON] * 3), np.append(p, [WOMAN] * 3)
    assert gender_ratio(y2, p2, MAN, WOMAN) == pytest.approx(0.4)
    assert math.isnan(gender_ratio(y, np.full(8, WOMAN), MAN, WOMAN))  # no man prediction


def test_outcome_divergence_by_hand_and_against_scipy():
    y = np.array([MAN] * 4 + [WOMAN] * 4)
    p = np.array([MAN, MAN, MAN, WOMAN, MAN, MAN, WOMAN, PERSON])
    w = outcome_rates(y, p, WOMAN, MAN)
    m = outcome_rates(y, p, MAN, WOMAN)
    np.testing.assert_allclose(w, [0.25, 0.5, 0.25])  # [correct, wrong gender, person]
    np.testing.assert_allclose(m, [0.75, 0.25, 0.0])
    mid = (w + m) / 2
    kl = lambda a, b: sum(x * math.log2(x / z) for x, z in zip(a, b) if x > 0)
    by_hand = 0.5 * kl(w, mid) + 0.5 * kl(m, mid)
    got = outcome_divergence(y, p, MAN, WOMAN)
    assert got == pytest.approx(by_hand, abs=1e-12)
    assert got == pytest.approx(jensenshannon(w, m, base=2) ** 2, abs=1e-12)
    assert dataset_metrics("coco_gender", y, p, COCO)["outcome_divergence"] == pytest.approx(by_hand)


def test_outcome_divergence_extremes():
    y = np.array([MAN] * 3 + [WOMAN] * 3)
    assert outcome_divergence(y, y.copy(), MAN, WOMAN) == pytest.approx(0.0)  # identical outcomes
    all_man = np.full(6, MAN)  # men all correct, women all wrong: disjoint supports -> 1 bit
    assert outcome_divergence(y, all_man, MAN, WOMAN) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both genders"):
        outcome_divergence(np.array([MAN, MAN]), np.array([MAN, MAN]), MAN, WOMAN)


def test_binary_gender_classes_and_other_formats():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 1, 1, 1])
    m = dataset_metrics("coco_gender", y, p, ["Man", "Woman"])  # names matched case-insensitively
    assert m["ratio"] == pytest.approx(3.0) and m["ratio_delta"] == pytest.approx(2.0)
    assert m["outcome_divergence"] == pytest.approx(jensenshannon([1.0, 0.0], [0.5, 0.5], base=2) ** 2)
    assert dataset_metrics("waterbirds", y, p, ["landbird", "waterbird"]) == {}
    assert dataset_metrics("synthetic", y, p, ["a", "b"]) == {}
    with pytest.raises(ValueError, match="no 'woman' class"):
        dataset_metrics("coco_gender", y, p, ["man", "female"])
    with pytest.raises(ValueError, match="differ in shape"):
        dataset_metrics("food101", y, p[:3], ["a", "b"])
