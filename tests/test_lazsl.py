"""LaZSL (issue 16): descriptor sentences and fallbacks, seeded crops, the batched
OT classifier against POT and per image, and the relevance map painted from the plan."""
from __future__ import annotations

import json

import numpy as np
import ot as pot
import pytest
import torch
import torch.nn.functional as F

from paric.data.descriptors import SHAPE_DESCRIPTORS, DescriptorError, build, load, sentence
from paric.zeroshot.lazsl import LazslConfig, classify, crop_boxes, crop_mass, crop_views, crop_weights, relevance


def test_sentences_read_the_first_word_and_fix_articles():
    assert sentence("circle", "a round outline") == "circle, which is a round outline"
    assert sentence("oyster", "a irregular shell") == "oyster, which is an irregular shell"
    assert sentence("dog", "angular ears") == "dog, which has angular ears"  # DCLIP's letter rule: "which is"
    assert sentence("bird", "can fly") == "bird, which can fly"
    assert sentence("steak", "grilled over charcoal.") == "steak, which is grilled over charcoal"


def test_a_class_without_descriptors_falls_back_to_its_prompt_and_is_named(tmp_path):
    table = {"Circle": ["no corners"], "donuts": [], "square": ["  "]}
    d = build(["circle", "donuts", "square", "star"], table)
    assert d.sentences[0] == ["circle, which has no corners"]  # matched case-insensitively
    assert d.sentences[1] == ["a photo of a donuts"] and d.fell_back == ["donuts", "square", "star"]
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"circle": "round"}))
    with pytest.raises(DescriptorError, match=r"d.json: key 'circle': expected a list of descriptor strings"):
        load(path)
    path.write_text("[1]")
    with pytest.raises(DescriptorError, match="expected a JSON object"):
        load(path)
    assert set(SHAPE_DESCRIPTORS) == {"circle", "square", "triangle", "star"}


def test_crops_are_the_same_for_the_same_seed_and_image_whatever_the_batch():
    a = crop_boxes(["img1", "img2"], 64, 48, 10, seed=0)
    b = crop_boxes(["img2"], 64, 48, 10, seed=0)
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])
    assert not torch.equal(crop_boxes(["img2"], 64, 48, 10, seed=1), b)
    side = a[..., 2] - a[..., 0]
    assert torch.allclose(side, a[..., 3] - a[..., 1])  # square
    assert bool(((side >= 0.6 * 48 - 1e-4) & (side <= 0.9 * 48 + 1e-4)).all())
    assert bool((a[..., 2] <= 48 + 1e-4).all() and (a[..., 3] <= 64 + 1e-4).all() and (a >= 0).all())
    views = crop_views(torch.rand(2, 3, 64, 48), a, 16)
    assert views.shape == (2, 10, 3, 16, 16)


def _problem(seed: int = 0, B: int = 3, M: int = 12, C: int = 4, N: int = 5, D: int = 8):
    gen = torch.Generator().manual_seed(seed)
    g = F.normalize(torch.randn(B, D, generator=gen), dim=-1)
    r = F.normalize(g.unsqueeze(1) + 0.7 * torch.randn(B, M, D, generator=gen), dim=-1)
    t = F.normalize(torch.randn(C, N, D, generator=gen), dim=-1)
    valid = torch.ones(C, N, dtype=torch.bool)
    valid[1, 3:] = False  # a class with fewer descriptors (padding)
    return g, r, t * valid.unsqueeze(-1), valid


def test_the_plan_matches_pot_and_its_marginals_hold():
    g, r, t, valid = _problem()
    out = classify(g, r, t, valid, LazslConfig(iters=3000, tol=None))
    a = crop_mass(g, r)
    fused = (0.2 * torch.einsum("bd,cnd->bcn", g, t).unsqueeze(2) + 0.8 * torch.einsum("bmd,cnd->bcmn", r, t))
    for bi, ci in [(0, 0), (2, 1)]:
        rows, cols = a[bi] > 0, valid[ci]
        ref = pot.sinkhorn(a[bi][rows].double().numpy(), (cols / cols.sum()).double()[cols].numpy(),
                           (1 - fused[bi, ci][rows][:, cols]).double().numpy(), 0.1, method="sinkhorn_log",
                           numItermax=20000, stopThr=1e-7)
        np.testing.assert_allclose(out.plans[bi, ci][rows][:, cols].numpy(), ref, atol=1e-5)
        assert float(out.plans[bi, ci][~rows].abs().sum() + out.plans[bi, ci][:, ~cols].abs().sum()) == 0.0
    default = classify(g, r, t, valid)  # ε 0.1, ≤ 100 iterations, tolerance 1e-2 per problem
    b = (valid / valid.sum(-1, keepdim=True)).float()
    assert float((default.plans.sum(-2) - b).abs().max()) <= 1e-3
    assert float((default.plans.sum(-1) - a.unsqueeze(1)).abs().sum(-1).max()) <= 1e-2


def test_batched_equals_per_image():
    g, r, t, valid = _problem(seed=1)
    whole = classify(g, r, t, valid)
    for i in range(len(g)):
        alone = classify(g[i:i + 1], r[i:i + 1], t, valid)
        torch.testing.assert_close(alone.scores, whole.scores[i:i + 1], rtol=0, atol=1e-6)
        torch.testing.assert_close(alone.by_description, whole.by_description[i:i + 1])


def test_relevance_paints_the_transported_mass_over_the_crops():
    plans = torch.zeros(1, 2, 2, 3)
    plans[0, 1, 0] = 0.3  # class 1: crop 0 carries 0.9, crop 1 carries 0.1
    plans[0, 1, 1, 0] = 0.1
    boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]]])
    heat = relevance(crop_weights(plans, torch.tensor([1])), boxes, 4, 4)
    assert float(heat[0, 0, 0]) == pytest.approx(1.0) and float(heat[0, 3, 3]) == pytest.approx(0.1 / 0.9)
    assert float(heat[0, 0, 3]) == 0.0


def test_zero_shot_reports_three_classifiers_and_its_clip_matches_the_vlm_stage():
    """On a random tiny VLM: the CLIP column is the vlm stage's own zero-shot accuracy; every
    classifier's accuracy is a share of the images; a class without descriptors is named."""
    from paric.vlm.factory import load_vlm
    from paric.vlm.pretrain import zero_shot_accuracy
    from paric.zeroshot.evaluate import zero_shot

    vlm = load_vlm("paric-micro-vit")
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(6, vlm.image_size, vlm.image_size, 3, generator=gen) * 255).to(torch.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    classes = ["circle", "square", "blob"]
    desc = build(classes, SHAPE_DESCRIPTORS)
    out = zero_shot(vlm, images, labels, [f"i{i}" for i in range(6)], classes, desc, "a photo of a {}",
                    LazslConfig(crops=4), seed=0, batch_size=4)
    assert out["fell_back"] == ["blob"] and out["n"] == 6 and out["crops"] == 4
    assert out["acc"]["clip"] == pytest.approx(zero_shot_accuracy(vlm, images, labels, classes, "a photo of a {}"))
    assert all(0.0 <= a <= 1.0 for a in out["acc"].values())


def test_relevance_by_score_share_follows_the_crops_that_match_the_class():
    plans = torch.full((1, 1, 2, 1), 0.5)  # equal mass on both crops
    fused = torch.tensor([0.8, 0.2]).view(1, 1, 2, 1)
    boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]]])
    mass = relevance(crop_weights(plans, torch.tensor([0])), boxes, 4, 4)
    score = relevance(crop_weights(plans, torch.tensor([0]), fused), boxes, 4, 4)
    assert float(mass[0, 3, 3]) == pytest.approx(1.0)  # mass cannot tell the crops apart
    assert float(score[0, 0, 0]) == pytest.approx(1.0) and float(score[0, 3, 3]) == pytest.approx(0.25)


def test_the_transported_mass_map_does_not_depend_on_the_class():
    """Why the source writes the score-share map too: each crop's transported mass is its marginal,
    the same for every class (to Sinkhorn's tolerance)."""
    g, r, t, valid = _problem(seed=2)
    out = classify(g, r, t, valid, LazslConfig(iters=3000, tol=None))
    boxes = crop_boxes([f"i{i}" for i in range(len(g))], 16, 16, r.shape[1], seed=0)
    by_class = [relevance(crop_weights(out.plans, torch.full((len(g),), c)), boxes, 16, 16) for c in range(t.shape[0])]
    assert all(float((m - by_class[0]).abs().max()) < 1e-4 for m in by_class[1:])
    shares = [relevance(crop_weights(out.plans, torch.full((len(g),), c), out.fused), boxes, 16, 16) for c in range(2)]
    assert float((shares[0] - shares[1]).abs().max()) > 1e-3


def _source(crops: int = 5):
    from paric.attention.gradcam import resolve_layer
    from paric.catalog import MAP_SOURCES
    from paric.config import Config
    from paric.vlm.factory import load_vlm

    cfg = Config.model_validate({"lazsl": {"crops": crops}, "maps": {"sources": ["lazsl"]}})
    vlm = load_vlm("paric-micro-vit")
    src = MAP_SOURCES.get("lazsl")(cfg)
    grid = resolve_layer(vlm.model.visual, vlm.image_size).grid
    src.setup(vlm, ["circle", "triangle"], grid)
    return src, vlm, grid


def test_the_lazsl_source_writes_maps_at_the_store_grid_whatever_the_batch():
    src, vlm, grid = _source()
    gen = torch.Generator().manual_seed(0)
    x = vlm.normalise((torch.rand(3, vlm.image_size, vlm.image_size, 3, generator=gen) * 255).to(torch.uint8))
    ids, labels = ["a", "b", "c"], np.array([0, 1, 0])
    cols = src.compute(x, ids, labels)
    assert set(cols) == {c.name for c in src.columns} == {"map_lazsl", "map_lazsl_score"}
    for m in cols.values():
        assert m.shape == (3, *grid) and m.min() >= 0 and np.allclose(m.max((1, 2)), 1.0)
    alone = src.compute(x[1:2], ids[1:2], labels[1:2])
    for k in cols:
        np.testing.assert_allclose(alone[k][0], cols[k][1], atol=1e-6)
    assert src.provenance()["crops"] == 5 and len(src.provenance()["descriptors"]) == 16


def test_a_missing_or_malformed_descriptor_file_fails_at_config_load(tmp_path):
    from paric.catalog import load_config
    from paric.config import ConfigError

    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    with pytest.raises(ConfigError, match=r"lazsl.descriptors.*nope.json: descriptor file not found"):
        load_config(repo / "conf" / "default.yaml", [f"lazsl.descriptors={tmp_path / 'nope.json'}"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"circle": [1]}))
    with pytest.raises(ConfigError, match=r"bad.json: key 'circle'"):
        load_config(repo / "conf" / "default.yaml", [f"lazsl.descriptors={bad}"])
