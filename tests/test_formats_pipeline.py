"""Each real dataset format, as a tiny native fixture, through the whole pipeline (quick profile,
micro open_clip tower instead of RN50) by the same code path the paper configs use, ending with the
dataset's own metrics (and LaZSL's zero-shot accuracies) in results.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from paric.catalog import load_config
from paric.config import profile_overlays
from paric.data.fixtures import make_coco_fixture, make_food101_fixture, make_waterbirds_fixture
from paric.stages.pipeline import run_full

CONF = Path(__file__).resolve().parents[1] / "conf" / "default.yaml"
CASES = {
    "waterbirds": (make_waterbirds_fixture, {"worst_group_acc", "mean_group_acc", "cam_energy_in_mask"}),
    "food101": (make_food101_fixture, {"worst_class_acc"}),
    "coco_gender": (make_coco_fixture, {"ratio_delta", "outcome_divergence"}),
}


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_pipeline_runs_on_native_fixture(fmt, tmp_path, ray_cluster):
    make, metrics = CASES[fmt]
    fx = make(tmp_path / "src")
    # the corpus backbone needs the synthetic corpus' shape/place labels: real formats start from scratch
    # here (ImageNet weights in the paper configs); no sweep, to keep the test short
    cfg = load_config(CONF, [*fx.overrides(), f"run.output_dir={tmp_path / 'out'}", "classifier.weights=none",
                             "sweep.methods=[]", "train.compare=[vanilla,gals,paric_mean]", "report.after=gals"],
                      overlays=profile_overlays(CONF, ["quick"]))
    result = run_full(cfg, progress=False)
    results = json.loads((result["report"] / "results.json").read_text())
    assert results["config"]["data"]["format"] == fmt
    for method in ("vanilla", "gals", "paric_mean"):
        got = results["methods"][method]
        assert metrics <= set(got), (method, sorted(got))
        for m in metrics:
            assert 0.0 <= got[m]["mean"] <= 1.0
    assert (result["report"] / "report.md").is_file()
    # LaZSL's zero-shot accuracies on the fixture (issue 16): the shapes' descriptors name none of its
    # classes, so each falls back to its class prompt, and the report says which
    zero = results["zero_shot"]["classes"]
    assert set(zero["acc"]) == {"clip", "by_description", "lazsl"} and all(0 <= a <= 1 for a in zero["acc"].values())
    assert zero["fell_back"] == zero["classes"] and "fell back to the class prompt" in \
        (result["report"] / "report.md").read_text()
    index = cfg.data_root()
    assert (index / "metadata.csv").is_file() and (index / "dataset.json").is_file()
