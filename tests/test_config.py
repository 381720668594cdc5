"""Config loading: defaults validate, overrides apply, typos and wrong types name file and key."""
import hashlib
import json
import re
from pathlib import Path

import pytest

from paric.catalog import load_config
from paric.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_default_yaml_matches_schema_defaults():
    cfg = load_config(REPO / "conf" / "default.yaml")
    assert cfg.maps.K == 32 and cfg.vlm.name == "paric-tiny-cnn16" == type(cfg.vlm)().name
    assert cfg.adapter.lr == pytest.approx(1e-3)


def test_overrides_parse_yaml_scalars_and_scientific_floats():
    cfg = load_config(None, ["maps.K=8", "adapter.lr=3e-4", "maps.splits=[test]", "vlm.pretrained=null"])
    assert cfg.maps.K == 8 and cfg.adapter.lr == pytest.approx(3e-4) and cfg.maps.splits == ["test"]


def test_unknown_key_in_file_names_file_key_and_suggestion(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("maps:\n  KK: 4\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "maps.KK" in msg and "maps.K" in msg


def test_wrong_type_names_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("maps:\n  K: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'maps.K'"):
        load_config(p)


def test_override_typo_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'run.sed=3': unknown key 'run.sed'"):
        load_config(None, ["run.sed=3"])


def test_semantic_validation():
    with pytest.raises(ConfigError, match="classes"):
        load_config(None, ["data.synthetic.classes=[hexagon, circle]", "data.synthetic.shapes=[circle]"])
    with pytest.raises(ConfigError, match="ratio"):
        load_config(None, ["data.synthetic.ratio=1.5"])


def test_missing_file_and_bad_top_level(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_section_hash_changes_only_with_its_section():
    a = load_config(None)
    b = load_config(None, ["maps.K=4"])
    assert a.section_hash("vlm") == b.section_hash("vlm")
    assert a.section_hash("maps") != b.section_hash("maps")


def test_an_option_added_later_keys_its_stage_only_when_set():
    """``vlm.pretrain.low_res_epochs`` and ``precision`` joined the pretraining section after VLMs were cached:
    at their defaults the section's key is the one it had without the fields, so those outputs stay cached."""
    a = load_config(None)
    later = ("low_res_epochs", "low_res_scale", "precision")
    before = hashlib.sha256(json.dumps({"vlm.pretrain": {k: v for k, v in a.vlm.pretrain.model_dump(mode="json").items()
                                                         if k not in later}},
                                       sort_keys=True).encode()).hexdigest()[:16]
    assert a.section_hash("vlm.pretrain") == before
    assert load_config(None, ["vlm.pretrain.low_res_epochs=1"]).section_hash("vlm.pretrain") != before
    assert load_config(None, ["vlm.pretrain.precision=bf16"]).section_hash("vlm.pretrain") != before
    with pytest.raises(ConfigError, match="low_res_epochs=4 exceeds epochs=3"):
        load_config(None, ["vlm.pretrain.low_res_epochs=4"])


def test_base_inheritance_overlays_and_loops(tmp_path):
    (tmp_path / "a.yaml").write_text("maps:\n  K: 8\n  seed: 3\ntrain:\n  epochs: 7\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nmaps:\n  K: 4\n")
    (tmp_path / "quick.yaml").write_text("train:\n  epochs: 1\n")
    cfg = load_config(tmp_path / "b.yaml", ["maps.seed=5"], overlays=[tmp_path / "quick.yaml"])
    assert (cfg.maps.K, cfg.maps.seed, cfg.train.epochs) == (4, 5, 1)  # child wins, merged deeply, overlay, override
    assert load_config(tmp_path / "b.yaml").maps.seed == 3
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "bad.yaml").write_text("train:\n  epochz: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'train.epochz'"):
        load_config(tmp_path / "b.yaml", overlays=[tmp_path / "bad.yaml"])


def test_relative_output_dir_is_fixed_at_load_time(tmp_path, monkeypatch):
    """Tune trials run in their own working directories: paths must not follow the cwd."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["run.output_dir=out/x"])
    assert cfg.run.output_dir == str(tmp_path / "out" / "x")
    monkeypatch.chdir(tmp_path.parent)
    assert cfg.output_path("maps") == tmp_path / "out" / "x" / "maps"


def test_r100_twins_follow_their_method_unless_spelled_out():
    cfg = load_config(REPO / "conf" / "default.yaml", ["train.methods.gals.weight=5",
                                                       "train.methods.paric_mean_r100.weight=2"])
    assert cfg.method("gals_r100").weight == 5 and cfg.method("gals_r100").train_groups == "majority"
    assert cfg.method("gals").train_groups == "all"
    assert cfg.method("paric_mean_r100").weight == 2 and cfg.method("paric_mean").weight == 1
    exact = cfg.method("gals_exact")
    assert exact.regularizer == "gradient_outside" and exact.options["target"] == "ce"
    assert cfg.method("gals").regularizer == cfg.method("oracle_mask").regularizer == "background_swap"


@pytest.mark.parametrize("overrides, names", [
    (["sweep.spaces.paric_mean.reference=[foo]"],
     r"sweep.spaces.paric_mean.reference: value 'foo' is not valid there: .*unknown reference 'foo'; known: none, det"),
    (["train.seeds=[]"], r"key 'train.seeds': List should have at least 1 item"),
    (["maps.splits=[train,dev]"], r"key 'maps.splits.1': Input should be 'train', 'val' or 'test'"),
    (["eval.fgsm_eps=[-0.1]"], r"key 'eval.fgsm_eps.0': Input should be greater than or equal to 0"),
    (["adapter.alpha_range=[5,1]"], r"key 'adapter.alpha_range'.*0 < low < high"),
    (["sweep.spaces.gals.grid=false", "sweep.spaces.gals.weight=[3,0.3]"],
     r"key 'sweep.spaces.gals.weight'.*expected low ≤ high, got \[3.0, 0.3\]"),
    (["run.output_dir=''"], r"key 'run.output_dir'"),
])
def test_bad_values_fail_at_load_time_naming_the_override_and_key(overrides, names):
    """Caught before any stage runs (each would otherwise fail, or pass silently, stages later); the
    override blamed is the last one that touched the key."""
    with pytest.raises(ConfigError, match=rf"override '{re.escape(overrides[-1])}'.*{names}"):
        load_config(REPO / "conf" / "default.yaml", overrides)


def test_pipeline_refuses_a_report_method_it_does_not_train():
    from paric.stages.pipeline import check_pipeline_config

    check_pipeline_config(load_config(REPO / "conf" / "default.yaml"))
    with pytest.raises(ValueError, match=r"report.before='gals_rrr' is not trained by this config"):
        check_pipeline_config(load_config(REPO / "conf" / "default.yaml", ["report.before=gals_rrr"]))


def test_overrides_are_validated_together():
    cfg = load_config(REPO / "conf" / "default.yaml", ["sweep.spaces.gals.grid=false", "sweep.spaces.gals.weight=[0.3,3]",
                                                        "train.compare=[vanilla,gals]", "report.after=gals"])
    assert cfg.sweep.spaces["gals"].root["weight"].values() == [0.3, 3.0] and cfg.report.after == "gals"


def test_a_classifier_narrower_than_eight_channels_is_refused():
    """Widths 4-7 crash torch 2.14.1's oneDNN convolution backward (channels-last input, one thread)
    with a heap corruption that kills the process: refused at load time instead."""
    with pytest.raises(ConfigError, match=r"classifier\.width.*greater than or equal to 8"):
        load_config(None, ["classifier.width=4"])


def test_an_output_dir_that_cannot_be_created_fails_at_load_naming_the_key(tmp_path):
    """Issue 28 item 10: not a traceback from the first stage that writes."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"override 'run.output_dir=.*a_file/out'.*a_file is not a directory"):
        load_config(REPO / "conf" / "default.yaml", [f"run.output_dir={blocker}/out"])
    with pytest.raises(ConfigError, match=r"run.output_dir=/proc/paric_out.*cannot create a directory in /proc"):
        load_config(REPO / "conf" / "default.yaml", ["run.output_dir=/proc/paric_out"])
    fine = load_config(REPO / "conf" / "default.yaml", [f"run.output_dir={tmp_path}/new/deeper"])
    assert fine.run.output_dir == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing left


def test_method_presets_are_data_read_from_their_yaml(tmp_path):
    """The presets live in ``paric/conf/presets/methods.yaml``: each one (and its ``_r100`` twin) is a
    validated method, YAML anchors are not presets, and a broken file is named in the error."""
    from paric.config import DEFAULT_METHODS, PRESETS_FILE, _read_presets

    assert PRESETS_FILE.is_file() and "gals" in DEFAULT_METHODS and ".swap" not in DEFAULT_METHODS
    cfg = load_config(None)
    for name, spec in DEFAULT_METHODS.items():
        m = cfg.train.methods[name]
        for k, v in spec.items():  # a plugin's options as given, with its other options' defaults filled in
            assert getattr(m, k) == ({**getattr(m, k), **v} if isinstance(v, dict) else v), (name, k)
        assert cfg.train.methods[name + "_r100"].train_groups == "majority"
    assert DEFAULT_METHODS["gals"] == {"regularizer": "background_swap", "weight": 1.0, "reference": "det"}
    bad = tmp_path / "methods.yaml"
    bad.write_text("gals: 3\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        _read_presets(bad)


def test_layout_keeps_every_output_where_existing_runs_have_it(tmp_path):
    """``cfg.layout`` is the one place output paths are built; its tree is the one earlier runs wrote
    (docs/outputs.md), so their outputs stay cached."""
    cfg = load_config(None, [f"run.output_dir={tmp_path}"])
    lay = cfg.layout
    assert lay.root == tmp_path
    assert lay.model("gals", 3) == tmp_path / "train" / "gals" / "seed3" / "model.pt"
    assert lay.result("gals", 3) == tmp_path / "train" / "gals" / "seed3" / "result.json"
    assert lay.maps("val") == tmp_path / "maps" / "val" and lay.quality() == tmp_path / "maps" / "quality.json"
    assert lay.vlm_checkpoint() == tmp_path / "vlm" / "clip" / "model.pt"
    assert lay.adapters() == tmp_path / "vlm" / "adapters"
    assert lay.backbone_checkpoint() == tmp_path / "classifier" / "backbone" / "backbone.pt"
    assert lay.sweep("gals") == tmp_path / "sweep" / "gals" and lay.report() == tmp_path / "report"
    assert lay.zeroshot() == tmp_path / "zeroshot"
    outputs_doc = (Path(__file__).resolve().parents[1] / "docs" / "outputs.md").read_text()
    for part in ("train/<method>/seed<s>", "maps/", "vlm/clip", "vlm/adapters", "classifier/backbone", "report/"):
        assert part in outputs_doc, part


# Issue 29: each plugin owns its options; the flat keys MethodConfig had before still load.

@pytest.mark.parametrize("override, slot, option, value", [
    ("train.methods.gals.swap_loss=ce", "options", "loss", "ce"),
    ("train.methods.gals_exact.grad_norm=l2", "options", "norm", "l2"),
    ("train.methods.group_dro.dro_eta=0.02", "objective_options", "eta", 0.02),
    ("train.methods.dfr.dfr_c=[0.1,0.01]", "posthoc_options", "c", [0.1, 0.01]),
    ("train.methods.jtt.jtt_up=50", "two_stage_options", "up", 50),
])
def test_an_old_flat_key_loads_into_its_plugins_options_and_warns_naming_both_keys(override, slot, option, value):
    key = override.split("=")[0]
    method, old = key.split(".")[2:]
    with pytest.warns(DeprecationWarning, match=rf"{re.escape(key)} is deprecated.*now "
                                                rf"{re.escape(f'train.methods.{method}.{slot}.{option}')}"):
        cfg = load_config(REPO / "conf" / "default.yaml", [override])
    m = cfg.method(method)
    assert getattr(m, slot)[option] == value and old not in m.model_dump()
    assert cfg.method(method + "_r100").model_dump(exclude={"train_groups", "base"}) == \
        m.model_dump(exclude={"train_groups", "base"})  # the twin follows, as for any key


def test_an_old_flat_file_keeps_a_presets_other_options_and_can_choose_its_plugin(tmp_path):
    """A config file of the old form: ``dro_eta`` changes the preset's η and keeps its C; ``jtt_epochs``
    made a method JTT, and still does."""
    p = tmp_path / "old.yaml"
    p.write_text("train:\n  methods:\n    group_dro: {dro_eta: 0.02}\n    mine: {jtt_epochs: 3}\n"
                 "    cam: {regularizer: gradcam, reference: det, weight: 1.0, cam_mode: match}\n")
    with pytest.warns(DeprecationWarning, match="train.methods.mine.jtt_epochs is deprecated"):
        cfg = load_config(p)
    assert cfg.method("group_dro").objective_options == {"eta": 0.02, "adjust": 2.0}
    assert cfg.method("mine").two_stage == "jtt" and cfg.method("mine").two_stage_options == {"epochs": 3, "up": 20}
    assert cfg.method("cam").options == {"mode": "match", "norm": "l1"}


def test_a_flat_key_of_a_plugin_the_method_does_not_use_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"train\.methods\.vanilla\.swap_loss: an option of regularizer "
                                          r"'background_swap' \(options\.loss\), but this method's regularizer "
                                          r"is 'none'"):
        load_config(REPO / "conf" / "default.yaml", ["train.methods.vanilla.swap_loss=ce"])
    with pytest.raises(ConfigError, match=r"train\.methods\.gals\.dro_eta: an option of objective 'group_dro'"):
        load_config(REPO / "conf" / "default.yaml", ["train.methods.gals.dro_eta=0.1"])


@pytest.mark.parametrize("override, names", [
    ("train.methods.group_dro.objective_options.eta=-1",
     r"objective_options\.eta: Input should be greater than 0 \(options of objective 'group_dro'\)"),
    ("train.methods.gals.options.loss=mse", r"options\.loss: Input should be 'kl' or 'ce' \(options of regularizer"),
    ("train.methods.dfr.posthoc_options.c=[]", r"posthoc_options\.c: List should have at least 1 item"),
    ("train.methods.jtt.two_stage_options.up=0", r"two_stage_options\.up: Input should be greater than or equal to 1"),
    ("train.methods.vanilla.objective_options.eta=0.1", r"objective_options\.eta: Extra inputs are not permitted "
                                                        r"\(options of objective 'erm'\)"),
    ("train.methods.mine.two_stage=jtt", r"two_stage_options\.epochs: Field required \(options of two-stage method"),
    ("train.methods.group_dro.dro_eta=-1", r"objective_options\.eta: Input should be greater than 0"),
])
def test_a_bad_plugin_option_is_refused_naming_the_override_and_key(override, names):
    with pytest.raises(ConfigError, match=rf"override '{re.escape(override)}'.*{names}"):
        load_config(REPO / "conf" / "default.yaml", [override])


def test_a_presets_plugin_options_merge_until_the_plugin_changes():
    cfg = load_config(REPO / "conf" / "default.yaml", ["train.methods.gals_exact.options.norm=l2",
                                                       "train.methods.oracle_exact.regularizer=background_swap"])
    assert cfg.method("gals_exact").options == {"target": "ce", "norm": "l2"}
    assert cfg.method("oracle_exact").options == {"loss": "kl"}  # gradient_outside's target: not swap's


def test_with_value_takes_an_old_flat_key_as_an_old_sweeps_best_values_name_it():
    from paric.config import with_value

    cfg = load_config(REPO / "conf" / "default.yaml")
    with pytest.warns(DeprecationWarning, match="train.methods.group_dro.dro_eta is deprecated"):
        trial = with_value(cfg, "train.methods.group_dro.dro_eta", 0.05)
    assert trial.method("group_dro").objective_options == {"eta": 0.05, "adjust": 2.0}
    with pytest.warns(DeprecationWarning, match="dro_adjust is deprecated"):
        cfg = load_config(REPO / "conf" / "default.yaml",
                          ["sweep.spaces.group_dro.dro_adjust={dist: categorical, choices: [1.0]}"])
    assert "objective_options.adjust" in cfg.sweep.spaces["group_dro"]


def test_the_flat_key_table_names_options_their_plugins_have():
    """Every old key of :mod:`paric.config.legacy` names a registered plugin and one of its options;
    its frozen default is the option's default today (when a plugin's default changes, the runs that
    use it retrain: the table's default stays the old one)."""
    from paric.catalog import SEAMS
    from paric.config.base import OPTION_SLOTS
    from paric.config.legacy import LEGACY

    assert set(SEAMS) == set(OPTION_SLOTS)
    for e in LEGACY:
        options = SEAMS[e.selector].get(e.plugin).Options.model_fields
        assert e.option in options, e
        assert e.selects or options[e.option].default == e.default, e


def test_the_config_package_imports_neither_torch_nor_a_registry():
    """Issue 29: the schema is a leaf; names and plugin options are checked by paric.catalog."""
    import subprocess
    import sys

    code = ("import sys, paric.config, paric.config.legacy; paric.config.load_config(None); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('paric.regularizers', 'paric.train', "
            "'paric.catalog', 'paric.attention', 'paric.data', 'paric.vlm'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
