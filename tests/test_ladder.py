"""The map-quality ladder's references (pooled masks, halo cut), the CI and paired-difference code,
and the report's ladder and CI figures: against hand-made masks and known cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from paric.config import Config, MethodConfig
from paric.eval.stats import mean_ci, paired_differences, paired_difference
from paric.regularizers import build_reference
from paric.regularizers.reference import pooled_mask
from paric.report.ladder import ladder_lines, ladder_methods
from paric.report.table import fmt, paired_table


def _square(size: int = 32, lo: int = 8, hi: int = 16) -> torch.Tensor:
    m = torch.zeros(1, size, size)
    m[:, lo:hi, lo:hi] = 1.0
    return m


def test_pooled_mask_is_the_objects_share_of_each_cell():
    mask = _square(32, 6, 14)  # an 8×8 object that straddles 8-px cells
    pooled = pooled_mask(mask, 4)  # 4×4 cells of 8×8 px
    assert pooled.shape == (1, 4, 4)
    # the object covers rows/cols 6..13: 2 px in cell 0, 6 px in cell 1 along each axis
    expect = torch.zeros(4, 4)
    share = torch.tensor([2 / 8, 6 / 8, 0, 0])
    expect[:, :] = share[:, None] * share[None, :]
    assert torch.allclose(pooled[0], expect)
    assert math.isclose(float(pooled.sum() * 64), float(mask.sum()))  # mass is kept


def test_ladder_references_coarsen_the_mask_and_the_halo_cut_removes_the_halo():
    mask = _square(32, 8, 16)
    full = build_reference({"mask": mask}, MethodConfig(reference="oracle"), (32, 32)).map
    assert torch.equal(full, mask)
    at16 = build_reference({"mask": mask}, MethodConfig(reference="mask16"), (32, 32)).map
    at4 = build_reference({"mask": mask}, MethodConfig(reference="mask4"), (32, 32)).map
    cut4 = build_reference({"mask": mask}, MethodConfig(reference="mask4", reference_floor=0.5), (32, 32)).map

    def outside(a: torch.Tensor) -> float:
        return float((a * (1 - mask)).sum() / a.sum())

    # renormalised to a peak of 1; the coarser grid spreads more of its mass outside the object (the halo)
    assert float(at16.amax()) == pytest.approx(1.0) and float(at4.amax()) == pytest.approx(1.0)
    assert 0 < outside(at16) < outside(at4)
    assert outside(cut4) < outside(at4)  # the floor cuts the halo
    # a mask aligned with the 16-grid: its area-pooled map is exact, only bilinear upsampling blurs its edge
    assert float((at16 * mask).sum() / mask.sum()) > 0.75


def test_ladder_presets_exist_and_read_the_mask():
    cfg = Config()
    for name in ("ladder_mask4", "ladder_mask8", "ladder_mask16", "ladder_mask8_cut"):
        m = cfg.method(name)
        assert m.regularizer == cfg.method("gals").regularizer and m.reference.startswith("mask")
    assert cfg.method("ladder_mask8_cut").reference_floor == 0.5
    assert ladder_methods(cfg, ["vanilla", "gals", "ladder_mask8", "dfr", "lico"]) == ["gals", "ladder_mask8"]


def test_mean_ci_matches_a_t_interval_for_many_normal_values_and_is_degenerate_for_a_constant():
    rng = np.random.default_rng(1)
    v = rng.normal(0.5, 0.1, 400)
    ci = mean_ci(v)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v))
    assert ci["lo"] == pytest.approx(v.mean() - half, abs=0.15 * half)
    assert ci["hi"] == pytest.approx(v.mean() + half, abs=0.15 * half)
    assert ci["t_lo"] == pytest.approx(v.mean() - half, rel=0.02)
    assert mean_ci([0.3, 0.3, 0.3]) == {"mean": 0.3, "lo": 0.3, "hi": 0.3, "t_lo": 0.3, "t_hi": 0.3, "n": 3}
    assert mean_ci([0.2])["n"] == 1
    assert mean_ci([0.1, 0.9]) == mean_ci([0.1, 0.9])  # seeded: repeatable


def test_paired_difference_pairs_by_seed_not_by_position():
    a, b = [0.5, 0.9, 0.7], [0.4, 0.6]
    d = paired_difference(a, b, seeds_a=[0, 1, 2], seeds_b=[2, 0])  # b: seed 2 → 0.4, seed 0 → 0.6
    assert d["seeds"] == [0, 2]
    assert d["diffs"] == pytest.approx([0.5 - 0.6, 0.7 - 0.4])
    assert d["wins"] == 1 and d["n"] == 2
    assert paired_difference([0.1], [0.2], [0], [0]) is None  # one shared seed: no interval


def test_a_consistent_gain_excludes_zero_and_a_noisy_one_does_not():
    seeds = [0, 1, 2, 3, 4]
    table = {"vanilla": {"worst_group_acc": {"runs": [0.1, 0.3, 0.0, 0.2, 0.1], "seeds": seeds}},
             "gals": {"worst_group_acc": {"runs": [0.5, 0.7, 0.4, 0.6, 0.5], "seeds": seeds}},
             "paric_mean": {"worst_group_acc": {"runs": [0.9, 0.2, 0.8, 0.1, 0.7], "seeds": seeds}}}
    out = {(p["a"], p["b"]): p["worst_group_acc"] for p in paired_differences(table, "vanilla", [("paric_mean", "gals")])}
    assert set(out) == {("gals", "vanilla"), ("paric_mean", "vanilla"), ("paric_mean", "gals")}
    g = out[("gals", "vanilla")]
    assert g["mean"] == pytest.approx(0.4) and g["lo"] == pytest.approx(0.4) and g["wins"] == 5
    pg = out[("paric_mean", "gals")]
    assert pg["lo"] < 0 < pg["hi"]
    text = paired_table(paired_differences(table, "vanilla", []))
    assert "| gals − vanilla | +40.0 [+40.0, +40.0] | 5/5 |" in text


def test_table_cells_show_the_ci_where_there_is_one():
    assert fmt({"mean": 0.5, "std": 0.1, "ci": {"lo": 0.4, "hi": 0.6, "n": 3}}) == "50.0 [40.0, 60.0]"
    assert fmt({"mean": 0.5, "std": 0.1}) == "50.0 ± 10.0"


def test_ladder_section_says_why_it_was_skipped():
    assert "Skipped: the dataset has no object masks" in "\n".join(
        ladder_lines({"skipped": "the dataset has no object masks"}))


def test_ci_and_ladder_figures_are_written(tmp_path):
    from paric.report.figures import ladder_figure, methods_ci_figure

    e = lambda m: {"mean": m, "std": 0.1, "runs": [m - 0.1, m, m + 0.1], "ci": mean_ci([m - 0.1, m, m + 0.1])}
    methods = {"vanilla": {"worst_group_acc": e(0.3), "mean_group_acc": e(0.7)},
               "gals": {"worst_group_acc": e(0.6), "mean_group_acc": e(0.8)}}
    assert methods_ci_figure(methods, tmp_path / "ci.png").stat().st_size > 1000
    ladder = {"split": "train", "size": 32, "before": {"method": "vanilla", "worst_group_acc": e(0.3)},
              "points": [{"method": "ladder_mask8", "kind": "mask", "grid": "8×8", "halo_cut": False,
                          "train_groups": "all", "energy_in_mask": 0.68, "worst_group_acc": e(0.45)},
                         {"method": "gals", "kind": "vlm", "grid": "16×16", "halo_cut": False,
                          "train_groups": "all", "energy_in_mask": 0.5, "worst_group_acc": e(0.6)}]}
    assert ladder_figure(ladder, tmp_path / "ladder.png").stat().st_size > 1000
    assert "| gals | " in "\n".join(ladder_lines({**ladder, "points": [
        {**p, "reference": "det", "pointing_game": 0.9} for p in ladder["points"]]}))
