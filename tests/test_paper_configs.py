"""The paper configs (conf/<dataset>.yaml) load through 'base:' inheritance and carry GALS' settings."""
from pathlib import Path

import pytest

from paric.catalog import load_config

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("name,fmt,epochs,prompt", [
    ("waterbirds95", "waterbirds", 200, "a photo of a bird"),
    ("waterbirds100", "waterbirds", 200, "a photo of a bird"),
    ("waterbirds95_vitb32", "waterbirds", 200, "a photo of a bird"),
    ("food_redmeat", "food101", 150, "a photo of meat"),
    ("coco_gender", "coco_gender", 200, "a photo of a person"),
])
def test_paper_config(name, fmt, epochs, prompt):
    cfg = load_config(CONF / f"{name}.yaml")
    assert cfg.run.name == name and cfg.data.format == fmt and cfg.data.root
    assert (cfg.classifier.arch, cfg.classifier.weights, cfg.classifier.image_size) == ("resnet50", "imagenet", 224)
    t = cfg.train
    assert (t.batch_size, t.optimizer, t.momentum, t.weight_decay, t.epochs) == (96, "sgd", 0.9, 1e-5, epochs)
    assert t.use_gpu is True and t.flip is False and t.warmup_epochs == 0
    assert cfg.vlm.pretrained == "openai" and prompt in cfg.vlm.prompts
    assert cfg.vlm.name == ("ViT-B-32" if name.endswith("vitb32") else "RN50")
    gals = cfg.method("gals")
    assert gals.regularizer == "gradient_outside" and gals.reference == "det" and gals.options["target"] == "ce"
    assert cfg.method("paric_mean").weight == gals.weight == pytest.approx(23.5)
    assert cfg.data_root() == cfg.output_path("data")  # the index built by the data stage
    default = load_config(CONF / "default.yaml")
    assert cfg.maps == default.maps and cfg.adapter == default.adapter  # inherited, not restated


def test_dataset_specific_values():
    wb100 = load_config(CONF / "waterbirds100.yaml")
    assert wb100.data.root.endswith("waterbird_1.0_forest2water2") and wb100.data.masks
    assert wb100.method("gals").lr == 0.005 and wb100.train.lr == 0.01 and wb100.train.head_lr == 0.001
    assert "oracle_mask" in wb100.train.compare
    food = load_config(CONF / "food_redmeat.yaml")
    assert food.data.val_fraction == 0.2 and "oracle_mask" not in food.train.compare and food.data.masks is None
    coco = load_config(CONF / "coco_gender.yaml")
    assert coco.data.coco.min_captions == 3 and coco.data.coco.eval_per_class == 500
    assert coco.method("gals").lr is None and coco.train.lr == 0.01  # GALS: one lr for every COCO method
