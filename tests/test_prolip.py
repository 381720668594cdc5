"""ProLIP towers, the ``prolip`` embedding sampler and its Grad-CAM maps (issue 15)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from paric.attention.gradcam import capture_as_leaf, resolve_layer
from paric.attention.reference import GradCamEngine, ImageEmbedding, TextMatch
from paric.catalog import load_config
from paric.vlm.prolip.factory import load_prolip
from paric.vlm.prolip.model import UNC_BIAS_INIT
from paric.attention.prolip_sampler import ProlipSampler, gaussian_noise

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["a photo of a shape", "an image of a shape"]


@pytest.fixture(scope="module", params=["paric-micro-vit", "paric-micro-cnn"])
def vlm(request):
    return load_prolip(request.param, seed=0)


def _images(vlm, n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, vlm.image_size, vlm.image_size, generator=torch.Generator().manual_seed(seed))


def test_towers_emit_a_unit_mean_and_a_log_variance_starting_near_the_bias(vlm):
    x = _images(vlm)
    img = vlm.model.encode_image_dist(x)
    txt = vlm.model.encode_text_dist(vlm.tokenizer(PROMPTS))
    for g, n in ((img, 3), (txt, 2)):
        assert g.mean.shape == g.logvar.shape == (n, vlm.model.visual.unc_head.out_features)
        torch.testing.assert_close(g.mean.norm(dim=-1), torch.ones(n))
        assert float((g.logvar - UNC_BIAS_INIT).abs().max()) < 2.0  # the −10 bias dominates at init
    torch.testing.assert_close(vlm.model.encode_image(x, normalize=True), img.mean)


def test_the_vit_layout_is_cls_unc_patches_and_grad_cam_drops_both_leading_tokens():
    vlm = load_prolip("paric-micro-vit")
    layer = resolve_layer(vlm.model.visual, vlm.image_size)
    gh, gw = vlm.model.visual.grid_size
    assert layer.layout == "tokens" and layer.prefix == 2 and layer.grid == (gh, gw)
    assert vlm.model.visual.positional_embedding.shape[0] == gh * gw + 2
    x = _images(vlm, 2)
    with torch.enable_grad(), capture_as_leaf(vlm.model.visual, layer) as cap:
        vlm.model.encode_image(x)
    assert cap["acts"].shape[1] == gh * gw and cap["prefix"].shape[1] == 2
    # the leading rows are [CLS] and [UNC]: the ln_1 output of the last block at positions 0 and 1
    seen = {}
    block = vlm.model.visual.transformer.resblocks[-1]
    h = block.ln_1.register_forward_hook(lambda m, i, o: seen.setdefault("out", o.detach()))
    vlm.model.encode_image(x)
    h.remove()
    torch.testing.assert_close(cap["prefix"], seen["out"][:, :2])
    torch.testing.assert_close(cap["acts"].detach(), seen["out"][:, 2:])


def test_grad_cam_of_the_prolip_vit_matches_autograd_on_the_patch_tokens():
    """The engine's deterministic map equals ReLU(Σ_c mean_n(∂s/∂A_nc)·A_nc) over the patch tokens."""
    vlm = load_prolip("paric-micro-vit")
    engine = GradCamEngine(vlm, PROMPTS[:1], [TextMatch()])
    x = _images(vlm, 2)
    got = engine(x, ["a", "b"])[0][:, 0]
    layer = engine.layer
    with torch.enable_grad(), capture_as_leaf(vlm.model.visual, layer) as cap:
        v = vlm.model.encode_image(x)
        s = (v @ engine.text.T)[:, 0]
        (g,) = torch.autograd.grad(s.sum(), cap["acts"])
    cam = torch.einsum("bc,bnc->bn", g.mean(1), cap["acts"].detach()).clamp_min(0).view(2, *layer.grid)
    lo = cam.flatten(1).amin(1).view(-1, 1, 1)
    hi = cam.flatten(1).amax(1).view(-1, 1, 1)
    torch.testing.assert_close(got, (cam - lo) / (hi - lo), atol=1e-5, rtol=1e-4)


def test_the_fast_head_reproduces_both_prolip_outputs_and_their_gradcam_weights():
    """[CLS] and [UNC] are both queries of the last block: the head gives μ and log σ² as the tower
    does, and the gradient w.r.t. its offset is N times the Grad-CAM weights of any score of them."""
    from paric.attention.gradcam import ClsHead, channel_weights

    vlm = load_prolip("paric-micro-vit")
    visual = vlm.model.visual
    layer = resolve_layer(visual, vlm.image_size)
    head = ClsHead.build(visual, layer)
    assert head is not None
    x = _images(vlm, 2)
    with torch.enable_grad(), capture_as_leaf(visual, layer) as cap:
        full_v, full_lv = visual(x)
    offset = torch.zeros(2, cap["acts"].shape[-1], requires_grad=True)
    v, lv = head(cap, offset)
    torch.testing.assert_close(v, full_v, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lv, full_lv, atol=1e-5, rtol=1e-4)
    w = torch.randn(full_v.shape[-1], generator=torch.Generator().manual_seed(0))
    score = lambda a, b: (a @ w) + b.exp().sum(-1) * 1e3  # reads both outputs
    (g_full,) = torch.autograd.grad(score(full_v, full_lv).sum(), cap["acts"])
    (g_off,) = torch.autograd.grad(score(v, lv).sum(), offset)
    torch.testing.assert_close(g_off / (layer.grid[0] * layer.grid[1]), channel_weights(g_full[None], layer)[0],
                               atol=1e-6, rtol=1e-4)


def test_batched_sampled_maps_equal_looped_ones(vlm):
    x, ids = _images(vlm), ["a.jpg", "b.jpg", "c.jpg"]
    batched = GradCamEngine(vlm, PROMPTS, [ProlipSampler(5, 0)], vjp="batched")(x, ids)[0]
    looped = GradCamEngine(vlm, PROMPTS, [ProlipSampler(5, 0)], vjp="looped")(x, ids)[0]
    assert batched.shape == (3, 5, *GradCamEngine(vlm, PROMPTS, [TextMatch()]).layer.grid)
    assert float((batched - looped).abs().max()) <= 1e-5


def test_a_sample_depends_only_on_seed_image_id_and_k(vlm):
    engine = GradCamEngine(vlm, PROMPTS, [ProlipSampler(6, 3)])
    x = _images(vlm)
    one = engine(x, ["a", "b", "c"])[0]
    shuffled = engine(x[[2, 0]], ["c", "a"])[0]
    torch.testing.assert_close(shuffled[1], one[0], atol=1e-6, rtol=0)  # image "a", whatever its batch
    fewer = GradCamEngine(vlm, PROMPTS, [ProlipSampler(3, 3)])(x, ["a", "b", "c"])[0]
    torch.testing.assert_close(fewer, one[:, :3], atol=1e-6, rtol=0)  # the first k of K are a k-draw
    other_seed = GradCamEngine(vlm, PROMPTS, [ProlipSampler(6, 4)])(x, ["a", "b", "c"])[0]
    assert float((other_seed - one).abs().max()) > 1e-4
    np.testing.assert_array_equal(gaussian_noise(3, "image\x1fa", 2, 4), gaussian_noise(3, "image\x1fa", 5, 4)[:2])


def test_image_uncertainty_reaches_the_sample_and_its_gradient():
    """z = μ + σ·ε is reparameterised through the tower's log σ²: the samples' spread follows σ, and
    the score's gradient reaches the [UNC] head (the published sampler drew from a fixed σ)."""
    vlm = load_prolip("paric-micro-cnn")
    sampler = ProlipSampler(64, 0)
    sampler.setup(vlm.encode_text(PROMPTS), PROMPTS, vlm)
    v = torch.randn(2, 32)
    for logvar in (-8.0, -2.0):
        z = sampler.samples(ImageEmbedding(v, torch.full((2, 32), logvar)), ["a", "b"])
        assert float(z.std(1).mean()) == pytest.approx(np.exp(logvar / 2), rel=0.15)
    lv = torch.full((2, 32), -2.0, requires_grad=True)
    sampler.scores(ImageEmbedding(v, lv), ["a", "b"]).sum().backward()
    assert float(lv.grad.abs().sum()) > 0
    # and the engine's maps change when only the [UNC] head changes
    engine = GradCamEngine(vlm, PROMPTS, [ProlipSampler(4, 0)])
    x = _images(vlm, 2)
    before = engine(x, ["a", "b"])[0]
    with torch.no_grad():
        vlm.model.visual.unc_head.bias.fill_(0.0)
    try:
        after = engine(x, ["a", "b"])[0]
    finally:
        with torch.no_grad():
            vlm.model.visual.unc_head.bias.fill_(UNC_BIAS_INIT)
    assert float((after - before).abs().max()) > 1e-3


def test_masked_copies_drop_patches_and_feature_cells():
    vit = load_prolip("paric-micro-vit").model.visual
    x = _images(load_prolip("paric-micro-vit"), 2)
    n = vit.drop_units()
    drop = torch.zeros(2, n, dtype=torch.bool)
    drop[:, : n // 4] = True
    out = vit(x, drop)
    x2 = x.clone()
    x2[..., : vit.patch_size, : vit.patch_size] += 5.0  # patch 0 only, which is dropped
    out2 = vit(x2, drop)
    torch.testing.assert_close(out2, out)
    assert float((vit(x2)[0] - vit(x)[0]).abs().max()) > 1e-4  # kept, the patch counts
    cnn = load_prolip("paric-micro-cnn").model.visual
    xc = torch.randn(2, 3, 64, 64)
    f = cnn.trunk.forward_features(xc).flatten(2)
    keep = torch.ones(2, f.shape[-1], dtype=torch.bool)
    keep[:, ::2] = False
    mu, _ = cnn(xc, drop=~keep)
    torch.testing.assert_close(mu, cnn.head(f[..., keep[0]].mean(-1)))


def test_text_log_variance_from_unc_or_from_the_projected_cls():
    """``unc_from='cls'`` (the published code) reads log σ² from the projected [CLS] only; ``'unc'``
    (the paper) from the [UNC] output, so changing the [UNC] token moves it."""
    tok = load_prolip("paric-micro-cnn").tokenizer(PROMPTS)
    for unc_from, moves in (("unc", True), ("cls", False)):
        model = load_prolip("paric-micro-cnn", text_unc_from=unc_from).model
        a = model.encode_text_dist(tok).logvar
        with torch.no_grad():
            model.text.unc_embedding.add_(torch.randn(model.text.unc_embedding.shape))  # not a constant: LN removes that
        # with 'cls' the [UNC] token still reaches [CLS] through attention, so compare against the head
        mu_raw, logvar = model.text(tok)
        if unc_from == "cls":
            torch.testing.assert_close(logvar, model.text.unc_head(mu_raw))
        else:
            assert float((logvar - a).abs().max()) > 1e-4


def test_a_prolip_source_needs_the_prolip_family_and_lico_a_clip_text_tower():
    from paric.stages.pipeline import check_pipeline_config

    cfg = load_config(REPO / "conf" / "default.yaml", ["maps.sources=[gals,paric,prolip]"])
    with pytest.raises(ValueError, match="needs vlm.family=prolip"):
        check_pipeline_config(cfg)
    lico = load_config(REPO / "conf" / "default.yaml", overlays=[REPO / "conf" / "profiles" / "prolip.yaml"],
                       overrides=["train.compare=[vanilla,lico]", "report.after=vanilla"])
    with pytest.raises(ValueError, match="lico.*CLIP text tower"):
        check_pipeline_config(lico)
    check_pipeline_config(load_config(REPO / "conf" / "default.yaml",
                                      overlays=[REPO / "conf" / "profiles" / "prolip.yaml"]))


def test_the_clip_vlm_key_is_unchanged_and_prolip_options_key_a_prolip_vlm(tmp_path, monkeypatch):
    from paric.stages.prepare import VLM_KEYS, vlm_keys

    clip = load_config(REPO / "conf" / "default.yaml")
    assert vlm_keys(clip) == VLM_KEYS  # CLIP outputs written before families existed stay cached
    a = load_config(REPO / "conf" / "default.yaml", ["vlm.family=prolip"])
    b = load_config(REPO / "conf" / "default.yaml", ["vlm.family=prolip", "vlm.prolip.vib=0.001"])
    assert a.section_hash(*vlm_keys(a)) != b.section_hash(*vlm_keys(b))
    assert a.section_hash(*vlm_keys(a)) != clip.section_hash(*vlm_keys(clip))
    assert clip.section_hash(*vlm_keys(clip)) == load_config(
        REPO / "conf" / "default.yaml", ["vlm.prolip.vib=0.001"]).section_hash(*VLM_KEYS)
    # the loss's form (issue 28: the published VIB reduction) is in a ProLIP vlm stage's key, not CLIP's
    from paric.stages.prepare import vlm_stage_spec
    from paric.vlm.prolip.loss import LOSS_FORM

    monkeypatch.setattr("paric.stages.prepare.dataset_fingerprint", lambda root: "data")
    assert LOSS_FORM in vlm_stage_spec(a, tmp_path).upstream
    assert len(vlm_stage_spec(clip, tmp_path).upstream) == 1  # CLIP's key as before: the data's content only


def test_csd_zero_shot_ranks_by_mean_similarity_minus_half_the_text_variance():
    from paric.vlm.prolip.pretrain import zero_shot_csd

    vlm = load_prolip("paric-micro-cnn")
    with torch.no_grad():  # give the two class prompts very different text variances
        vlm.model.text.unc_head.bias.fill_(-1.0)
    images = torch.randint(0, 255, (12, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = np.array([0, 1] * 6)
    got = zero_shot_csd(vlm, images, labels, ["circle", "triangle"], "a photo of a {}")
    tok = vlm.tokenizer(["a photo of a circle", "a photo of a triangle"])
    t = vlm.model.encode_text_dist(tok)
    mu = F.normalize(vlm.model.encode_image(vlm.normalise(images)), dim=-1)
    csd = ((mu[:, None] - t.mean[None]) ** 2).sum(-1) + t.var.sum(-1)[None]  # image σ² is class-independent
    assert got["csd"] == pytest.approx(float((csd.argmin(1).numpy() == labels).mean()))
    assert got["mu"] == pytest.approx(float(((mu @ t.mean.T).argmax(1).numpy() == labels).mean()))


def test_pretraining_is_seeded_reports_its_terms_and_reloads_with_its_text_variance_source(tmp_path):
    from paric.config import PretrainConfig, ProlipConfig
    from paric.vlm.prolip.pretrain import pretrain_prolip, text_uncertainty_report

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (48, 64, 64, 3), dtype=torch.uint8, generator=g)
    caps = ["a shape", "a circle on the water", "a photo of a square", "an object"] * 12
    cfg = PretrainConfig(epochs=1, batch_size=16, warmup_steps=1)
    a = pretrain_prolip("paric-micro-cnn", images, caps, cfg, ProlipConfig(), 0, tmp_path / "a.pt", progress=False)
    pretrain_prolip("paric-micro-cnn", images, caps, cfg, ProlipConfig(), 0, tmp_path / "b.pt", progress=False)
    sa, sb = (torch.load(tmp_path / f, weights_only=True) for f in ("a.pt", "b.pt"))
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    assert sa["text_unc_from"] == "unc" and a["steps"] == 3
    assert {"final_ppcl", "final_incl_image_text", "final_incl_masked", "final_vib"} <= set(a)
    assert a["final_incl_masked"] > 0  # masked copies were made (2 of each batch of 16)
    vlm = load_prolip("paric-micro-cnn", checkpoint=tmp_path / "a.pt")
    assert vlm.weights.startswith("sha256:") and vlm.model.text.unc_from == "unc"
    rep = text_uncertainty_report(vlm, caps)
    assert rep["captions"] == 4 and set(rep["probes"]) == {"a shape", "a circle on the water"}


@pytest.mark.slow
def test_the_maps_stages_pretrain_a_prolip_vlm_and_store_both_samplers_maps(tmp_path, ray_cluster, tiny_overrides):
    """``vlm.family=prolip`` end to end through the map stages: ProLIP pretrained on the corpus (with its
    CSD zero-shot and text-uncertainty report), then GALS', the adapters' and ProLIP's maps in one store."""
    import json

    from paric import store
    from paric.stages.maps import run_precompute

    cfg = load_config(REPO / "conf" / "default.yaml", tiny_overrides + [
        f"run.output_dir={tmp_path}", "vlm.family=prolip", "maps.sources=[gals,paric,prolip]"])
    run_precompute(cfg, progress=False)
    report = json.loads((cfg.layout.vlm() / "pretrain.json").read_text())
    assert report["text_unc_from"] == "unc" and "final_incl_masked" in report
    zs = report["zero_shot"]
    assert {"csd", "mu"} == set(zs["csd_classes"]) and zs["csd_classes"]["mu"] == pytest.approx(zs["acc_classes"])
    assert set(zs["text_uncertainty"]["probes"]) == {"a shape", "a circle on the water"}
    ms = store.read_store(cfg.layout.maps("test"))
    assert {"map_det", "map_samples", "map_prolip_samples", "map_prolip_mean", "map_prolip_std"} <= set(ms.maps)
    assert ms.maps["map_prolip_samples"].shape[1] == cfg.maps.K
    quality = json.loads(cfg.layout.quality().read_text())["splits"]["test"]
    assert {"prolip_mean", "mean", "det"} <= set(quality["energy_in_mask"])
    assert {"prolip_std", "std"} == set(quality["pixel_std"])
