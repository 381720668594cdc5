"""Grad-CAM reference maps: batched VJP = naive loop, GALS definition, sampling keyed by image id,
image uncertainty reaching the map, and layer selection per tower type."""
import numpy as np
import pytest
import torch

from paric.attention.gradcam import SaliencyLayer, minmax_normalise, resolve_layer
from paric.attention.reference import ReferenceMapper, combine_prompts
from paric.config import AdapterConfig
from paric.vlm.adapters import build_adapters
from paric.vlm.factory import load_vlm

PROMPTS = ["a photo of a shape", "an image of a shape"]


@pytest.fixture(scope="module", params=["paric-micro-vit", "paric-micro-vit-tok", "paric-micro-rn", "paric-micro-cnn",
                                               "paric-micro-cnn16"])
def setup(request):
    torch.manual_seed(0)
    vlm = load_vlm(request.param, seed=0)
    dim = vlm.encode_text(["x"]).shape[1]
    adapters = build_adapters(dim, AdapterConfig(hidden=32)).eval()
    images = torch.randn(3, 3, vlm.image_size, vlm.image_size, generator=torch.Generator().manual_seed(1))
    return vlm, adapters, images, ["a.jpg", "b.jpg", "c.jpg"]


def test_batched_vjp_equals_one_backward_per_sample(setup):
    vlm, adapters, x, ids = setup
    fast = ReferenceMapper(vlm, PROMPTS, adapters, K=6, seed=3)(x, ids)
    slow = ReferenceMapper(vlm, PROMPTS, adapters, K=6, seed=3, vjp="looped")(x, ids)
    for name in ("det", "samples", "mean", "median", "std"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), atol=1e-5, err_msg=name)


def test_maps_shapes_and_range(setup):
    vlm, adapters, x, ids = setup
    mapper = ReferenceMapper(vlm, PROMPTS, adapters, K=4, seed=0)
    out = mapper(x, ids)
    h, w = mapper.layer.grid
    assert min(h, w) >= 8
    assert out.det.shape == (3, h, w) and out.samples.shape == (3, 4, h, w) and out.std.shape == (3, h, w)
    for m in (out.det, out.samples, out.mean, out.median):
        assert m.min() >= 0 and m.max() <= 1 + 1e-6
    assert (out.det.reshape(3, -1).max(1) == pytest.approx(1.0))


def test_sample_depends_only_on_seed_image_id_and_k(setup):
    vlm, adapters, x, ids = setup
    full = ReferenceMapper(vlm, PROMPTS, adapters, K=5, seed=7)(x, ids)
    # the same image alone, with fewer samples, in another batch position
    part = ReferenceMapper(vlm, PROMPTS, adapters, K=2, seed=7)(x[[2, 1]], [ids[2], ids[1]])
    np.testing.assert_allclose(part.samples[0], full.samples[2, :2], atol=1e-5)
    np.testing.assert_allclose(part.samples[1], full.samples[1, :2], atol=1e-5)
    other = ReferenceMapper(vlm, PROMPTS, adapters, K=5, seed=8)(x, ids)
    assert np.abs(other.samples - full.samples).max() > 1e-3


def test_image_uncertainty_reaches_the_map(setup):
    """With one shared text sample for every k, the K maps must still differ (public-code pitfall)."""
    vlm, adapters, x, ids = setup
    mapper = ReferenceMapper(vlm, PROMPTS, adapters, K=4, seed=0)
    sampler = mapper.engine.samplers[1]
    sampler.text_samples = sampler.text_samples[:, :1].expand_as(sampler.text_samples).clone()
    out = mapper(x, ids)
    assert np.abs(out.samples[:, 0] - out.samples[:, 1]).max() > 1e-3


def test_det_map_is_gals_gradcam(setup):
    """Independent Grad-CAM via retain_grad on the hooked activations, one prompt."""
    vlm, adapters, x, ids = setup
    mapper = ReferenceMapper(vlm, PROMPTS[:1], layer="auto")
    layer = mapper.layer
    module = vlm.model.visual.get_submodule(layer.path)
    saved = {}

    def hook(_m, _i, out):
        out.retain_grad()
        saved["a"] = out

    h = module.register_forward_hook(hook)
    xx = x.clone().requires_grad_(True)  # so that the activations are part of a graph
    with torch.enable_grad():
        v = vlm.model.encode_image(xx)
        (v @ mapper.engine.text[0]).sum().backward()
    h.remove()
    a, g = saved["a"].detach(), saved["a"].grad
    if layer.layout == "tokens":
        a, g = a[:, layer.prefix:], g[:, layer.prefix:]
        cam = torch.relu((a * g.mean(1, keepdim=True)).sum(-1)).reshape(len(x), *layer.grid)
    else:
        cam = torch.relu((a * g.mean((2, 3), keepdim=True)).sum(1))
    np.testing.assert_allclose(mapper(x, ids).det, minmax_normalise(cam).numpy(), atol=1e-5)


def test_layer_choice():
    rn = load_vlm("paric-micro-rn")
    layer = resolve_layer(rn.model.visual, rn.image_size)
    assert layer.layout == "conv" and min(layer.grid) >= 8 and layer.path != "layer4"  # 2x2 at 64 px
    tok = load_vlm("paric-micro-vit-tok")
    assert resolve_layer(tok.model.visual, tok.image_size).path == "transformer.resblocks.1.ln_1"
    avg = load_vlm("paric-micro-vit")
    assert resolve_layer(avg.model.visual, avg.image_size).path == "transformer.resblocks.0"
    cnn = load_vlm("paric-micro-cnn")  # timm trunk, average pooling: the last stage, kept at 8x8
    assert resolve_layer(cnn.model.visual, cnn.image_size) == SaliencyLayer("trunk.layer4", "conv", (8, 8))
    cnn16 = load_vlm("paric-micro-cnn16")  # the same without the stem's max-pool: 16x16 at 64 px
    assert resolve_layer(cnn16.model.visual, cnn16.image_size) == SaliencyLayer("trunk.layer4", "conv", (16, 16))
    with pytest.raises(ValueError, match="saliency_layer"):
        resolve_layer(avg.model.visual, avg.image_size, "transformer.nope")


def test_combine_prompts_ignores_zero_maps_and_normalise_is_safe():
    a = torch.rand(1, 2, 4, 4)
    z = torch.zeros(1, 2, 4, 4)
    np.testing.assert_allclose(combine_prompts(torch.cat([minmax_normalise(a), z])).numpy(), minmax_normalise(a)[0].numpy(), atol=1e-6)
    assert torch.equal(minmax_normalise(torch.full((2, 3, 3), 0.5)), torch.zeros(2, 3, 3))



@pytest.mark.parametrize("config", ["waterbirds95", "waterbirds100", "food_redmeat", "coco_gender", "waterbirds95_vitb32"])
def test_paper_configs_read_the_layer_gals_reads(config: str) -> None:
    """GALS reads CLIP RN50 at layer4 (7×7 at 224 px) and ViT-B/32 at the last block (7×7 patches)."""
    from paric.catalog import load_config
    from paric.vlm.factory import build_model

    cfg = load_config(f"conf/{config}.yaml")
    model = build_model(cfg.vlm.name)
    layer = resolve_layer(model.visual, 224, cfg.vlm.saliency_layer)
    want = {"RN50": SaliencyLayer("layer4", "conv", (7, 7)),
            "ViT-B-32": SaliencyLayer("transformer.resblocks.11.ln_1", "tokens", (7, 7), prefix=1)}[cfg.vlm.name]
    assert layer == want


def test_norm_scaled_samples_are_the_published_scores_times_the_towers_norm(setup):
    """``paric_norm``: each image sample times ‖v‖, the same uniforms as PARIC's (paired samples)."""
    from paric.attention.reference import GGDSampler, ImageEmbedding

    vlm, adapters, x, ids = setup
    text = vlm.encode_text(PROMPTS)
    plain, scaled = GGDSampler(adapters, 4, 3), GGDSampler(adapters, 4, 3, scale_by_norm=True)
    for s in (plain, scaled):
        s.setup(text, PROMPTS)
    with torch.no_grad():
        v = vlm.model.encode_image(x)
        a, b = plain.scores(ImageEmbedding(v), ids), scaled.scores(ImageEmbedding(v), ids)
    torch.testing.assert_close(b, a * v.norm(dim=-1)[:, None, None])
    maps = ReferenceMapper(vlm, PROMPTS, adapters, K=4, seed=3)
    maps.engine.samplers[1].scale_by_norm = True
    out, ref = maps(x, ids), ReferenceMapper(vlm, PROMPTS, adapters, K=4, seed=3)(x, ids)
    assert np.abs(out.samples - ref.samples).max() > 1e-3  # the norm's gradient changes the maps


class PlainScores:
    """A sampler seen through its ``scores`` only: the engine then pulls gradients back from the scores."""

    def __init__(self, sampler) -> None:
        self.sampler, self.n_scores = sampler, sampler.n_scores

    def setup(self, *args) -> None:
        self.sampler.setup(*args)

    def scores(self, emb, image_ids):
        return self.sampler.scores(emb, image_ids)


def test_sampler_score_graph_gives_the_plain_scores_maps_bit_for_bit(setup):
    """Issue 31: the GGD sampler starts every column's VJP at (μ, α, β, ‖v‖) instead of pushing it
    through all K samples; the maps (and the scores) are the same floats as autograd's from the scores."""
    from paric.attention.reference import GGDSampler, GradCamEngine, TextMatch

    vlm, adapters, x, ids = setup
    def samplers(wrap):
        return [TextMatch(), wrap(GGDSampler(adapters, 5, 3)), wrap(GGDSampler(adapters, 5, 3, scale_by_norm=True))]
    fast = GradCamEngine(vlm, PROMPTS, samplers(lambda s: s))
    plain = GradCamEngine(vlm, PROMPTS, samplers(PlainScores))
    assert hasattr(fast.samplers[1], "score_graph") and not hasattr(plain.samplers[1], "score_graph")
    for a, b in zip(fast(x, ids), plain(x, ids)):
        assert torch.equal(a, b)
    looped = GradCamEngine(vlm, PROMPTS, samplers(lambda s: s), vjp="looped")
    for a, b in zip(fast(x, ids), looped(x, ids)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,head_name,atol", [("paric-micro-vit-tok", "ClsHead", 1e-6),
                                                  ("paric-micro-cnn", "PooledHead", 1e-7),
                                                  ("paric-micro-cnn16", "PooledHead", 1e-7)])
def test_fast_heads_reproduce_the_towers_output_and_gradcam_weights(name, head_name, atol):
    """The per-channel-offset heads (a [CLS] ViT's, an avg-pooled CNN's, issue 31): at δ = 0 the
    embedding equals the tower's, and the offset's gradient gives autograd's Grad-CAM weights."""
    from paric.attention import gradcam
    from paric.attention.gradcam import capture_as_leaf, channel_weights

    vlm = load_vlm(name)
    visual = vlm.model.visual
    layer = resolve_layer(visual, vlm.image_size)
    head = getattr(gradcam, head_name).build(visual, layer)
    assert head is not None
    x = torch.randn(2, 3, vlm.image_size, vlm.image_size)
    with capture_as_leaf(visual, layer) as cap:
        full = vlm.model.encode_image(x)
    offset = head.offset(cap["acts"])
    v, logvar = head(cap, offset)
    assert logvar is None
    np.testing.assert_allclose(v.detach().numpy(), full.detach().numpy(), atol=1e-5)
    t = vlm.encode_text(["a photo"])[0]
    (g_full,) = torch.autograd.grad(full @ t, cap["acts"], torch.ones(2))
    (g_off,) = torch.autograd.grad(head(cap, offset)[0] @ t, offset, torch.ones(2))
    np.testing.assert_allclose(head.channel_weights(g_off[None], cap["acts"])[0].numpy(),
                               channel_weights(g_full[None], layer)[0].numpy(), atol=atol)


def test_towers_without_a_fast_heads_form_take_the_generic_path():
    from paric.attention.gradcam import ClsHead, PooledHead

    vit = load_vlm("paric-micro-vit-tok")
    layer = resolve_layer(vit.model.visual, vit.image_size)
    assert ClsHead.build(load_vlm("paric-micro-vit").model.visual, layer) is None  # avg pooling
    cnn = load_vlm("paric-micro-cnn16").model.visual
    assert PooledHead.build(cnn, resolve_layer(cnn, 64, "trunk.layer3")) is None  # not the last stage
    rn = load_vlm("paric-micro-rn").model.visual
    assert PooledHead.build(rn, resolve_layer(rn, 64)) is None  # an attention pool
