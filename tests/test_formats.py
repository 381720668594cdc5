"""Native dataset formats: indexing into the canonical layout, GALS' label/split rules, caption
sources, and the check (every problem reported, each naming file and row). No Ray, no torch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from paric.catalog import load_config
from paric.config import ConfigError
from paric.data import CaptionCorpus, WaterbirdsDataset
from paric.data.check import check_dataset, main
from paric.data.fixtures import make_coco_fixture, make_food101_fixture, make_waterbirds_fixture
from paric.data.formats import (
    FORMATS,
    DatasetCheckError,
    build_index,
    check_source,
    index_is_current,
    options_for,
    prepare_index,
)
from paric.data.formats import coco_gender, food101
from paric.data.formats.base import CheckReport
from paric.data.formats.captions import read_caption_source

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def natives(tmp_path_factory):
    """One pristine copy of each native fixture; tests that damage one copy it first."""
    base = tmp_path_factory.mktemp("native")
    return {"waterbirds": make_waterbirds_fixture(base / "wb"), "food101": make_food101_fixture(base / "food"),
            "coco_gender": make_coco_fixture(base / "coco")}


@pytest.fixture(scope="module")
def indexes(natives, tmp_path_factory):
    base = tmp_path_factory.mktemp("index")
    return {k: build_index(fx.format, fx.root, base / k, **fx.options) for k, fx in natives.items()}


def _split_counts(ds: WaterbirdsDataset) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {s: {c: 0 for c in ds.classes} for s in ("train", "val", "test")}
    for s, y in zip(ds.rows["split_name"], ds.rows["y"]):
        out[s][ds.classes[y]] += 1
    return out


def test_registry():
    assert set(FORMATS) == {"waterbirds", "food101", "coco_gender"}
    with pytest.raises(ValueError, match="unknown dataset format 'imagenet'"):
        check_source("imagenet", ".")
    with pytest.raises(TypeError, match="no option.*'masks'.*options are"):
        check_source("food101", ".", masks="x")


def test_a_new_format_is_one_entry_whose_options_come_from_data_options(natives, tmp_path):
    """A format registered with no key of its own in the data section: ``data.format`` accepts its
    name, ``data.options`` reaches its scanner, the data stage indexes it, its metrics are reported."""
    from paric.data.formats import DatasetFormat, dataset_metrics, waterbirds

    fx = natives["waterbirds"]
    FORMATS.add("toy_birds", DatasetFormat(waterbirds.scan, metrics=lambda y, p, c: {"n": float(len(y))}))
    try:
        cfg = load_config(None, ["data.format=toy_birds", f"data.root={fx.root}", f"run.output_dir={tmp_path}",
                                 f"data.options={{masks: {fx.options['masks']}}}", "data.check_images=open"])
        assert options_for(cfg.data) == {"masks": fx.options["masks"], "captions": None}
        assert prepare_index(cfg.data, cfg.data_root()) is False
        assert len(WaterbirdsDataset(cfg.data_root(), "train")) > 0 and WaterbirdsDataset(cfg.data_root(), "train").has_masks
        assert dataset_metrics("toy_birds", [0, 1], [0, 0], ["a", "b"]) == {"n": 2.0}
        bad = load_config(None, ["data.format=toy_birds", f"data.root={fx.root}", "data.options={classes: [a]}"])
        with pytest.raises(TypeError, match=r"format 'toy_birds' has no option\(s\) \['classes'\]"):
            prepare_index(bad.data, tmp_path / "bad")
    finally:
        FORMATS._entries.pop("toy_birds")


# ---------------------------------------------------------------------------------- Waterbirds
def test_waterbirds_index_reads_through_the_one_reader(natives, indexes):
    fx, root = natives["waterbirds"], indexes["waterbirds"]
    assert sorted(p.name for p in root.iterdir()) == ["captions.csv", "check.txt", "dataset.json", "metadata.csv"]
    info = json.loads((root / "dataset.json").read_text())
    assert info["image_dir"] == str(fx.root.resolve()) and Path(info["mask_dir"]).is_absolute()
    ds = WaterbirdsDataset(root, with_masks=True)
    assert ds.classes == ["landbird", "waterbird"] and ds.places == ["land", "water"] and ds.has_masks
    assert _split_counts(ds) == fx.expected
    native = pd.read_csv(fx.root / "metadata.csv")
    assert ds.rows["img_filename"].tolist() == native["img_filename"].tolist()
    assert (ds.rows["group"] == native["y"] * 2 + native["place"]).all()
    assert ds.rows["split"].tolist() == native["split"].tolist()
    assert ds.image_path(0) == fx.root.resolve() / native["img_filename"][0]  # the original file, not a copy
    item = WaterbirdsDataset(root, "train", image_size=24)[3]
    assert item["image"].shape == (24, 24, 3) and item["mask"].shape == (24, 24)
    assert 0.1 < item["mask"].mean() < 0.5  # the fixture's square object
    assert "img_id" in ds.rows.columns  # native extra columns are kept
    corpus = CaptionCorpus(root)
    assert len(corpus) == 32 and corpus[0][1].startswith("a photo of a")


def test_waterbirds_without_masks(natives, tmp_path):
    fx = natives["waterbirds"]
    out = build_index("waterbirds", fx.root, tmp_path / "idx")
    ds = WaterbirdsDataset(out)
    assert not ds.has_masks and not (out / "captions.csv").exists()


# ------------------------------------------------------------------------------------ Food-101
def test_food_index_classes_and_split_rule(natives, indexes):
    fx, root = natives["food101"], indexes["food101"]
    ds = WaterbirdsDataset(root)
    assert ds.classes == sorted(food101.RED_MEAT) and ds.places == ["all"]
    assert "apple_pie" not in set(ds.rows["food_id"].str.split("/").str[0])
    assert _split_counts(ds) == fx.expected
    assert (ds.rows["group"] == ds.rows["y"]).all()  # one place: group = class
    meta = fx.root / "meta"
    train_lines = set(meta.joinpath("train.txt").read_text().split())
    test_lines = set(meta.joinpath("test.txt").read_text().split())
    rows = ds.rows
    assert set(rows.loc[rows["split_name"] != "test", "food_id"]) == {x for x in train_lines if not x.startswith("apple")}
    assert set(rows.loc[rows["split_name"] == "test", "food_id"]) == {x for x in test_lines if not x.startswith("apple")}
    # the documented rule: per class, sorted ids permuted by default_rng(crc32(f"{seed}/{class}"))
    steak = sorted(x for x in train_lines if x.startswith("steak/"))
    val = set(rows.loc[(rows["split_name"] == "val") & rows["food_id"].str.startswith("steak/"), "food_id"])
    assert val == food101.val_split(steak, "steak", 0.2, 0) and len(val) == 2
    assert food101.val_split(steak, "steak", 0.2, 0) == food101.val_split(list(reversed(steak)), "steak", 0.2, 0)
    assert any(food101.val_split(steak, "steak", 0.2, s) != val for s in range(1, 5))


def test_food_split_independent_of_class_selection(natives, tmp_path):
    fx = natives["food101"]
    full = WaterbirdsDataset(build_index("food101", fx.root, tmp_path / "a"))
    two = WaterbirdsDataset(build_index("food101", fx.root, tmp_path / "b", classes=["steak", "pork_chop"]))
    assert two.classes == ["pork_chop", "steak"]
    pick = lambda ds: set(ds.rows.loc[(ds.rows["split_name"] == "val") & ds.rows["food_id"].str.startswith("steak/"),
                                      "food_id"])
    assert pick(full) == pick(two)
    assert not (tmp_path / "a" / "captions.csv").exists()  # no caption source given: no corpus


def test_food_accepts_parent_of_archive_folder(natives, tmp_path):
    fx = natives["food101"]
    ds = WaterbirdsDataset(build_index("food101", fx.root.parent, tmp_path / "idx", **fx.options))
    assert len(ds) == 70 and len(CaptionCorpus(tmp_path / "idx")) == 84


# ---------------------------------------------------------------------------------------- COCO
@pytest.mark.parametrize("captions,expected", [
    (["A man riding a horse.", "A man on a horse", "The guy rides.", "A horse", "A field"], "man"),
    (["A Woman, smiling!", "a lady", "She laughs", "her dog", "A dog"], "woman"),
    (["A man and a woman on a bench", "A man", "A guy", "A man sits", "He sits"], None),  # man+woman in one caption
    (["A man with a dog", "He walks", "A dog", "A park", "A leash"], None),  # 2 < 3 gendered captions
    (["A man skiing", "A skier", "A person skiing", "Someone on skis", "A slope"], "person"),  # 1 man, 3 person
    (["A manhole cover", "A shepherd dog", "Hermit crab", "A bowl", "A cup"], None),  # substrings do not count
    (["A man", "A man", "A man", "A woman", "A woman", "A woman"], "man"),  # GALS checks man first
    (["A child plays", "A kid plays", "A baby", "A toy", "A ball"], "person"),
])
def test_coco_gender_rule(captions, expected):
    assert coco_gender.gender_label(captions, 3) == expected


def test_coco_word_lists_are_disjoint_and_stated():
    assert not coco_gender.MAN_WORDS & coco_gender.WOMAN_WORDS
    assert {"man", "boy", "he", "his"} <= coco_gender.MAN_WORDS and {"woman", "girl", "she", "her"} <= coco_gender.WOMAN_WORDS
    assert coco_gender.gender_label(["a man"] * 2 + ["x"] * 3, 2) == "man"  # min_captions is a parameter


def test_coco_index_balanced_eval(natives, indexes):
    fx, root = natives["coco_gender"], indexes["coco_gender"]
    ds = WaterbirdsDataset(root)
    assert ds.classes == ["man", "woman", "person"] and ds.n_groups == 3
    assert _split_counts(ds) == fx.expected
    rows = ds.rows
    assert rows.loc[rows["split_name"] == "train", "img_filename"].str.startswith("train2014/").all()
    assert rows.loc[rows["split_name"] != "train", "img_filename"].str.startswith("val2014/").all()
    assert not set(rows.loc[rows["split_name"] == "val", "coco_id"]) & set(rows.loc[rows["split_name"] == "test", "coco_id"])
    # the adapters' corpus: every train2014 caption (12 images x 5), no val2014 image
    corpus = CaptionCorpus(root)
    assert len(corpus) == 60 and corpus.rows["img_filename"].str.startswith("train2014/").all()


def test_coco_balanced_eval_ids_rule():
    labelled = {i: "man" for i in range(10)} | {i: "woman" for i in range(10, 16)} | {16: "person", 17: None}
    val, test = coco_gender.balanced_eval_ids(labelled, 500, seed=0)
    assert len(val) == len(test) == 6 and sum(g == "man" for _, g in val) == 3
    assert not {i for i, _ in val} & {i for i, _ in test}
    val2, _ = coco_gender.balanced_eval_ids(labelled, 2, seed=0)
    assert len(val2) == 4 and coco_gender.balanced_eval_ids(labelled, 500, seed=0) == (val, test)


def test_coco_gals_split_files(natives, tmp_path):
    fx = natives["coco_gender"]
    sd = tmp_path / "COCO_gender"
    (sd / "biased_split").mkdir(parents=True)
    (sd / "balanced_split").mkdir()
    (sd / "biased_split" / "train.ids.txt").write_text("1.0\n2.0\n5.0\n8.0\n10.0\n")  # 10: the 'both' image
    for split, man, woman in (("val", [13, 14], [19]), ("test", [15], [20])):
        (sd / "balanced_split" / f"{split}_man.txt").write_text("".join(f"{i}\n" for i in man))
        (sd / "balanced_split" / f"{split}_woman.txt").write_text("".join(f"{i}\n" for i in woman))
    ds = WaterbirdsDataset(build_index("coco_gender", fx.root, tmp_path / "idx", split_dir=sd))
    got = {s: sorted(ds.rows.loc[ds.rows["split_name"] == s, "coco_id"].astype(int)) for s in ("train", "val", "test")}
    assert got == {"train": [1, 2, 5, 8], "val": [13, 14, 19], "test": [15, 20]}
    assert ds.rows.set_index("coco_id").loc["19", "y"] == 1  # the file decides the eval label
    (sd / "balanced_split" / "test_man.txt").write_text("15\n999\nabc\n")
    report, _ = check_source("coco_gender", fx.root, "exists", split_dir=sd)
    text = report.render()
    assert "test_man.txt: line 2: image id 999 is not in captions_val2014.json" in text
    assert "test_man.txt: line 3: 'abc': expected an integer COCO image id" in text


# ------------------------------------------------------------------------------- caption sources
def test_caption_sources(tmp_path, natives):
    fx = natives["waterbirds"]
    img = fx.root / pd.read_csv(fx.root / "metadata.csv")["img_filename"][0]
    (tmp_path / "pics").mkdir()
    shutil.copy(img, tmp_path / "pics" / "a.jpg")
    (tmp_path / "c.csv").write_text(f"image,caption\npics/a.jpg,a bird\n{img},another bird\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"image": "pics/a.jpg", "caption": "a bird"}) + "\n\n"
                                      + json.dumps({"image": str(img), "caption": "x"}) + "\n")
    for name in ("c.csv", "c.jsonl"):
        report = CheckReport("captions", tmp_path)
        cap = read_caption_source(tmp_path / name, report)
        assert report.ok and len(cap.frame) == 2 and cap.caption_dir == tmp_path.resolve()
        assert [it.path for it in cap.listings] == [tmp_path.resolve() / "pics/a.jpg", img]  # relative and absolute
    coco = natives["coco_gender"].root / "annotations" / "captions_val2014.json"
    report = CheckReport("captions", tmp_path)
    cap = read_caption_source(coco, report)
    assert report.ok and len(cap.frame) == 60 and cap.frame["img_filename"][0].startswith("val2014/COCO_val2014_")
    assert cap.listings[0].path.is_file()
    # problems, each with file and row/line
    (tmp_path / "bad.csv").write_text("image,text\npics/a.jpg,x\n")
    (tmp_path / "bad.jsonl").write_text('{"image": "pics/a.jpg", "caption": ""}\nnot json\n[1]\n')
    (tmp_path / "bad2.csv").write_text("image,caption\n,a caption\npics/a.jpg,\n")
    report = CheckReport("captions", tmp_path)
    for name in ("bad.csv", "bad.jsonl", "bad2.csv", "c.txt"):
        read_caption_source(tmp_path / name, report)
    text = "\n".join(map(str, report.problems))
    assert f"{tmp_path / 'bad.csv'}: header (line 1): missing column 'caption'" in text
    assert f"{tmp_path / 'bad.jsonl'}: line 1: key 'caption' missing or empty" in text
    assert f"{tmp_path / 'bad.jsonl'}: line 2: not valid JSON" in text
    assert f"{tmp_path / 'bad.jsonl'}: line 3: expected a JSON object" in text
    assert f"{tmp_path / 'bad2.csv'}: row 1 (line 2): empty 'image'" in text
    assert f"{tmp_path / 'bad2.csv'}: row 2 (line 3): empty 'caption'" in text
    assert "unknown caption source type '.txt'" in text


# ------------------------------------------------------------------------------------ the check
def _damaged_waterbirds(natives, tmp_path) -> tuple[Path, dict[str, str]]:
    """A copy with one of each defect, all at once; returns root and {defect: image name}."""
    fx = natives["waterbirds"]
    root = tmp_path / "wb"
    shutil.copytree(fx.root, root)
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    names = meta["img_filename"]
    (root / names[3]).unlink()  # row 4: missing image
    (root / names[5]).write_bytes(b"definitely not a jpeg" * 4)  # row 6: corrupt image
    data = (root / names[7]).read_bytes()
    (root / names[7]).write_bytes(data[: len(data) // 2])  # row 8: truncated JPEG
    meta.loc[9, "split"] = "holdout"  # row 10: unknown split
    meta.loc[11, "y"] = "7"  # row 12: label outside the class list
    meta.drop(columns=["place"]).to_csv(root / "metadata.csv", index=False)  # missing column
    return root, {"missing": names[3], "corrupt": names[5], "truncated": names[7]}


def test_check_reports_every_problem_with_file_and_row(natives, tmp_path):
    root, bad = _damaged_waterbirds(natives, tmp_path)
    meta = root / "metadata.csv"
    report = check_dataset(root, "waterbirds")
    text = report.render()
    assert not report.ok
    expected = [
        f"{meta}: header (line 1): missing column 'place': expected columns img_filename, y, place, split",
        f"{meta}: row 4 (line 5): image file not found: {root / bad['missing']}",
        f"{meta}: row 6 (line 7): image file cannot be decoded: {root / bad['corrupt']}",
        f"{meta}: row 8 (line 9): image file cannot be decoded: {root / bad['truncated']}",
        f"{meta}: row 10 (line 11): unknown 'split' value 'holdout': expected 0/1/2 or train/val/test",
        f"{meta}: row 12 (line 13): 'y' value '7' is outside the class list: expected one of 0=landbird, 1=waterbird",
    ]
    for line in expected:
        assert line in text, line
    assert len(report.problems) == len(expected)  # nothing else: the missing 'place' is reported once
    # with the column back, the groups are counted and printed
    m = pd.read_csv(natives["waterbirds"].root / "metadata.csv")
    m.to_csv(meta, index=False)
    report = check_dataset(root, "waterbirds", masks=natives["waterbirds"].options["masks"])
    assert "landbird/water" in report.render() and report.counts.loc["train"].tolist() == [6, 2, 2, 6]
    assert {p.message.split(":")[0] for p in report.problems} == {"image file not found", "image file cannot be decoded"}


def test_check_masks_and_empty_split(natives, tmp_path):
    fx = natives["waterbirds"]
    root = tmp_path / "wb"
    shutil.copytree(fx.root, root)
    seg = tmp_path / "seg"
    shutil.copytree(fx.options["masks"], seg)
    meta = pd.read_csv(root / "metadata.csv")
    (seg / meta["img_filename"][0]).with_suffix(".png").unlink()
    meta.loc[meta["split"] == 1, "split"] = 0
    meta.to_csv(root / "metadata.csv", index=False)
    text = check_dataset(root, "waterbirds", masks=seg).render()
    assert f"row 1 (line 2): mask file not found: {(seg / meta['img_filename'][0]).with_suffix('.png')}" in text
    assert "split 'val' has no images: expected images in each of train, val and test" in text
    assert "masks folder not found" in check_dataset(root, "waterbirds", masks=tmp_path / "nope").render()
    assert "metadata.csv: file not found" in check_dataset(tmp_path / "seg", "waterbirds").render()
    assert "dataset directory not found" in check_dataset(tmp_path / "nowhere", "waterbirds").render()
    # a mask whose size differs from its image: named with both sizes at check time, not as a numpy error later
    second = (seg / meta["img_filename"][1]).with_suffix(".png")
    with Image.open(second) as m:
        w, h = m.size
        m.resize((w + 3, h)).save(second)
    text = check_dataset(root, "waterbirds", masks=seg).render()
    assert f"row 2 (line 3): mask {second} is {w + 3}×{h} but its image {root / meta['img_filename'][1]} is {w}×{h}" in text


def test_check_food_problems(natives, tmp_path):
    root = tmp_path / "food-101"
    shutil.copytree(natives["food101"].root, root)
    train = root / "meta" / "train.txt"
    lines = train.read_text().splitlines()
    (root / "images" / f"{lines[12]}.jpg").unlink()  # a steak? whichever red-meat class is at line 13
    lines[20] = "steak 12345"  # malformed
    lines[21] = "wagyu/777"  # class outside meta/classes.txt
    lines[22] = lines[23]  # duplicate
    train.write_text("\n".join(lines) + "\n")
    report, _ = check_source("food101", root, "exists", classes=["steak", "kobe"])
    text = report.render()
    assert f"{train}: line 21: 'steak 12345': expected '<class>/<image id>'" in text
    assert f"{train}: line 22: class 'wagyu' is outside the class list in meta/classes.txt" in text
    assert f"{train}: line 24: '{lines[23]}' is listed twice (first at train.txt line 23)" in text
    assert "class 'kobe' (data.classes) is not a Food-101 class" in text
    report, _ = check_source("food101", root, "exists")
    assert f"image file not found: {root / 'images' / (lines[12] + '.jpg')}" in report.render()


def test_check_coco_problems(natives, tmp_path):
    root = tmp_path / "COCO"
    shutil.copytree(natives["coco_gender"].root, root)
    ann = root / "annotations" / "captions_train2014.json"
    obj = json.loads(ann.read_text())
    obj["annotations"][4]["image_id"] = 4242
    del obj["images"][2]["file_name"]
    ann.write_text(json.dumps(obj))
    (root / "annotations" / "captions_val2014.json").write_text("{not json")
    text = check_dataset(root, "coco_gender", "exists").render()
    assert f"{ann}: annotations[4]: image_id 4242 is not in 'images'" in text
    assert f"{ann}: images[2]: missing key 'file_name'" in text
    assert "captions_val2014.json: not valid JSON" in text
    assert "split 'val' has no images" in text


def test_check_cli(natives, tmp_path, capsys):
    fx = natives["waterbirds"]
    assert main(["check", str(fx.root), "--format", "waterbirds", "--masks", fx.options["masks"]]) == 0
    out = capsys.readouterr().out
    assert "OK: no problems found" in out and "waterbird/water" in out
    root, bad = _damaged_waterbirds(natives, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "paric.data", "check", str(root), "--format", "waterbirds",
                           "--images", "decode"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "missing column 'place'" in proc.stdout and bad["missing"] in proc.stdout
    assert "unknown 'split' value 'holdout'" in proc.stdout and "FAILED: 6 problems found" in proc.stdout
    assert main(["check", str(root), "--format", "food101", "--masks", "x"]) == 2


# ------------------------------------------------------------------------ index build and cache
def test_build_index_fails_with_the_report_and_keeps_old_index(natives, tmp_path):
    fx = natives["waterbirds"]
    out = build_index("waterbirds", fx.root, tmp_path / "idx")
    before = (out / "metadata.csv").read_bytes()
    root, bad = _damaged_waterbirds(natives, tmp_path)
    with pytest.raises(DatasetCheckError) as err:
        build_index("waterbirds", root, out)
    assert bad["missing"] in str(err.value) and "missing column 'place'" in str(err.value)
    assert len(err.value.report.problems) == 6
    assert (out / "metadata.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="never deleted"):
        build_index("waterbirds", fx.root, user)
    assert (user / "notes.txt").read_text() == "keep"


def test_index_cache_follows_source_and_options(natives, tmp_path):
    fx = natives["food101"]
    src = tmp_path / "food-101"
    shutil.copytree(fx.root, src)
    out = tmp_path / "idx"
    assert not index_is_current("food101", src, out)
    build_index("food101", src, out, seed=0)
    assert index_is_current("food101", src, out, seed=0)
    assert not index_is_current("food101", src, out, seed=1)
    assert not index_is_current("food101", src, out, seed=0, val_fraction=0.3)
    test_txt = src / "meta" / "test.txt"
    test_txt.write_text(test_txt.read_text())
    os.utime(test_txt, ns=(1, 1))
    assert not index_is_current("food101", src, out, seed=0)


def test_config_data_section_and_prepare_index(natives, tmp_path):
    fx = natives["waterbirds"]
    cfg = load_config(None, [*fx.overrides(), f"run.output_dir={tmp_path / 'run'}"])
    assert cfg.data_root() == tmp_path / "run" / "data"  # the index, not the native directory
    assert prepare_index(cfg.data, cfg.data_root()) is False
    assert prepare_index(cfg.data, cfg.data_root()) is True  # cached
    assert prepare_index(cfg.data, cfg.data_root(), force=True) is False
    ds = WaterbirdsDataset(cfg.data_root())
    assert ds.has_masks and len(ds) == 32
    syn = load_config(None, [f"data.root={tmp_path / 'gen'}"])
    assert syn.data_root() == tmp_path / "gen"  # synthetic: data.root is where to generate
    with pytest.raises(ValueError, match="needs the native dataset directory"):
        prepare_index(load_config(None, ["data.format=food101"]).data, tmp_path / "x")
    with pytest.raises(ValueError, match="data.masks is for the waterbirds format only"):
        options_for(load_config(None, ["data.format=food101", "data.root=/x", "data.masks=/y"]).data)
    with pytest.raises(ConfigError, match="data.format"):
        load_config(None, ["data.format=imagenet"])
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config(None, ["data.val_fraction=1.5"])
    coco = load_config(None, [*natives["coco_gender"].overrides(), "data.coco.eval_per_class=1",
                              f"run.output_dir={tmp_path / 'coco'}"])
    prepare_index(coco.data, coco.data_root())
    assert _split_counts(WaterbirdsDataset(coco.data_root()))["test"] == {"man": 1, "woman": 1, "person": 0}
