"""COCO apparent gender (GALS' MSCOCO-ApparentGender, after Burns, Hendricks et al., "Women Also
Snowboard"): labels man / woman / person read off the human captions.

Native layout (COCO 2014 downloads, GALS' ``data/COCO``)::

    annotations/captions_train2014.json, annotations/captions_val2014.json
    train2014/COCO_train2014_<id>.jpg,   val2014/COCO_val2014_<id>.jpg

Label rule (GALS datasets/coco.py): each caption is lower-cased, stripped of punctuation and split
into words. A caption mentions a man if it contains a word of :data:`MAN_WORDS`, a woman if one of
:data:`WOMAN_WORDS`, a person if one of :data:`PERSON_WORDS`. An image is dropped when any caption
mentions both a man and a woman, or when no caption mentions anyone. Otherwise it is *man* if at
least ``min_captions`` (3) captions mention a man, else *woman* if at least 3 mention a woman, else
*person* if at least 3 mention a person; images matching none of these are dropped. Classes are
``[man, woman, person]`` (GALS trains 3-way and scores "person" as a third outcome, METHODS.md §1).

Splits: train = the labelled train2014 images. Val and test come from val2014 and are balanced:
only man and woman images, the same number of each. With GALS' ``COCO_gender`` files
(``split_dir``) the image ids are theirs (``biased_split/train.ids.txt``;
``balanced_split/{val,test}_{man,woman}.txt``, whose file decides the label, as in GALS); without
them, the val2014 images labelled man or woman by the rule are, per gender, sorted by id and
permuted by ``numpy.random.default_rng(zlib.crc32(f"{seed}/{gender}"))``; the first n go to val,
the next n to test, with n = min(eval_per_class, min(#man, #woman) // 2).
One place, so a group is a class. The adapters' caption corpus defaults to every caption of
``captions_train2014.json`` (no val2014 image, so no test image, is captioned for them).
"""
from __future__ import annotations

import string
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from paric.data.formats.base import CheckReport, DatasetFormat, IndexTable, Listing
from paric.data.formats.captions import attach_captions, captions_from_rows, coco_entries, load_json_object
from paric.eval.fairness import gender_metrics

if TYPE_CHECKING:
    from paric.config import DataConfig

CLASSES = ["man", "woman", "person"]
PLACES = ["all"]

MAN_WORDS = frozenset({
    "boy", "brother", "dad", "husband", "man", "groom", "male", "guy", "dude", "policeman", "father", "son",
    "fireman", "actor", "gentleman", "boyfriend", "mans", "his", "obama", "businessman", "he", "cowboy",
})
WOMAN_WORDS = frozenset({
    "girl", "sister", "mom", "wife", "woman", "bride", "female", "lady", "actress", "nun", "girlfriend", "her",
    "she", "mother", "daughter", "businesswoman", "cowgirl",
})
PERSON_WORDS = frozenset({
    "person", "child", "kid", "teenager", "someone", "player", "rider", "skiier", "chef", "snowboarder", "surfer",
    "hipster", "skateboarder", "adult", "baby", "skier", "diver", "bicycler", "hiker", "student", "shopper",
    "cyclist", "officer", "teen", "worker", "passenger", "cook", "pedestrian", "employee", "driver", "skater",
    "toddler", "fighter", "patrol", "cop", "server", "carrier", "motorcyclist", "carpenter", "owner", "individual",
    "bicyclist", "boarder", "boater", "painter", "artist", "citizen", "staff", "biker", "technician", "hand",
    "baker", "manager", "plumber", "hands", "performer", "rollerblader", "farmer", "athlete", "pitcher", "soldier",
})
_PUNCT = str.maketrans("", "", string.punctuation)


def caption_counts(captions: list[str]) -> dict[str, int]:
    """How many captions mention a man, a woman, a person; ``both``: captions naming man and woman."""
    counts = {"man": 0, "woman": 0, "person": 0, "both": 0}
    for c in captions:
        words = set(c.lower().translate(_PUNCT).split())
        man, woman, person = bool(words & MAN_WORDS), bool(words & WOMAN_WORDS), bool(words & PERSON_WORDS)
        if man and woman:
            counts["both"] += 1
        else:
            counts["man"] += man
            counts["woman"] += woman
            counts["person"] += person
    return counts


def gender_label(captions: list[str], min_captions: int = 3) -> str | None:
    """GALS' rule (module docstring): 'man', 'woman', 'person', or None (image not used)."""
    n = caption_counts(captions)
    if n["both"] > 0 or n["man"] + n["woman"] + n["person"] == 0:
        return None
    for label in CLASSES:  # man first, then woman, then person, as GALS
        if n[label] >= min_captions:
            return label
    return None


def balanced_eval_ids(labelled: dict[int, str], eval_per_class: int, seed: int) -> tuple[list, list]:
    """(val, test) lists of (id, gender) from rule-labelled val2014 images, man and woman balanced."""
    pools = {g: sorted(i for i, lab in labelled.items() if lab == g) for g in ("man", "woman")}
    n = min(eval_per_class, min(len(p) for p in pools.values()) // 2)
    val, test = [], []
    for g, ids in pools.items():
        perm = np.random.default_rng(zlib.crc32(f"{seed}/{g}".encode())).permutation(len(ids))
        val += [(ids[k], g) for k in perm[:n]]
        test += [(ids[k], g) for k in perm[n:2 * n]]
    return val, test


def _read_ids(path: Path, report: CheckReport) -> list[tuple[int, int]]:
    """(image id, line) from one GALS id list (numbers, one a line; '123.0' as numpy writes them)."""
    if not path.is_file():
        report.add(path, "", "file not found: expected one COCO image id per line (GALS' COCO_gender split files)")
        return []
    out = []
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        s = raw.strip()
        if not s:
            continue
        try:
            v = float(s)
        except ValueError:
            v = float("nan")
        if not np.isfinite(v) or v != int(v):
            report.add(path, f"line {n}", f"'{s}': expected an integer COCO image id")
            continue
        out.append((int(v), n))
    return out


def _load(path: Path, report: CheckReport) -> tuple[dict[int, str], dict[int, list[str]], dict[int, int]]:
    obj = load_json_object(path, report, "COCO captions JSON (images: [{id, file_name}], "
                           "annotations: [{image_id, caption}])")
    if obj is None:
        return {}, {}, {}
    files, caps = coco_entries(obj, path, report)
    return files, caps, {image_id: i for i, image_id in enumerate(files)}


def scan(src: Path, report: CheckReport, min_captions: int = 3, eval_per_class: int = 500, seed: int = 0,
         split_dir: str | Path | None = None, captions: str | Path | None = None) -> IndexTable | None:
    """Label every image by the caption rule, build the splits, list images for verification."""
    ann = {s: src / "annotations" / f"captions_{s}2014.json" for s in ("train", "val")}
    data = {s: _load(p, report) for s, p in ann.items()}
    labels = {s: {i: gender_label(c, min_captions) for i, c in data[s][1].items()} for s in data}
    counts = {s: {i: caption_counts(c) for i, c in data[s][1].items()} for s in data}
    sources = list(ann.values())

    chosen: list[tuple[str, int, str, int]] = []  # (folder, id, label, split code)
    if split_dir is None:
        chosen += [("train", i, lab, 0) for i, lab in sorted(labels["train"].items()) if lab is not None]
        val, test = balanced_eval_ids(labels["val"], eval_per_class, seed)
        chosen += [("val", i, g, 1) for i, g in val] + [("val", i, g, 2) for i, g in test]
    else:
        sd = Path(split_dir).expanduser().resolve()
        ids_file = sd / "biased_split" / "train.ids.txt"
        sources.append(ids_file)
        for i, n in _read_ids(ids_file, report):
            if i not in data["train"][0]:
                report.add(ids_file, f"line {n}", f"image id {i} is not in {ann['train'].name}: expected a train2014 id")
            elif labels["train"][i] is not None:
                chosen.append(("train", i, labels["train"][i], 0))
        for split, code in (("val", 1), ("test", 2)):
            for g in ("man", "woman"):
                f = sd / "balanced_split" / f"{split}_{g}.txt"
                sources.append(f)
                for i, n in _read_ids(f, report):
                    if i not in data["val"][0]:
                        report.add(f, f"line {n}", f"image id {i} is not in {ann['val'].name}: expected a val2014 id")
                    else:
                        chosen.append(("val", i, g, code))

    rows, listings = [], []
    for folder, i, lab, code in chosen:
        name = f"{folder}2014/{data[folder][0][i]}"
        c = counts[folder][i]
        rows.append((name, CLASSES.index(lab), 0, code, i, c["man"], c["woman"], c["person"]))
        listings.append(Listing(src / name, ann[folder], f"images[{data[folder][2][i]}]"))
    frame = pd.DataFrame(rows, columns=["img_filename", "y", "place", "split", "coco_id", "n_man", "n_woman",
                                        "n_person"])
    if frame["img_filename"].duplicated().any():
        for name in frame.loc[frame["img_filename"].duplicated(), "img_filename"]:
            report.add(src, "", f"image {name} is in more than one split: expected disjoint split id lists")
    split_files = {"train": ann["train"], "val": ann["val"], "test": ann["val"]}
    if split_dir is not None:
        sd = Path(split_dir).expanduser().resolve()
        split_files = {"train": sd / "biased_split" / "train.ids.txt", "val": sd / "balanced_split" / "val_man.txt",
                       "test": sd / "balanced_split" / "test_man.txt"}
    table = IndexTable(frame=frame, classes=list(CLASSES), places=list(PLACES), image_dir=src, listings=listings,
                       sources=sources, split_files=split_files, eval_classes=["man", "woman"], notes={"min_captions": min_captions, "split": "GALS COCO_gender lists"
                                               if split_dir is not None else f"balanced val2014, seed {seed}"})
    if captions is not None:
        attach_captions(table, captions, report)
    else:
        files, caps, index = data["train"]
        cap = captions_from_rows([(f"train2014/{files[i]}", c.strip(), f"images[{index[i]}]")
                          for i in files for c in caps[i]], src, ann["train"])
        table.captions, table.caption_dir = cap.frame, cap.caption_dir
        table.listings += cap.listings
    return table


def options(data: "DataConfig") -> dict[str, Any]:
    """GALS' caption rule and evaluation split (``data.coco``) and the split seed."""
    c = data.coco
    return {"min_captions": c.min_captions, "eval_per_class": c.eval_per_class, "seed": data.seed,
            "split_dir": c.split_dir}


#: GALS' COCO table reports the outcome ratio and divergence between man and woman images
FORMAT = DatasetFormat(scan, options, gender_metrics)
