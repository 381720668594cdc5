"""Map sources (issue 13): every registered source writes its declared columns through the store
and reads them back; a store holds exactly the configured sources' columns."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from paric import store
from paric.attention.reference import GradCamEngine
from paric.attention.sources import ComputedSource, EngineSource, build_sources, compute_columns, declared_columns
from paric.catalog import MAP_SOURCES
from paric.catalog import load_config
from paric.config import AdapterConfig
from paric.vlm.adapters import build_adapters
from paric.vlm.factory import load_vlm

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["a photo of a shape", "an image of a shape"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    torch.manual_seed(0)
    vlm = load_vlm("paric-micro-vit", seed=0)
    dim = vlm.encode_text(["x"]).shape[1]
    ckpt = tmp_path_factory.mktemp("adapters") / "adapters.pt"
    pair = build_adapters(dim, AdapterConfig(hidden=32)).eval()
    torch.save({"adapters": pair.state_dict(), "dim": dim, "config": AdapterConfig(hidden=32).model_dump()}, ckpt)
    images = torch.randn(3, 3, vlm.image_size, vlm.image_size, generator=torch.Generator().manual_seed(1))
    return vlm, ckpt, images, ["a.jpg", "b.jpg", "c.jpg"]


@pytest.mark.parametrize("name", MAP_SOURCES.names())
def test_every_source_writes_its_declared_columns_and_reads_them_back(parts, name, tmp_path):
    vlm, ckpt, x, ids = parts
    cfg = load_config(None, ["maps.K=4", f"maps.sources=[{name}]"])
    src = MAP_SOURCES.get(name)(cfg, ckpt)
    if src.family == "prolip":  # it samples the tower's own Gaussians: a ProLIP tower of the same shape
        from paric.vlm.prolip.factory import load_prolip

        vlm = load_prolip("paric-micro-vit")
    engine = build_sources([src], vlm, PROMPTS, "auto", torch.device("cpu"), ["circle", "triangle"])
    assert isinstance(src, EngineSource) != isinstance(src, ComputedSource)  # exactly one of the two kinds
    assert (engine is None) == isinstance(src, ComputedSource)
    cols = compute_columns([src], engine, x, ids, np.array([0, 1, 0]))
    declared = declared_columns([name])
    assert list(cols) == list(declared), name  # exactly what it declares, in order
    for col in declared.values():
        assert col.name.startswith(store.MAP_PREFIX)
        assert cols[col.name].ndim == (4 if col.shape == "samples" else 3)
        assert np.isfinite(cols[col.name]).all()
    rows = {"image_id": ids, "split": ["test"] * 3, "label": np.zeros(3, int), "group": np.zeros(3, int), **cols}
    store.write_part(store.build_table(rows, {"sources": {name: src.provenance()}}), store.part_path(tmp_path, 0))
    store.mark_complete(tmp_path, 3, {"sources": {name: src.provenance()}})
    back = store.read_store(tmp_path)
    assert set(back.maps) == set(declared)
    for k, v in cols.items():
        np.testing.assert_array_equal(back.maps[k], v.astype(np.float16))


def test_gals_and_paric_in_one_pass_equal_each_alone(parts):
    """The engine serves several samplers in one pass; each source's maps are what it computes alone."""
    vlm, ckpt, x, ids = parts
    cfg = load_config(None, ["maps.K=4"])
    gals, paric = (MAP_SOURCES.get(n)(cfg, ckpt) for n in ("gals", "paric"))
    both = GradCamEngine(vlm, PROMPTS, [gals.sampler("cpu"), paric.sampler("cpu")])(x, ids)
    for src, together in zip((gals, paric), both):
        (alone,) = GradCamEngine(vlm, PROMPTS, [src.sampler("cpu")])(x, ids)
        np.testing.assert_allclose(together.numpy(), alone.numpy(), atol=1e-5)


def test_unknown_source_and_a_reference_no_source_writes_fail_at_load_time():
    from paric.config import ConfigError
    from paric.stages.pipeline import check_pipeline_config

    with pytest.raises(ConfigError, match="unknown map source"):
        load_config(REPO / "conf" / "default.yaml", ["maps.sources=[gals,prolipx]"])
    gals_only = load_config(REPO / "conf" / "default.yaml", ["maps.sources=[gals]"])
    with pytest.raises(ValueError, match="reads \\['map_(lazsl|samples)'\\], which maps.sources \\['gals'\\] do not write"):
        check_pipeline_config(gals_only)


def test_the_16x16_grid_and_the_norm_scaled_columns_round_trip_through_the_store(tmp_path):
    """The default tower's grid (issue 27): GALS', PARIC's and PARIC-norm's columns of a real engine
    pass on the micro 16×16 tower are written as a store part and read back unchanged (float16)."""
    from paric.attention.reference import GGDSampler, TextMatch
    from paric.config import Config

    torch.manual_seed(0)
    vlm = load_vlm("paric-micro-cnn16", seed=0)
    adapters = build_adapters(vlm.encode_text(["x"]).shape[1], AdapterConfig(hidden=16)).eval()
    engine = GradCamEngine(vlm, ["a photo of a shape"], [TextMatch(), GGDSampler(adapters, 3, 0),
                                                        GGDSampler(adapters, 3, 0, scale_by_norm=True)])
    x = torch.randn(4, 3, vlm.image_size, vlm.image_size, generator=torch.Generator().manual_seed(2))
    ids = [f"img{i}" for i in range(4)]
    det, samples, scaled = engine(x, ids)
    cfg = Config()
    cols = {**MAP_SOURCES.get("gals")(cfg).to_columns(det), **MAP_SOURCES.get("paric")(cfg).to_columns(samples),
            **MAP_SOURCES.get("paric_norm")(cfg).to_columns(scaled)}
    assert cols["map_det"].shape == (4, 16, 16) and cols["map_pn_samples"].shape == (4, 3, 16, 16)
    rows = {"image_id": ids, "split": ["train"] * 4, "label": np.array([0, 1, 0, 1]),
            "group": np.array([0, 1, 2, 3]), **cols}
    prov = {"vlm": vlm.name, "K": 3, "seed": 0}
    store.write_part(store.build_table(rows, prov), store.part_path(tmp_path, 0))
    store.mark_complete(tmp_path, 4, prov)
    back = store.read_store(tmp_path)
    for name, value in cols.items():
        np.testing.assert_array_equal(back.maps[name], np.asarray(value).astype(np.float16), err_msg=name)
