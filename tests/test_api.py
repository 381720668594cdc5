"""The public API (paric.api) on a user's own modules: the README's quickstart as printed, maps equal to
the pipeline engine's, each regulariser as a loss for a torchvision model, and a user-written loop."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

import paric
from paric.attention.reference import ReferenceMapper
from paric.vlm.factory import load_vlm

REPO = Path(__file__).resolve().parents[1]


def quickstart() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quickstart_runs_as_printed():
    code = quickstart()
    assert len(code.strip().splitlines()) <= 10
    scope: dict = {}
    exec(compile(code, "README.md#quickstart", "exec"), scope)  # noqa: S102 - the README's own code
    maps, penalty, model = scope["maps"], scope["penalty"], scope["model"]
    assert maps["samples"].shape[:2] == (8, 8) and maps["mean"].shape == maps["gals"].shape
    assert float(penalty.detach()) >= 0 and model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0


def _batch(n: int = 6, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_reference_maps_are_the_engines_and_keyed_by_image():
    clip, tok = paric.clip_model("paric-micro-cnn16")
    x, _ = _batch()
    prompts = ["a photo of a circle", "a photo of a triangle"]
    adapters = paric.fit_adapters(clip, tok, x, ["a circle"] * 3 + ["a triangle"] * 3, epochs=2)
    ids = [f"img{i}" for i in range(len(x))]
    mine = paric.reference_maps(clip, tok, x, prompts, adapters=adapters, k=4, seed=3, image_ids=ids)
    vlm = load_vlm("paric-micro-cnn16")
    ref = ReferenceMapper(vlm, prompts, adapters, K=4, seed=3)(x, ids)
    torch.testing.assert_close(mine["gals"], torch.from_numpy(ref.det))
    torch.testing.assert_close(mine["samples"], torch.from_numpy(ref.samples))
    torch.testing.assert_close(mine["mean"], torch.from_numpy(ref.mean))
    # an image's samples depend on its id, not on its batch
    alone = paric.reference_maps(clip, tok, x[2:3], prompts, adapters=adapters, k=4, seed=3, image_ids=ids[2:3])
    torch.testing.assert_close(alone["samples"][0], mine["samples"][2], atol=1e-5, rtol=1e-4)
    assert all(not p.requires_grad for p in clip.parameters()) and not clip.training  # as clip_model gave it
    with pytest.raises(ValueError, match="need ProbVLM adapters"):
        paric.reference_maps(clip, tok, x, prompts, k=4)


def test_reference_maps_leave_a_users_model_as_it_was():
    clip, tok = paric.clip_model("paric-micro-cnn16")
    clip.train()
    for p in clip.parameters():
        p.requires_grad_(True)
    x, _ = _batch(2)
    paric.reference_maps(clip, tok, x, ["a shape"])
    assert clip.training and all(p.requires_grad for p in clip.parameters())


def _tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=2)


@pytest.mark.parametrize("name,kwargs", [("background_swap", {}), ("gradient_outside", {}),
                                         ("gradcam", {"layer": "layer4"})])
def test_every_plain_regulariser_is_a_loss_for_a_torchvision_model(name, kwargs):
    model, (x, y) = _tiny_resnet(), _batch(4, 32)
    ref = torch.zeros(4, 8, 8)
    ref[:, 2:6, 2:6] = 1.0
    logits, penalty = paric.AttentionLoss(name, weight=1.0, **kwargs)(model, x, y, ref)
    assert logits.shape == (4, 2) and penalty.ndim == 0 and float(penalty) > 0
    (F.cross_entropy(logits, y) + penalty).backward()
    assert model.conv1.weight.grad.abs().sum() > 0
    _, none = paric.AttentionLoss(name, weight=1.0, **kwargs)(model, x, y, torch.zeros(4, 8, 8))
    assert float(none) == 0.0  # an all-zero map: no reference for that image


def test_attention_loss_takes_a_regularisers_own_options_and_its_old_keywords():
    assert paric.AttentionLoss("background_swap", options={"loss": "ce"}).reg.loss == "ce"
    with pytest.warns(DeprecationWarning, match=r"swap_loss is deprecated.*now options\.loss"):
        assert paric.AttentionLoss("background_swap", swap_loss="ce").reg.loss == "ce"


def test_attention_loss_errors_name_what_is_missing():
    with pytest.raises(ValueError, match="name a module"):
        paric.AttentionLoss("gradcam")
    with pytest.raises(ValueError, match="no module 'layer9'"):
        paric.AttentionLoss("gradcam", layer="layer9")(_tiny_resnet(), *_batch(2, 32), torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match="needs paric's own classifier or text tower"):
        paric.AttentionLoss("lico")


def test_a_user_written_loop_learns_to_ignore_the_background():
    """A plain torchvision model, a loop of one's own, PARIC's maps as the reference: the swap penalty
    (how much the prediction moves when the outside of the map changes) falls as it trains."""
    clip, tok = paric.clip_model("paric-micro-cnn16")
    x, y = _batch(8)
    adapters = paric.fit_adapters(clip, tok, x, ["a photo of a shape"] * 8, epochs=2)
    ref = paric.reference_maps(clip, tok, x, ["a photo of a shape"], adapters=adapters, k=8)["mean"]
    model = _tiny_resnet()
    att = paric.AttentionLoss("background_swap", weight=10.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    seen = []
    for _ in range(15):
        logits, penalty = att(model, x, y, ref)
        loss = F.cross_entropy(logits, y) + penalty
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(float(penalty))
    assert all(torch.isfinite(torch.tensor(seen)))
    assert min(seen[-3:]) < seen[0], seen


def test_readme_regulariser_with_two_options_is_one_module_and_a_preset(tmp_path, monkeypatch):
    """The README's *Adding a regulariser*, as printed: the module registers, its preset loads with its
    options checked (defaults filled in, a bad one refused naming the key), and it trains as a loss."""
    from paric.catalog import load_config
    from paric.config import ConfigError
    from paric.regularizers import REGULARIZERS

    section = (REPO / "README.md").read_text().split("## Adding a regulariser", 1)[1].split("\n## ", 1)[0]
    code, preset = (re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1) for lang in ("python", "yaml"))
    monkeypatch.setattr(REGULARIZERS, "_entries", dict(REGULARIZERS._entries))  # registered for this test only
    # dont_inherit: as its own module would, without this file's postponed annotations
    exec(compile(code, "README.md#adding-a-regulariser", "exec", dont_inherit=True), {})  # noqa: S102
    (tmp_path / "mine.yaml").write_text(preset)
    cfg = load_config(tmp_path / "mine.yaml")
    assert cfg.method("gals_noise").options == {"sigma": 0.05, "norm": "l2"}
    with pytest.raises(ConfigError, match=r"override 'train.methods.gals_noise.options.norm=l3'.*options.norm"):
        load_config(tmp_path / "mine.yaml", ["train.methods.gals_noise.options.norm=l3"])
    model = torchvision.models.resnet18(num_classes=2)
    x, y = _batch(4, 32)
    ref = torch.zeros(4, 32, 32)
    ref[:, 8:24, 8:24] = 1.0
    logits, penalty = paric.AttentionLoss("noise_outside", weight=1.0, options={"sigma": 0.05})(model, x, y, ref)
    assert logits.shape == (4, 2) and float(penalty) > 0
    penalty.backward()
    assert model.fc.weight.grad is not None
