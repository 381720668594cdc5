"""``report.families``: one config run per VLM family and merged into one report (issue 15's
"profile that runs both families in one report"). The plan and the merge are unit tests; the last
test runs the families profile end to end at toy size on the session's Ray cluster."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from paric.catalog import load_config
from paric.config import ConfigError, profile_overlays
from paric.report.families import FamilyResults, merge_families, write_families
from paric.stages.families import plan_families, reads_vlm

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "default.yaml"


def families_cfg(tmp_path: Path, *overrides: str, profiles: tuple[str, ...] = ("families",)):
    return load_config(CONF, [f"run.output_dir={tmp_path}", *overrides],
                       overlays=profile_overlays(CONF, list(profiles)))


def test_each_family_trains_what_its_vlm_can_and_the_vlm_free_methods_once(tmp_path):
    plan = {p.family: p for p in plan_families(families_cfg(tmp_path))}
    clip, prolip = plan["clip"].cfg, plan["prolip"].cfg
    assert list(plan) == ["clip", "prolip"]
    assert (clip.vlm.family, prolip.vlm.family) == ("clip", "prolip")
    # ProLIP's own Gaussians need a ProLIP VLM: the CLIP family neither computes them nor trains on them
    assert clip.maps.sources == ["gals", "paric"] and prolip.maps.sources == ["gals", "paric", "prolip"]
    assert clip.train.compare == ["vanilla", "gals", "paric_mean", "oracle_mask"]
    assert prolip.train.compare == ["vanilla", "gals", "paric_mean", "paric_prolip"]
    assert clip.sweep.methods == ["paric_mean"] and prolip.sweep.methods == ["paric_mean", "paric_prolip"]
    assert plan["clip"].vlm_methods == ("gals", "paric_mean")
    assert plan["clip"].shared_methods == ("vanilla", "oracle_mask") and plan["prolip"].shared_methods == ("vanilla",)
    # own output directories and MLflow experiments, one shared benchmark
    assert plan["clip"].output == tmp_path.resolve() / "clip" and plan["prolip"].output == tmp_path.resolve() / "prolip"
    assert clip.run.name == "families-clip" and clip.data.root == prolip.data.root == str(tmp_path.resolve() / "data")
    assert clip.report.families == [] and clip.report.after == "paric_mean"
    # everything else is the parent's config, so the VLM-free stages' cache keys agree across families
    assert clip.train.seeds == prolip.train.seeds and clip.classifier == prolip.classifier


def test_what_reads_the_vlm(tmp_path):
    cfg = families_cfg(tmp_path)
    assert [m for m in ("vanilla", "oracle_mask", "gals", "paric_mean", "lico", "dfr", "jtt") if reads_vlm(cfg, m)] \
        == ["gals", "paric_mean", "lico"]


@pytest.mark.parametrize("overrides, message", [
    (["report.families=[clip]"], "at least two"),
    (["report.families=[clip,clip]"], "names a family twice"),
    (["train.compare=[vanilla,oracle_mask]", "sweep.methods=[]", "report.after=vanilla"], "no method reads a VLM"),
    (["report.before=gals"], "report.before='gals' reads the VLM"),
    (["sweep.methods=[vanilla]", "sweep.spaces.vanilla={lr: {dist: grid, choices: [0.01]}}"],
     "report.before='vanilla' is trained by every family"),
])
def test_a_plan_that_compares_nothing_fails_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        plan_families(families_cfg(tmp_path, *overrides))


def test_an_unknown_family_fails_at_load_time(tmp_path):
    with pytest.raises(ConfigError, match=r"report.families.*unknown VLM family 'siglip'"):
        families_cfg(tmp_path, "report.families=[clip,siglip]")


def _metrics(worst: list[float], seconds: float = 1.0) -> dict:
    return {"worst_group_acc": {"mean": sum(worst) / len(worst), "std": 0.0, "runs": worst},
            "seconds": {"mean": seconds, "std": 0.0, "runs": [seconds] * len(worst)}, "group_labels": "none"}


def _family(family: str, methods: dict, vlm: tuple, shared: tuple, seeds=(0, 1)) -> FamilyResults:
    return FamilyResults(family, Path(f"/out/{family}"), {"methods": methods, "seeds": list(seeds),
                                                          "maps": {"energy_in_mask": {"det": 0.3}}}, vlm, shared)


def test_merge_names_vlm_rows_per_family_and_checks_the_shared_baseline(tmp_path):
    clip = _family("clip", {"vanilla": _metrics([0.1, 0.2]), "gals": _metrics([0.3, 0.4]),
                            "oracle_mask": _metrics([0.9, 0.9])}, ("gals",), ("vanilla", "oracle_mask"))
    prolip = _family("prolip", {"vanilla": _metrics([0.1, 0.2], seconds=7.0), "gals": _metrics([0.5, 0.6])},
                     ("gals",), ("vanilla",))
    merged = merge_families([clip, prolip])
    assert list(merged["methods"]) == ["oracle_mask", "vanilla", "gals (clip)", "gals (prolip)"]
    assert merged["methods"]["gals (prolip)"]["worst_group_acc"]["runs"] == [0.5, 0.6]
    assert merged["methods"]["vanilla"]["family"] == "clip"
    # wall time may differ; the metrics may not
    assert merged["agreement"] == {"vanilla": {"families": ["clip", "prolip"], "identical": True,
                                               "max_abs_diff": 0.0}}
    out = write_families(merged, tmp_path, "t")
    md = (out / "families.md").read_text()
    assert "| gals (prolip) |" in md and "identical in every per-seed metric" in md and "## prolip" in md
    assert "| det | 0.300 | nan | 0.300 | nan |" in md  # the maps side by side
    assert json.loads((out / "families.json").read_text())["families"] == ["clip", "prolip"]

    drifted = _family("prolip", {"vanilla": _metrics([0.1, 0.25]), "gals": _metrics([0.5, 0.6])}, ("gals",),
                      ("vanilla",))
    a = merge_families([clip, drifted])["agreement"]["vanilla"]
    assert not a["identical"] and a["max_abs_diff"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="different seeds"):
        merge_families([clip, _family("prolip", {}, (), (), seeds=(0,))])


def test_the_families_profile_end_to_end_at_toy_size(tmp_path, ray_cluster):
    """``pipelines/families.py --quick --profile families``: a CLIP and a ProLIP VLM pretrained on one
    benchmark, each family's maps and runs, one merged report in which vanilla agrees bit for bit; a
    rerun finds every stage of both families cached."""
    from paric.stages.families import run_families

    cfg = families_cfg(tmp_path, "sweep.methods=[]", "maps.num_actors=1", profiles=("quick", "families"))
    result = run_families(cfg, progress=False)
    merged = json.loads((tmp_path / "families.json").read_text())
    assert set(merged["methods"]) == {"vanilla", "oracle_mask", "gals (clip)", "paric_mean (clip)", "gals (prolip)",
                                      "paric_mean (prolip)", "paric_prolip (prolip)"}
    assert merged["agreement"]["vanilla"]["identical"], merged["agreement"]
    assert "csd_classes" in merged["vlm"]["prolip"] and "csd_classes" not in merged["vlm"]["clip"]
    assert "prolip_mean" in merged["maps"]["prolip"]["energy_in_mask"]
    assert "prolip_mean" not in merged["maps"]["clip"]["energy_in_mask"]
    assert (tmp_path / "clip" / "report" / "report.md").is_file() and (tmp_path / "families.md").is_file()
    assert not (tmp_path / "prolip" / "train" / "oracle_mask").exists()  # the VLM-free oracle: trained once
    again = run_families(cfg, progress=False)
    for family, run in again["runs"].items():
        assert all(e["state"] != "done" for e in run["stages"]), (family, run["stages"])
    assert again["merged"] == result["merged"]


def test_the_driver_refuses_a_bad_family_config_before_any_stage(tmp_path, capsys):
    from paric.commands.families import main  # what pipelines/families.py runs

    assert main(["--profile", "families", f"run.output_dir={tmp_path}", "report.families=[prolip]"]) == 2
    assert "report.families" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_plain_pipeline_points_a_families_config_at_its_driver(tmp_path):
    from paric.stages.pipeline import check_pipeline_config

    with pytest.raises(ValueError, match="run it with pipelines/families.py"):
        check_pipeline_config(families_cfg(tmp_path))
