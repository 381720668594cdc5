"""Tests for the synthetic benchmark generator and the Waterbirds-format reader."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from paric.config import SyntheticConfig
from paric.data import CaptionCorpus, DatasetError, WaterbirdsDataset, generate_benchmark
from paric.data import synthetic
from paric.data.synthetic import build_caption_table, build_metadata

TINY = dict(n_train=40, n_val=16, n_test=16, n_captions=40, image_size=32)
COLOURS = {
    "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white",
    "grey", "gray", "cyan", "magenta", "violet", "colour", "color", "colored", "coloured",
}


def tiny(**kw) -> SyntheticConfig:
    return SyntheticConfig(**{**TINY, **kw})


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return generate_benchmark(tiny(), tmp_path_factory.mktemp("bench") / "data", progress=False)


def _copy_bench(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _all_pixels(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(Image.open(p)) for p in sorted(root.rglob("*")) if p.suffix in (".jpg", ".png")}


# ----------------------------------------------------------------------------------- generator
def test_layout_and_metadata(bench: Path) -> None:
    meta = pd.read_csv(bench / "metadata.csv")
    assert list(meta.columns[:4]) == ["img_filename", "y", "place", "split"]
    assert len(meta) == 40 + 16 + 16
    assert (meta["split"].value_counts().sort_index().tolist()) == [40, 16, 16]
    info = json.loads((bench / "dataset.json").read_text())
    assert info["format"] == "waterbirds" and info["classes"] == ["circle", "triangle"]
    assert info["places"] == ["land", "water"] and info["config_hash"] == synthetic.config_hash(tiny())
    for f, y in zip(meta["img_filename"], meta["y"]):
        assert f.startswith(f"{y + 1:03d}.{info['classes'][y]}/")
        img = Image.open(bench / "images" / f)
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (32, 32)
        mask = Image.open((bench / "masks" / f).with_suffix(".png"))
        assert mask.mode == "L" and mask.size == (32, 32)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
    caps = pd.read_csv(bench / "captions.csv", keep_default_na=False)
    assert list(caps.columns) == ["img_filename", "caption", "shape", "place"] and len(caps) == 40
    assert all((bench / "captions" / f).is_file() for f in caps["img_filename"])
    assert not list(bench.parent.glob("*.tmp-*"))


def test_deterministic(tmp_path: Path) -> None:
    a = generate_benchmark(tiny(), tmp_path / "a", progress=False)
    b = generate_benchmark(tiny(), tmp_path / "b", progress=False, workers=2)  # parallelism-invariant
    c = generate_benchmark(tiny(seed=1), tmp_path / "c", progress=False)
    for name in ("metadata.csv", "captions.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)  # every JPEG/PNG byte
    pa, pb, pc = _all_pixels(a), _all_pixels(b), _all_pixels(c)
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert (a / "captions.csv").read_bytes() != (c / "captions.csv").read_bytes()
    common = pa.keys() & pc.keys()
    assert any(not np.array_equal(pa[k], pc[k]) for k in common if k.endswith(".jpg"))


def test_train_correlation_and_balanced_eval() -> None:
    for ratio in (0.95, 0.7):
        cfg = SyntheticConfig(n_train=2000, n_val=400, n_test=400, ratio=ratio)
        meta = build_metadata(cfg)
        train = meta[meta["split"] == 0]
        own = (train["place"] == train["y"] % 2).mean()
        assert abs(own - ratio) < 0.01
        assert abs((train["y"] == 0).mean() - 0.5) < 0.01
        for s in (1, 2):
            counts = meta[meta["split"] == s].groupby(["y", "place"]).size()
            assert len(counts) == 4 and counts.tolist() == [100] * 4
    meta = build_metadata(SyntheticConfig(n_train=500, n_val=10, n_test=13, ratio=1.0))
    train = meta[meta["split"] == 0]
    assert (train["place"] == train["y"] % 2).all()
    for s in (1, 2):
        counts = meta[meta["split"] == s].groupby(["y", "place"]).size()
        assert len(counts) == 4 and counts.max() - counts.min() <= 1


def test_three_places_minority_spread() -> None:
    cfg = SyntheticConfig(classes=["circle", "square", "triangle"], places=["land", "water", "desert"],
                          n_train=3000, n_val=90, n_test=90, ratio=0.8)
    meta = build_metadata(cfg)
    train = meta[meta["split"] == 0]
    assert abs((train["place"] == train["y"] % 3).mean() - 0.8) < 0.01
    assert train.groupby(["y", "place"]).size().min() > 50  # every minority group populated
    assert (meta[meta["split"] == 1].groupby(["y", "place"]).size() == 10).all()


def test_masks_exact_and_sane(bench: Path) -> None:
    ds = WaterbirdsDataset(bench)
    fracs = []
    for i in range(len(ds)):
        item = ds[i]
        assert item["mask"].shape == item["image"].shape[:2]
        assert set(np.unique(item["mask"])) <= {0, 1}
        fracs.append(item["mask"].mean())
    lo, hi = tiny().object_area
    assert min(fracs) > lo * 0.8 and max(fracs) < hi * 1.2
    # Before JPEG coding (and without the v2 pattern), the mask is exactly the pixels painted with
    # the object's flat colour.
    cfg = tiny()
    flat = tiny(pattern_contrast=[0.0, 0.0])
    for s in cfg.shapes:
        img, mask = synthetic.render(s, "water", 64, np.random.default_rng(3), flat)
        colours = np.unique(img[mask], axis=0)
        assert len(colours) == 1
        assert (np.all(img == colours[0], axis=-1) == mask).sum() >= mask.size - 2  # background may collide by chance
        ys, xs = np.nonzero(mask)
        assert ys.min() > 0 and xs.min() > 0 and ys.max() < 63 and xs.max() < 63  # fully inside
    # the mask written to disk is the rendered one
    meta = pd.read_csv(bench / "metadata.csv")
    row = meta.iloc[5]
    _, mask = synthetic.render(row["shape"], cfg.places[row["place"]], 32, synthetic._rng(cfg, synthetic._STREAM_BENCH, 5),
                               cfg)
    disk = np.asarray(Image.open((bench / "masks" / row["img_filename"]).with_suffix(".png"))) > 0
    assert np.array_equal(disk, mask)


def test_v2_objects_carry_their_shapes_pattern_and_places_vary_in_strength() -> None:
    cfg = SyntheticConfig(pattern_contrast=[0.5, 0.5], place_strength=[0.4, 0.4])
    for shape in ("circle", "triangle"):
        img, mask = synthetic.render(shape, "water", 64, np.random.default_rng(0), cfg)
        inside = img[mask].astype(float).mean(1)
        assert inside.std() > 10  # the pattern modulates the object's colour
    assert synthetic.shape_pattern("circle") != synthetic.shape_pattern("triangle")
    assert synthetic.shape_pattern("moon") in synthetic.PATTERNS
    # a weak place cue is closer to the neutral grey: water's blue dominates less
    blue = []
    for strength in (0.4, 1.0):
        c = SyntheticConfig(place_strength=[strength, strength], pattern_contrast=[0.0, 0.0])
        img, mask = synthetic.render(None, "water", 64, np.random.default_rng(1), c)
        blue.append(float(img[..., 2].mean() - img[..., 0].mean()))
    assert blue[0] < 0.6 * blue[1]
    with pytest.raises(ValueError, match="object_area"):
        SyntheticConfig(object_area=[0.3, 0.2])


def test_captions_content() -> None:
    cfg = SyntheticConfig(n_captions=3000, shapes=["circle", "square", "triangle", "star", "hexagon"],
                          places=["land", "water", "snow", "moon_base"], classes=["circle", "square"])
    caps = build_caption_table(cfg)
    assert abs((caps["shape"] == "").mean() - cfg.empty_fraction) < 0.01
    generic = 0
    for cap, shape in zip(caps["caption"], caps["shape"]):
        words = set(re.findall(r"[a-z]+", cap.lower()))
        assert not words & COLOURS, cap
        named = words & set(cfg.shapes)
        if shape == "":
            assert not named and not words & {"shape", "object"}, cap
        else:
            assert named == {shape} or words & {"shape", "object"}, cap
            generic += named != {shape}
    n_obj = (caps["shape"] != "").sum()
    assert 0.1 < generic / n_obj < 0.3
    assert caps["caption"].nunique() > 50
    # shape and place are independent in the corpus
    obj = caps[caps["shape"] != ""]
    table = pd.crosstab(obj["shape"], obj["place"], normalize="index")
    assert (table - 0.25).abs().to_numpy().max() < 0.08


def test_unknown_shape_and_places(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="blob"):
        generate_benchmark(tiny(shapes=["circle", "triangle", "blob"]), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    root = generate_benchmark(tiny(places=["desert", "snow", "moon_base"], n_val=6, n_test=6), tmp_path / "y", progress=False)
    assert WaterbirdsDataset(root).places == ["desert", "snow", "moon_base"]


# ---------------------------------------------------------------------------------- atomic/cache
def test_cache_and_conflict(tmp_path: Path) -> None:
    root = generate_benchmark(tiny(), tmp_path / "data", progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}  # every image, mask and index
    assert generate_benchmark(tiny(), root, progress=False) == root  # cached: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    with pytest.raises(FileExistsError, match="Delete .* or change run.output_dir"):
        generate_benchmark(tiny(seed=5), root, progress=False)
    assert (root / "dataset.json").is_file()  # never deleted
    other = tmp_path / "user_dir"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_benchmark(tiny(), other, progress=False)
    assert (other / "notes.txt").read_text() == "mine"


def test_no_half_written_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = synthetic.SHAPE_DRAWERS["circle"]

    def flaky():
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("boom")
        return real()

    monkeypatch.setitem(synthetic.SHAPE_DRAWERS, "circle", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        generate_benchmark(tiny(), tmp_path / "data", progress=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- reader
def test_reader_splits_and_resize(bench: Path) -> None:
    full = WaterbirdsDataset(bench)
    assert len(full) == 72 and full.classes == ["circle", "triangle"] and full.has_masks
    assert list(full.rows.columns[:6]) == ["img_filename", "y", "place", "split", "group", "split_name"]
    test = WaterbirdsDataset(bench, "test", image_size=48)
    assert len(test) == 16 and set(test.rows["split_name"]) == {"test"}
    item = test[-1]
    assert item["image"].shape == (48, 48, 3) and item["image"].dtype == np.uint8
    assert item["mask"].shape == (48, 48) and item["split"] == "test"
    assert item["group"] == item["label"] * 2 + item["place"]
    assert item["image_id"] == test.rows["img_filename"].iat[15]
    assert WaterbirdsDataset(bench, "train", with_masks=False)[0]["mask"] is None
    with pytest.raises(IndexError):
        test[16]
    corpus = CaptionCorpus(bench)
    image, caption = corpus[0]
    assert len(corpus) == 40 and image.shape == (32, 32, 3) and isinstance(caption, str)


def test_reader_real_waterbirds_layout(tmp_path: Path, bench: Path) -> None:
    """No dataset.json, images directly under root, string splits, extra columns, no masks."""
    root = tmp_path / "wb"
    root.mkdir()
    meta = pd.read_csv(bench / "metadata.csv")
    for f in meta["img_filename"][:6]:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes((bench / "images" / f).read_bytes())
    m = meta.iloc[:6].copy()
    m.insert(0, "img_id", range(1, 7))
    m["split"] = ["train", "val", "test", "0", "1", "2"]
    m["place_filename"] = "/x/y.jpg"
    m.to_csv(root / "metadata.csv", index=False)
    ds = WaterbirdsDataset(root)
    assert ds.classes == [f"class{i}" for i in range(int(m["y"].max()) + 1)] and ds.places[0] == "place0"
    assert ds.rows["split"].tolist() == [0, 1, 2, 0, 1, 2] and not ds.has_masks
    assert ds[0]["mask"] is None and ds[0]["image"].shape == (32, 32, 3)


def _edit_meta(root: Path, fn) -> Path:
    path = root / "metadata.csv"
    meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(meta).to_csv(path, index=False)
    return path


def test_reader_missing_metadata(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "metadata.csv"))):
        WaterbirdsDataset(tmp_path)


def test_reader_missing_image(tmp_path: Path, bench: Path) -> None:
    root = _copy_bench(bench, tmp_path / "d")
    meta = pd.read_csv(root / "metadata.csv")
    f = meta["img_filename"].iat[3]
    (root / "images" / f).unlink()
    with pytest.raises(DatasetError) as err:
        WaterbirdsDataset(root)
    msg = str(err.value)
    assert str(root / "images" / f) in msg and "row 4 " in msg and str(root / "metadata.csv") in msg
    WaterbirdsDataset(root, "test")  # other splits still load: existence is checked per split


def test_reader_missing_mask(tmp_path: Path, bench: Path) -> None:
    root = _copy_bench(bench, tmp_path / "d")
    f = pd.read_csv(root / "metadata.csv")["img_filename"].iat[0]
    mask = (root / "masks" / f).with_suffix(".png")
    mask.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(mask))):
        WaterbirdsDataset(root)
    assert WaterbirdsDataset(root, with_masks=False)[0]["mask"] is None


def test_reader_corrupt_image(tmp_path: Path, bench: Path) -> None:
    root = _copy_bench(bench, tmp_path / "d")
    f = pd.read_csv(root / "metadata.csv")["img_filename"].iat[2]
    (root / "images" / f).write_bytes(b"this is not a jpeg" * 10)
    ds = WaterbirdsDataset(root)
    ds[1]
    with pytest.raises(DatasetError) as err:
        ds[2]
    assert str(root / "images" / f) in str(err.value) and "row 3 " in str(err.value)


@pytest.mark.parametrize(
    "col,value,expect",
    [
        ("split", "7", "expected 0/1/2 or train/val/test"),
        ("y", "abc", "expected an integer class index"),
        ("y", "5", "expected a class index, an integer in 0..1"),
        ("place", "-1", "expected a place index"),
    ],
)
def test_reader_bad_values(tmp_path: Path, bench: Path, col: str, value: str, expect: str) -> None:
    root = _copy_bench(bench, tmp_path / "d")

    def edit(m: pd.DataFrame) -> pd.DataFrame:
        m.loc[6, col] = value
        return m

    path = _edit_meta(root, edit)
    with pytest.raises(DatasetError) as err:
        WaterbirdsDataset(root)
    msg = str(err.value)
    assert str(path) in msg and "row 7 (line 8)" in msg and expect in msg and f"'{col}'" in msg


def test_reader_missing_column(tmp_path: Path, bench: Path) -> None:
    root = _copy_bench(bench, tmp_path / "d")
    path = _edit_meta(root, lambda m: m.drop(columns=["place"]))
    with pytest.raises(DatasetError) as err:
        WaterbirdsDataset(root)
    msg = str(err.value)
    assert str(path) in msg and "'place'" in msg and "img_filename, y, place, split" in msg


def test_caption_corpus_errors(tmp_path: Path, bench: Path) -> None:
    root = _copy_bench(bench, tmp_path / "d")
    caps = pd.read_csv(root / "captions.csv", keep_default_na=False)
    (root / "captions" / caps["img_filename"].iat[9]).unlink()
    with pytest.raises(DatasetError, match=r"row 10 .*captions\.csv"):
        CaptionCorpus(root)
    caps.drop(columns=["caption"]).to_csv(root / "captions.csv", index=False)
    with pytest.raises(DatasetError, match="missing column 'caption'"):
        CaptionCorpus(root)
