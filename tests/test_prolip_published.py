"""The published-layout ProLIP loader (issue 15, item 4): a randomly initialised checkpoint saved
under the published key names loads strictly, and the loaded towers compute what the published
forward pass computes, checked against a reference written here from the authors' code."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from paric.vlm.factory import VLMLoadError
from paric.vlm.prolip.factory import build_prolip, load_prolip, model_config
from paric.vlm.prolip.published import load_published, published_config, to_published
from paric.vlm.prolip.model import ProLIP

NAME = "paric-micro-vit"  # width == embed_dim, as the published text head needs
#: names that only the published layout has (ours differ), spelled out independently of the key map
PUBLISHED_ONLY = {"visual.uncertainty_proj.weight", "visual.uncertainty_proj.bias", "text.cls_emb", "text.unc_emb",
                  "text.text_projection.weight", "text.text_projection.bias",
                  "text.text_uncertainty_projection.weight", "text.text_uncertainty_projection.bias"}


def _published_state(seed: int = 3) -> dict[str, torch.Tensor]:
    """A random model of the published shape, saved under the published names (biases made non-trivial
    so that the LayerNorm and projection quirks change the outputs)."""
    cfg = published_config(model_config(NAME), "cls")
    torch.manual_seed(seed)
    model = ProLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    return to_published(model.state_dict())


@pytest.fixture()
def ckpt(tmp_path):
    path = tmp_path / "prolip.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _published_state().items()}}, path)
    return path


def _ln(x, sd, key, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{key}.weight"], sd[f"{key}.bias"], eps)


def _blocks(x, sd, prefix, heads, eps):
    """The published ResidualAttentionBlock stack (pre-norm, GELU MLP, no mask)."""
    i = 0
    while f"{prefix}.resblocks.{i}.ln_1.weight" in sd:
        b = f"{prefix}.resblocks.{i}"
        h = _ln(x, sd, f"{b}.ln_1", eps)
        q, k, v = F.linear(h, sd[f"{b}.attn.in_proj_weight"], sd[f"{b}.attn.in_proj_bias"]).chunk(3, -1)
        B, L, W = q.shape
        split = lambda t: t.view(B, L, heads, W // heads).transpose(1, 2)  # noqa: E731
        a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(W // heads), -1) @ split(v)
        x = x + F.linear(a.transpose(1, 2).reshape(B, L, W), sd[f"{b}.attn.out_proj.weight"], sd[f"{b}.attn.out_proj.bias"])
        h = F.gelu(F.linear(_ln(x, sd, f"{b}.ln_2", eps), sd[f"{b}.mlp.c_fc.weight"], sd[f"{b}.mlp.c_fc.bias"]))
        x = x + F.linear(h, sd[f"{b}.mlp.c_proj.weight"], sd[f"{b}.mlp.c_proj.bias"])
        i += 1
    return x


def _ref_image(sd, x, patch, heads):
    """The published vision forward: [CLS, UNC, patches]; ln_post on every token, then again on [CLS]."""
    p = F.conv2d(x, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    lead = torch.stack([sd["visual.class_embedding"], sd["visual.unc_embedding"]]).expand(len(p), -1, -1)
    t = _ln(torch.cat([lead, p], 1) + sd["visual.positional_embedding"], sd, "visual.ln_pre", 1e-5)
    t = _ln(_blocks(t, sd, "visual.transformer", heads, 1e-5), sd, "visual.ln_post", 1e-5)
    mean = _ln(t[:, 0], sd, "visual.ln_post", 1e-5) @ sd["visual.proj"]
    return mean, F.linear(t[:, 1], sd["visual.uncertainty_proj.weight"], sd["visual.uncertainty_proj.bias"])


def _ref_text(sd, tokens, heads):
    """The published text forward: tokens, [UNC], [CLS]; no causal mask; eps 1e-6; log σ² from the projected [CLS]."""
    x = F.embedding(tokens, sd["text.token_embedding.weight"])
    tail = torch.stack([sd["text.unc_emb"], sd["text.cls_emb"]]).expand(len(x), -1, -1)
    x = torch.cat([x, tail], 1) + sd["text.positional_embedding"][: x.shape[1] + 2]
    pooled = _ln(_blocks(x, sd, "text.transformer", heads, 1e-6)[:, -1], sd, "text.ln_final", 1e-6)
    mean = F.linear(pooled, sd["text.text_projection.weight"], sd["text.text_projection.bias"])
    return mean, F.linear(mean, sd["text.text_uncertainty_projection.weight"], sd["text.text_uncertainty_projection.bias"])


def test_the_published_layout_has_the_published_names():
    keys = set(_published_state())
    assert PUBLISHED_ONLY <= keys
    assert not any("unc_head" in k or "cls_embedding" in k for k in keys)


def test_a_published_checkpoint_loads_and_matches_the_published_forward(ckpt):
    sd = {k.removeprefix("module."): v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()}
    model, weights = load_published(NAME, str(ckpt))
    assert weights.startswith("sha256:")
    cfg = model_config(NAME)
    x = torch.randn(2, 3, cfg["vision_cfg"]["image_size"], cfg["vision_cfg"]["image_size"],
                    generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(1, 400, (2, cfg["text_cfg"]["context_length"]), generator=torch.Generator().manual_seed(1))
    tokens[:, 9:] = 0  # padding that the published tower attends to (no mask)
    with torch.no_grad():
        for ours, ref in ((model.visual(x), _ref_image(sd, x, cfg["vision_cfg"]["patch_size"], cfg["vision_cfg"]["heads"])),
                          (model.text(tokens), _ref_text(sd, tokens, cfg["text_cfg"]["heads"]))):
            torch.testing.assert_close(ours[0], ref[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ours[1], ref[1], atol=1e-5, rtol=1e-5)
        # the quirks matter: our default (paper) forward on the same weights differs
        plain = build_prolip(NAME, text_unc_from="cls")
        plain.visual.load_state_dict(model.visual.state_dict())
        assert not torch.allclose(plain.visual(x)[0], model.visual(x)[0], atol=1e-4)
        model.text.causal = True  # a causal mask changes the two-layer text tower's [CLS]
        assert not torch.allclose(model.text(tokens)[0], _ref_text(sd, tokens, cfg["text_cfg"]["heads"])[0], atol=1e-4)


def test_load_prolip_with_published_weights_is_a_frozen_vlm_with_siglip_normalisation(ckpt, tmp_path):
    from safetensors.torch import save_file

    st = tmp_path / "model.safetensors"
    save_file({k.removeprefix("module."): v.contiguous() for k, v in
               torch.load(ckpt, weights_only=True)["state_dict"].items()}, str(st))
    a, b = load_prolip(NAME, pretrained=str(ckpt)), load_prolip(NAME, pretrained=str(st))
    assert a.mean == (0.5, 0.5, 0.5) and a.model.text.unc_from == "cls" and not a.model.text.causal
    assert not any(p.requires_grad for p in a.model.parameters())
    tok = a.tokenizer(["a photo of a shape"])
    torch.testing.assert_close(a.model.encode_text(tok), b.model.encode_text(tok))
    assert load_prolip(NAME, pretrained=str(ckpt), text_unc_from="unc").model.text.unc_from == "unc"


def test_bad_published_weights_fail_clearly(ckpt, tmp_path, monkeypatch):
    state = {k.removeprefix("module."): v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()}
    broken = tmp_path / "broken.pt"
    torch.save({k: v for k, v in state.items() if k != "text.unc_emb"}, broken)
    with pytest.raises(VLMLoadError, match=r"broken\.pt.*missing keys \['text\.unc_embedding'\]"):
        load_published(NAME, str(broken))
    state["visual.proj"] = torch.zeros(3, 3)
    torch.save(state, broken)
    with pytest.raises(VLMLoadError, match=r"'visual\.proj' has shape \(3, 3\)"):
        load_published(NAME, str(broken))
    with pytest.raises(VLMLoadError, match="no such ProLIP checkpoint file"):
        load_published(NAME, str(tmp_path / "absent.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VLMLoadError, match="download it elsewhere"):
        load_published(NAME, "SanghyukChun/ProLIP-ViT-B-16-DC-1B-12_8B")
    with pytest.raises(VLMLoadError, match="cnn"):
        load_published("paric-micro-cnn", str(ckpt))
