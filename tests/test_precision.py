"""``train.precision`` and ``vlm.pretrain.precision``: bfloat16 autocast as an option, keyed only when set,
deterministic, and refused where it would compute on lower-precision graphs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from paric.catalog import load_config
from paric.config import Config, ConfigError, PretrainConfig
from paric.stages.train import TRAINING_KEYS
from paric.train.data import iterate
from paric.train.loop import Trainer


def test_the_option_is_keyed_only_when_set():
    """At fp32 every stage key is what it was before the option existed; bf16 changes the VLM's and the runs'."""
    cfg = load_config("conf/default.yaml")
    bf16 = load_config("conf/default.yaml", ["train.precision=bf16", "vlm.pretrain.precision=bf16"])
    assert cfg.section_hash(*TRAINING_KEYS) == cfg.section_hash(*[k for k in TRAINING_KEYS if k != "train.precision"])
    assert cfg.section_hash("vlm") != bf16.section_hash("vlm")
    assert cfg.section_hash(*TRAINING_KEYS) != bf16.section_hash(*TRAINING_KEYS)


def test_unsupported_uses_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="pretrain.precision=bf16: ProLIP"):
        load_config("conf/default.yaml", ["vlm.family=prolip", "vlm.pretrain.precision=bf16"])
    from paric.stages.pipeline import check_pipeline_config

    with pytest.raises(ValueError, match="train.precision=bf16: method 'gals_exact'"):
        check_pipeline_config(load_config("conf/default.yaml", ["train.precision=bf16",
                                                                "train.compare=[vanilla,gals_exact]"]))


def _digits_cfg(precision: str) -> Config:
    return Config.model_validate({"classifier": {"arch": "small_resnet", "weights": "none", "width": 8, "image_size": 16},
                                  "train": {"epochs": 1, "batch_size": 16, "lr": 0.05, "flip": False,
                                            "precision": precision}})


def _train(precision: str, method: str) -> dict[str, torch.Tensor]:
    d = load_digits()
    x = (np.repeat(d.images[:64, :, :, None], 3, axis=3) * 15).astype(np.uint8)
    data = {"image": x, "label": (d.target[:64] % 2).astype(np.int64), "group": np.zeros(64, np.int64),
            "mask": (d.images[:64] > 4).astype(np.uint8)}
    trainer = Trainer(_digits_cfg(precision), method, 2, 1, 4, seed=0)
    out = trainer.train_epoch(iterate(data, 16, True, 0, 0))
    assert np.isfinite(out["train_loss"])
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("method", ["vanilla", "oracle_mask"])
def test_a_bf16_run_is_deterministic_keeps_float32_weights_and_differs_from_fp32(method):
    a, b, full = _train("bf16", method), _train("bf16", method), _train("fp32", method)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(a[k].dtype == full[k].dtype for k in a)  # the weights stay float32
    assert any(not torch.equal(a[k], full[k]) for k in a if a[k].is_floating_point())


def test_the_vlm_pretrains_under_bf16_deterministically(tmp_path):
    from paric.vlm.pretrain import pretrain_clip

    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(64, 32, 32, 3, generator=g) * 255).to(torch.uint8)
    caps = [f"a photo of a {w}" for w in ("circle", "square", "star", "triangle")] * 16
    cfg = PretrainConfig(epochs=1, batch_size=32, warmup_steps=1, precision="bf16")
    s = pretrain_clip("paric-micro-cnn16", imgs, caps, cfg, seed=0, out_path=tmp_path / "a.pt", progress=False)
    pretrain_clip("paric-micro-cnn16", imgs, caps, cfg, seed=0, out_path=tmp_path / "b.pt", progress=False)
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=True)["model"] for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a) and s["precision"] == "bf16" and np.isfinite(s["final_loss"])
    fp32 = PretrainConfig(epochs=1, batch_size=32, warmup_steps=1)
    pretrain_clip("paric-micro-cnn16", imgs, caps, fp32, seed=0, out_path=tmp_path / "c.pt", progress=False)
    c = torch.load(tmp_path / "c.pt", weights_only=True)["model"]
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
