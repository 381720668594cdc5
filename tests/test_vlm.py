"""VLM loading, tiny contrastive pretraining, and ProbVLM adapter training on real tiny towers."""
import numpy as np
import pytest
import torch

from paric.config import AdapterConfig, PretrainConfig
from paric.vlm.adapters import adapter_loss, build_adapters, load_adapters, train_adapters
from paric.vlm.factory import VLMLoadError, load_vlm
from paric.vlm.pretrain import pretrain_clip, zero_shot_accuracy


def _toy_pairs(n=96, size=32, seed=0):
    """Images whose mean colour channel is named by the caption: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    words = ["red", "green", "blue"]
    labels = rng.integers(0, 3, n)
    imgs = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    for i, c in enumerate(labels):
        imgs[i, ..., c] = 220
    return torch.from_numpy(imgs), [f"a photo of {words[c]}" for c in labels], labels, words


def test_low_res_epochs_see_downsampled_images(tmp_path):
    """Progressive resizing: the first ``low_res_epochs`` train on images at ``low_res_scale``, the
    rest at full size, in the loop both VLM families share."""
    from paric.vlm.factory import build_model
    from paric.vlm.pretrain import contrastive_pretrain

    imgs, caps, _, _ = _toy_pairs(n=64)
    model = build_model("paric-micro-cnn16", 0)
    sizes = []

    def step(x, idx):
        sizes.append(tuple(x.shape[-2:]))
        return {"loss": model.encode_image(x).pow(2).mean()}

    cfg = PretrainConfig(epochs=3, batch_size=32, low_res_epochs=2, low_res_scale=0.5)
    stats = contrastive_pretrain(model, "paric-micro-cnn16", imgs, step, cfg, 0, tmp_path / "m.pt", progress=False)
    assert sizes == [(16, 16)] * 4 + [(32, 32)] * 2 and stats["low_res_epochs"] == 2


def test_unknown_model_and_missing_weights_give_clear_errors():
    with pytest.raises(VLMLoadError, match="unknown open_clip model 'nope'"):
        load_vlm("nope")
    with pytest.raises(VLMLoadError, match="could not load weights 'openai'.*vlm.pretrained"):
        load_vlm("RN50", pretrained="openai")


def test_pretraining_is_deterministic_learns_and_reloads(tmp_path):
    imgs, caps, labels, words = _toy_pairs()
    cfg = PretrainConfig(epochs=6, batch_size=32, lr=2e-3, warmup_steps=2)
    s1 = pretrain_clip("paric-micro-vit", imgs, caps, cfg, seed=0, out_path=tmp_path / "a.pt", progress=False)
    pretrain_clip("paric-micro-vit", imgs, caps, cfg, seed=0, out_path=tmp_path / "b.pt", progress=False)
    a = torch.load(tmp_path / "a.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert s1["final_loss"] < np.log(32)  # below chance for a batch of 32
    vlm = load_vlm("paric-micro-vit", checkpoint=tmp_path / "a.pt")
    assert vlm.weights.startswith("sha256:")
    acc = zero_shot_accuracy(vlm, imgs, labels, words, "a photo of {}")
    assert acc > 0.5  # chance is 1/3
    assert not list(tmp_path.glob(".*tmp*"))


def test_adapters_train_reload_and_respect_ranges(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(512, 16, generator=g), dim=-1)
    img = torch.nn.functional.normalize(base + 0.05 * torch.randn(512, 16, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(base + 0.05 * torch.randn(512, 16, generator=g), dim=-1)
    cfg = AdapterConfig(hidden=32, epochs=15, batch_size=64, lr=3e-3)
    untrained = build_adapters(16, cfg).eval()
    with torch.no_grad():
        start = adapter_loss(untrained, img, txt, cfg)
        before, l1_before = float(start["loss"]), float(start["l1"])
    pair, stats = train_adapters(img, txt, cfg, seed=0, out_path=tmp_path / "ad.pt", progress=False)
    with torch.no_grad():
        after = float(adapter_loss(pair, img, txt, cfg)["loss"])
        mu, alpha, beta = pair.image(img)
        reloaded = load_adapters(tmp_path / "ad.pt")
        mu2, _, _ = reloaded.image(img)
    assert after < before
    assert torch.equal(mu, mu2)
    assert alpha.min() >= cfg.alpha_range[0] and alpha.max() <= cfg.alpha_range[1]
    assert beta.min() >= cfg.beta_range[0] and beta.max() <= cfg.beta_range[1]
    assert stats["val_l1"] < 0.8 * l1_before
    with pytest.raises(ValueError, match="differ in shape"):
        train_adapters(img, txt[:, :8], cfg, seed=0, out_path=tmp_path / "x.pt", progress=False)


def test_the_published_cross_modal_term_adds_the_l1_between_modalities():
    """Issue 28 item 5: ProbVLM's script's cross-modal term is L1 + NLL (an option, cross_l1)."""
    import torch.nn.functional as F

    from paric.config import AdapterConfig
    from paric.vlm.adapters import adapter_loss, build_adapters

    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(8, 16), dim=-1), F.normalize(torch.randn(8, 16), dim=-1)
    ours = AdapterConfig(hidden=8)
    pair = build_adapters(16, ours).eval()
    a = adapter_loss(pair, img, txt, ours)
    b = adapter_loss(pair, img, txt, ours.model_copy(update={"cross_l1": True}))
    mi, mt = pair.image(img)[0], pair.text(txt)[0]
    torch.testing.assert_close(b["cross"] - a["cross"], F.l1_loss(mi, txt) + F.l1_loss(mt, img))
    torch.testing.assert_close(b["l1"], a["l1"])
