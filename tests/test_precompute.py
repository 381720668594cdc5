"""End to end on a real local Ray cluster: data → tiny VLM → adapters → Ray Data map store.

One precompute run is shared by the module; the other tests rerun, resume, change the actor
count or break the input and check what is (and is not) left on disk.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from paric import store
from paric.catalog import load_config
from paric.stages.maps import run_precompute
from paric.stages.precompute import precompute_split
from paric.stages.prepare import VLMArtifact

from conftest import precomputed_copy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_precomputed, tiny_overrides):
    """The session's tiny precompute (computed once, ``conftest.tiny_precomputed``), copied: its stages
    here are cached, and the summary is what the cached stages return."""
    out = precomputed_copy(tiny_precomputed, tmp_path_factory.mktemp("run"))
    cfg = load_config(REPO / "conf" / "default.yaml", tiny_overrides + [f"run.output_dir={out}"])
    summary = run_precompute(cfg, progress=False)
    return cfg, summary


def _parts(d: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(d.glob("part-*.parquet"))}


def test_outputs_exist_and_are_readable_without_ray(run):
    cfg, summary = run
    for split, n in (("train", 24), ("val", 8), ("test", 16)):
        d = cfg.layout.maps(split)
        ms = store.read_store(d)
        assert len(ms.image_id) == n and ms.map_samples.shape[1] == cfg.maps.K
        assert ms.map_det.dtype == np.float16
        assert ms.provenance["K"] == cfg.maps.K and ms.provenance["vlm"] == "paric-micro-vit"
        assert ms.provenance["vlm_weights"].startswith("sha256:")
        table = pq.read_table(d)
        assert table.schema.field("map_samples").type.extension_name == "arrow.fixed_shape_tensor"
        assert len(pd.read_parquet(d)) == n
    q = summary["quality"]["splits"]["test"]
    assert set(q["energy_in_mask"]) >= {"det", "mean", "median", "uniform", "random_init_det"}
    assert 0 < q["energy_in_mask"]["uniform"] < 0.3
    zs = (cfg.layout.vlm() / "pretrain.json").read_text()
    assert "acc_all_shapes" in zs
    # LaZSL: its maps beside the others (scored by the quality stage) and its zero-shot accuracies
    ms = store.read_store(cfg.layout.maps("test"))
    assert ms.maps["map_lazsl"].shape == ms.map_det.shape and float(ms.maps["map_lazsl"].max()) == 1.0
    assert {"lazsl", "lazsl_score"} <= set(q["energy_in_mask"])
    assert ms.provenance["sources"]["lazsl"]["crops"] == cfg.lazsl.crops
    zero = summary["zero_shot"]
    assert zero["classes"]["n"] == 16 and set(zero["classes"]["acc"]) == {"clip", "by_description", "lazsl"}
    assert zero["classes"]["acc"]["clip"] == json.loads(zs)["zero_shot"]["acc_classes"]
    assert cfg.output_path("zeroshot", "lazsl_crops.png").stat().st_size > 0


def test_rerun_skips_every_stage(run, caplog):
    cfg, _ = run
    before = {s: _parts(cfg.layout.maps(s)) for s in cfg.maps.splits}
    ckpt = cfg.layout.vlm_checkpoint().stat().st_mtime_ns
    caplog.set_level("INFO", logger="paric")
    run_precompute(cfg, progress=False)
    assert {s: _parts(cfg.layout.maps(s)) for s in cfg.maps.splits} == before
    assert cfg.layout.vlm_checkpoint().stat().st_mtime_ns == ckpt
    stage_lines = [r.getMessage() for r in caplog.records if "[stage]" in r.getMessage()]
    assert stage_lines and all("skipped" in line for line in stage_lines), stage_lines


def _states(caplog) -> dict[str, str]:
    lines = [r.getMessage().split() for r in caplog.records if r.getMessage().startswith("[stage]")]
    return {w[1]: " ".join(w[2:-3]) for w in lines}


def test_caches_follow_the_content_not_the_path(run, tmp_path, caplog):
    """Issue 14 item 1: a moved output directory is still cached; other pixels under the same file
    names recompute the VLM, the adapters, every map store and the quality report."""
    cfg, _ = run
    moved = tmp_path / "moved"
    shutil.copytree(cfg.output_path(), moved)
    c = load_config(None, [*_dump(cfg), f"run.output_dir={moved}"])
    caplog.set_level("INFO", logger="paric")
    run_precompute(c, progress=False)
    assert set(_states(caplog).values()) == {"skipped (cached)"}, _states(caplog)
    caplog.clear()
    for img in sorted((c.data_root() / "images").rglob("*.jpg"))[:6]:
        arr = np.asarray(Image.open(img))
        Image.fromarray((255 - arr).astype(np.uint8)).save(img)
    run_precompute(c, progress=False)
    states = _states(caplog)
    assert states.pop("data") == "skipped (cached)"
    assert set(states.values()) == {"done"}, states
    assert set(states) >= {"vlm", "adapters", "maps:train", "maps:val", "maps:test", "quality"}


def test_interrupted_run_resumes_only_missing_shards(run):
    cfg, _ = run
    d = cfg.layout.maps("train")
    reference = store.read_store(d)
    parts = _parts(d)
    (d / store.SUCCESS_NAME).unlink()  # as if killed before the end ...
    missing = sorted(parts)[1]
    (d / missing).unlink()  # ... with one shard not yet written
    killed = [d / f".{missing}.tmp-99999-deadbeef", d / ".staging.pass-99999-deadbeef"]  # by a killed actor
    killed[0].write_bytes(b"PAR1 half")
    killed[1].mkdir()
    run_precompute(cfg, progress=False)
    assert [p.name for p in d.glob(".*")] == []  # swept, and the pass's own staging removed
    after = _parts(d)
    assert set(after) == set(parts)
    assert all(after[p] == parts[p] for p in parts if p != missing)  # finished shards untouched
    again = store.read_store(d)
    np.testing.assert_array_equal(again.map_samples, reference.map_samples)


def test_one_or_two_actors_give_bit_identical_maps(run, tmp_path):
    cfg, summary = run
    root = Path(summary["data"])
    art = VLMArtifact(cfg.vlm.name, None, cfg.layout.vlm_checkpoint(), "k")
    layer = store.read_provenance(cfg.layout.maps("test"))["saliency_layer"]
    outs = {}
    for n in (1, 2):
        c = load_config(None, [*_dump(cfg), f"run.output_dir={tmp_path / str(n)}", f"data.root={root}",
                               f"maps.num_actors={n}"])
        outs[n] = store.read_store(precompute_split(c, root, "test", art, Path(summary["adapters"]), layer))
    for col in ("map_det", "map_samples", "map_mean", "map_median", "map_std"):
        assert np.array_equal(getattr(outs[1], col), getattr(outs[2], col)), col
    assert np.array_equal(outs[1].map_samples, store.read_store(cfg.layout.maps("test")).map_samples)


def _assert_fixture(maps_dir: Path, fixture: Path) -> None:
    """``maps_dir``'s store equals ``fixture``'s: ids and labels anywhere, floats exactly on the CPU the
    fixture was written on (skipped elsewhere: another CPU's kernels round differently; README "Not
    bit-identical across machines")."""
    sys.path.insert(0, str(REPO / "tests"))
    from cpu_signature import cpu_signature

    now, old = store.read_store(maps_dir), store.read_store(fixture)
    assert now.image_id == old.image_id and np.array_equal(now.label, old.label)
    written_on = json.loads((fixture / "cpu.json").read_text())
    if written_on != cpu_signature():
        pytest.skip(f"fixture written on {written_on}, this is {cpu_signature()}")
    for col in ("map_det", "map_samples", "map_mean", "map_median", "map_std"):
        assert np.array_equal(getattr(now, col), getattr(old, col)), col


def test_maps_match_the_stored_fixture(run):
    """Issue 13: refactors keep the maps bit-identical for the same config. The fixture is this tiny
    config's test store (``tests/make_map_fixture.py``), rewritten only by a change meant to change
    maps (issue 31: the rejection gamma draw)."""
    cfg, _ = run
    _assert_fixture(cfg.layout.maps("test"), REPO / "tests" / "fixtures" / "maps_tiny")


def test_the_inverse_gamma_draw_gives_the_maps_of_before_issue_31(run, tmp_path):
    """``maps.gamma=inverse`` is the sampler every store before issue 31 was written with: this tiny
    config's test split under it is, bit for bit, the fixture that code wrote
    (``tests/fixtures/maps_tiny_inverse``, frozen: no code writes it any more)."""
    cfg, summary = run
    c = load_config(None, [*_dump(cfg), f"run.output_dir={tmp_path / 'out'}", f"data.root={summary['data']}",
                           "maps.gamma=inverse"])
    art = VLMArtifact(cfg.vlm.name, None, cfg.layout.vlm_checkpoint(), "k")
    layer = store.read_provenance(cfg.layout.maps("test"))["saliency_layer"]
    out = precompute_split(c, Path(summary["data"]), "test", art, Path(summary["adapters"]), layer)
    _assert_fixture(out, REPO / "tests" / "fixtures" / "maps_tiny_inverse")


def _dump(cfg) -> list[str]:
    """The tiny config as overrides (so a copy can change a few keys)."""
    import json

    flat = []

    def walk(prefix, obj):
        for k, v in obj.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                flat.append(f"{prefix}{k}={json.dumps(v)}")

    walk("", cfg.model_dump(mode="json"))
    return flat


def test_corrupt_image_fails_clearly_and_leaves_no_partial_part(run, tmp_path):
    cfg, summary = run
    root = tmp_path / "data"
    shutil.copytree(summary["data"], root)
    meta = pd.read_csv(root / "metadata.csv")
    victim = meta[meta["split"] == 2]["img_filename"].iloc[12]  # in the second shard of test
    (root / "images" / victim).write_bytes(b"not a jpeg")
    c = load_config(None, [*_dump(cfg), f"run.output_dir={tmp_path / 'out'}", f"data.root={root}"])
    art = VLMArtifact(cfg.vlm.name, None, cfg.layout.vlm_checkpoint(), "k")
    layer = store.read_provenance(cfg.layout.maps("test"))["saliency_layer"]
    with pytest.raises(Exception, match=victim.split("/")[-1]):
        precompute_split(c, root, "test", art, Path(summary["adapters"]), layer)
    out = c.layout.maps("test")
    leftovers = [p.name for p in out.glob(".*")] if out.exists() else []
    assert leftovers == []
    assert not (out / store.SUCCESS_NAME).exists()
    assert not store.part_path(out, 1).exists()


def test_cli_reports_config_typo(capsys):
    """The command's ``main`` in-process (``pipelines/precompute.py`` is a wrapper around it:
    ``test_cli.test_every_pipeline_script_is_its_paric_command``); exit status 2 before any stage."""
    from paric.commands.precompute import main

    assert main(["--config", str(REPO / "conf" / "default.yaml"), "maps.KK=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'maps.KK'" in err and "did you mean 'maps.K'" in err
