"""Caches keyed on content (issue 14 item 1): every stage key follows the data's and the weights'
bytes, never a path. Unit level, no Ray: the keys are computed exactly as the stages compute them;
tests/test_precompute.py reruns real stages on changed data."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paric.attention.sources import configured_sources
from paric.catalog import load_config
from paric.data.fingerprint import dataset_fingerprint
from paric.stages.cache import mark_done
from paric.stages.classifier import backbone_key
from paric.stages.prepare import VLMArtifact, adapter_key, data_stage, map_provenance, vlm_key, vlm_stage
from paric.stages.train import run_key
from paric import store
from paric.store import provenance_hash
from paric.vlm.factory import build_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_overrides):
    out = tmp_path_factory.mktemp("keys") / "out"
    cfg = load_config(REPO / "conf" / "default.yaml", tiny_overrides + [f"run.output_dir={out}"])
    return cfg, data_stage(cfg, progress=False)


def _copy(made, dest: Path):
    cfg, root = made
    shutil.copytree(cfg.output_path(), dest)  # new inodes and mtimes, same bytes
    moved = cfg.model_copy(update={"run": cfg.run.model_copy(update={"output_dir": str(dest)})})
    return moved, moved.data_root()


def _keys(cfg, root: Path, adapters: Path) -> dict[str, str]:
    art = VLMArtifact(cfg.vlm.name, None, None, vlm_key(cfg, root))
    return {"data": dataset_fingerprint(root), "vlm": art.key, "adapters": adapter_key(cfg, root, art),
            "backbone": backbone_key(cfg, root)}


def _prov(cfg, art, adapters: Path) -> dict:
    return map_provenance(cfg, art, configured_sources(cfg, adapters), "layer")


def _first_image(root: Path) -> Path:
    return next(p for p in sorted((root / "images").rglob("*")) if p.is_file())


def test_a_moved_or_copied_output_keeps_every_key(made, tmp_path):
    cfg, root = made
    adapters = tmp_path / "adapters.pt"
    adapters.write_bytes(b"weights")
    moved, moved_root = _copy(made, tmp_path / "elsewhere")
    assert _keys(moved, moved_root, adapters) == _keys(cfg, root, adapters)
    art = VLMArtifact(cfg.vlm.name, "openai", None, "k")
    for c in (cfg, moved):
        assert str(c.output_path()) not in json.dumps(_prov(c, art, adapters))
    assert provenance_hash(_prov(cfg, art, adapters)) == provenance_hash(
        _prov(moved, art, adapters))


@pytest.mark.parametrize("what", ["image", "mask", "caption", "label"])
def test_changed_data_under_the_same_names_changes_every_data_key(made, tmp_path, what):
    """Item 1(a): other pixels (or masks, captions, labels) under the same file names."""
    cfg, root = made
    adapters = tmp_path / "adapters.pt"
    adapters.write_bytes(b"weights")
    moved, moved_root = _copy(made, tmp_path / "changed")
    before = _keys(moved, moved_root, adapters)
    if what in ("image", "mask"):
        path = _first_image(moved_root) if what == "image" else next(p for p in sorted(
            (moved_root / "masks").rglob("*.png")))
        arr = np.asarray(Image.open(path))
        Image.fromarray((255 - arr).astype(np.uint8)).save(path)  # same name, other content
    elif what == "caption":
        path = moved_root / "captions.csv"
        lines = path.read_text().splitlines()
        lines[1] = lines[1].rsplit(",", 1)[0] + ",a different caption"
        path.write_text("\n".join(lines) + "\n")
    else:
        path = moved_root / "metadata.csv"
        text = path.read_text().splitlines()
        header, row = text[0].split(","), text[1].split(",")
        iy = header.index("y")
        row[iy] = "1" if row[iy] == "0" else "0"
        text[1] = ",".join(row)
        path.write_text("\n".join(text) + "\n")
    after = _keys(moved, moved_root, adapters)
    assert all(after[k] != before[k] for k in before), (before, after)
    art = VLMArtifact(cfg.vlm.name, "openai", None, "k")
    assert provenance_hash(_prov(moved, art, adapters)) != provenance_hash(
        _prov(cfg, art, adapters))


def test_published_weights_replaced_in_place_change_the_vlm_and_everything_after(made, tmp_path):
    """Item 1(b, c): ``vlm.pretrained=<file>`` rewritten with other weights; the adapters' key also
    holds the data, so new data under a published VLM retrains them."""
    cfg, root = made
    weights = tmp_path / "clip.pt"
    torch.save(build_model(cfg.vlm.name, seed=0).state_dict(), weights)
    pub = cfg.model_copy(update={"vlm": cfg.vlm.model_copy(update={"pretrained": str(weights)})})
    first = vlm_stage(pub, root, progress=False)
    provenance_before = first.weights()
    torch.save(build_model(cfg.vlm.name, seed=1).state_dict(), weights)
    second = vlm_stage(pub, root, progress=False)
    assert first.key != second.key and second.weights() != provenance_before
    assert str(weights) not in first.key
    assert adapter_key(pub, root, first) != adapter_key(pub, root, second)
    moved, moved_root = _copy(made, tmp_path / "newdata")
    img = _first_image(moved_root)
    Image.fromarray(255 - np.asarray(Image.open(img))).save(img)
    assert adapter_key(pub, moved_root, second) != adapter_key(pub, root, second)


def test_final_runs_are_keyed_on_the_backbone(made, tmp_path):
    """Item 1(c): a retrained backbone (another key in its marker) retrains the final runs."""
    cfg, _ = made
    moved, _ = _copy(made, tmp_path / "bb")
    n, k, h = 2, 2, 3
    rows = {"image_id": ["a", "b"], "split": ["train"] * n, "label": np.zeros(n, int), "group": np.zeros(n, int),
            "map_det": np.ones((n, h, h)), "map_samples": np.ones((n, k, h, h)), "map_mean": np.ones((n, h, h)),
            "map_median": np.ones((n, h, h)), "map_std": np.zeros((n, h, h))}
    maps = moved.layout.maps("train")
    shutil.rmtree(maps, ignore_errors=True)
    store.write_part(store.build_table(rows, {"K": k}), store.part_path(maps, 0))
    store.mark_complete(maps, n, {"K": k})
    marker_dir = moved.layout.backbone()
    mark_done(marker_dir, "backbone-a")
    a = run_key(moved, "vanilla")
    mark_done(marker_dir, "backbone-b")
    assert run_key(moved, "vanilla") != a
    # a regulariser with a text branch (LICO) is keyed on the VLM it trains through; the others are not
    vlm_dir = moved.layout.vlm()
    mark_done(vlm_dir, "vlm-a")
    before = {m: run_key(moved, m) for m in ("vanilla", "lico")}
    mark_done(vlm_dir, "vlm-b")
    assert run_key(moved, "lico") != before["lico"] and run_key(moved, "vanilla") == before["vanilla"]


def test_a_run_is_keyed_on_the_sources_it_reads_only(made, tmp_path):
    """Adding a source to maps.sources (LaZSL's) retrains only the runs that read its columns; a change
    in a source a run reads, or in what every source shares (the VLM), retrains that run."""
    cfg, _ = made
    moved, _ = _copy(made, tmp_path / "src")
    maps = moved.layout.maps("train")
    n, h = 2, 3
    rows = {"image_id": ["a", "b"], "split": ["train"] * n, "label": np.zeros(n, int), "group": np.zeros(n, int),
            "map_det": np.ones((n, h, h)), "map_lazsl": np.ones((n, h, h)), "map_lazsl_score": np.ones((n, h, h))}

    def write(prov: dict) -> dict[str, str]:
        shutil.rmtree(maps, ignore_errors=True)
        store.write_part(store.build_table(rows, prov), store.part_path(maps, 0))
        store.mark_complete(maps, n, prov)
        return {m: run_key(moved, m) for m in ("vanilla", "gals", "gals_lazsl")}

    base = {"vlm_weights": "w1", "sources": {"gals": {}}}
    before = write(base)
    added = write({**base, "sources": {"gals": {}, "lazsl": {"crops": 30}}})
    assert added["vanilla"] == before["vanilla"] and added["gals"] == before["gals"]
    changed = write({**base, "sources": {"gals": {}, "lazsl": {"crops": 90}}})
    assert changed["gals_lazsl"] != added["gals_lazsl"] and changed["gals"] == added["gals"]
    other_vlm = write({**base, "vlm_weights": "w2", "sources": {"gals": {}, "lazsl": {"crops": 90}}})
    assert all(other_vlm[m] != changed[m] for m in other_vlm)


def test_an_invocation_fingerprints_each_dataset_once_and_afresh_after_its_data_stage(made, tmp_path):
    """Inside ``fixed_data`` a root is hashed once; ``forget`` (the data stage's last step) drops it,
    so data rewritten by the data stage is fingerprinted again."""
    from paric.data import fingerprint as fp

    _, root = _copy(made, tmp_path / "copy")
    calls = []
    real = fp._fingerprint
    fp._fingerprint = lambda r: calls.append(r) or real(r)
    try:
        with fp.fixed_data():
            first = [fp.dataset_fingerprint(root) for _ in range(3)]
            assert len(calls) == 1 and len(set(first)) == 1
            image = _first_image(root)
            image.write_bytes(image.read_bytes() + b"\0")
            assert fp.dataset_fingerprint(root) == first[0]  # pinned: nothing rewrote the data in this block
            fp.forget(root)
            assert fp.dataset_fingerprint(root) != first[0] and len(calls) == 2
        assert fp.dataset_fingerprint(root) != first[0] and len(calls) == 3  # outside a block: every call
    finally:
        fp._fingerprint = real


def test_each_invocation_has_its_own_stage_log(tmp_path):
    """``--force`` and the stage table belong to one invocation (a context), not to the process: outside
    one nothing is forced, an inner invocation does not leak into the outer one, and an unknown stage
    is refused naming the known ones."""
    from paric.stages.cache import forced, record_stage, stage_log

    assert not forced("train")
    record_stage("data", "done", 1.0, tmp_path)  # outside an invocation: logged only
    with stage_log(["train"]) as outer:
        assert forced("train vanilla s0") and not forced("maps:train")
        with stage_log(["maps"]) as inner:
            assert forced("maps:val") and not forced("train")
            record_stage("maps:val", "done", 2.0, tmp_path)
        assert forced("train") and not forced("maps:val")
        record_stage("train vanilla s0", "skipped (cached)", 0.0, tmp_path)
    assert [e["stage"] for e in inner.events] == ["maps:val"]
    assert [e["stage"] for e in outer.events] == ["train vanilla s0"]
    assert not forced("train")
    with pytest.raises(ValueError, match="unknown stage.*'trian'.*stages are data, vlm"):
        with stage_log(["trian"]):
            pass


def test_plugin_options_keep_every_key_their_flat_form_gave(monkeypatch):
    """Issue 29: the plugins' knobs left MethodConfig's flat keys for each plugin's options, and every key
    is what the flat form gave (written out here as the old ``model_dump(exclude_defaults=True)``), old
    form or new, so each run and sweep cached before stays cached."""
    import paric.stages.sweep as sweep_stage
    import paric.stages.train as train_stage
    from paric.config.legacy import flat_view

    monkeypatch.setattr(train_stage, "upstream_key", lambda cfg, columns: "upstream")
    monkeypatch.setattr(sweep_stage, "upstream_key", lambda cfg, columns: "upstream")
    conf = REPO / "conf" / "default.yaml"
    new = load_config(conf, ["train.methods.gals.options.loss=ce", "train.methods.group_dro.objective_options.eta=0.02",
                             "train.methods.dfr.posthoc_options.c=[0.1]", "train.methods.jtt.two_stage_options.up=50"])
    with pytest.warns(DeprecationWarning):
        old = load_config(conf, ["train.methods.gals.swap_loss=ce", "train.methods.group_dro.dro_eta=0.02",
                                 "train.methods.dfr.dfr_c=[0.1]", "train.methods.jtt.jtt_up=50",
                                 "sweep.spaces.group_dro={dro_eta: {dist: log_uniform, low: 0.001, high: 0.1}, "
                                 "dro_adjust: {dist: categorical, choices: [0.0, 1.0, 2.0, 4.0]}}"])
    by_hand = {
        "gals": {"reference": "det", "regularizer": "background_swap", "swap_loss": "ce", "weight": 1.0},
        "gals_exact": {"grad_target": "ce", "reference": "det", "regularizer": "gradient_outside", "weight": 70.6},
        "group_dro": {"dro_adjust": 2.0, "dro_eta": 0.02, "objective": "group_dro", "sampling": "group_balanced"},
        "dfr": {"base": "vanilla", "dfr_c": [0.1], "posthoc": "dfr"},
        "jtt": {"jtt_epochs": 2, "jtt_up": 50},
        "lico": {"options": {"dropout": 0.5, "eps": 0.1, "init_std": 0.02, "iters": 100, "n_ctx": 4, "tau": 1.0,
                             "w_mm": 10.0, "w_ot": 1.0}, "regularizer": "lico"},
        "vanilla": {},
    }
    for m, form in by_hand.items():
        assert train_stage.method_key(new.method(m)) == json.dumps(form, sort_keys=True) == \
            train_stage.method_key(old.method(m)), m
        assert train_stage.run_key(new, m) == train_stage.run_key(old, m)
    full = flat_view(new.method("vanilla"), keep_defaults=True)  # the train section's hash dumps every old key
    assert {k: full[k] for k in ("swap_loss", "grad_target", "cam_mode", "dro_eta", "dfr_c", "jtt_epochs", "jtt_up",
                                 "options")} == {
        "swap_loss": "kl", "grad_target": "log_prob", "cam_mode": "energy_outside", "dro_eta": 0.01,
        "dfr_c": [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01], "jtt_epochs": None, "jtt_up": 20, "options": {}}
    assert not {"objective_options", "posthoc_options", "two_stage", "two_stage_options"} & set(full)
    assert new.section_hash("train", "sweep") == old.section_hash("train", "sweep")
    assert sorted(new.sweep.space_key_form("group_dro", new.train.methods)) == ["dro_adjust", "dro_eta"]
    assert sweep_stage.sweep_key(new, "group_dro") == sweep_stage.sweep_key(old, "group_dro")
