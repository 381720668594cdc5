"""Tiny native-format datasets (Waterbirds, Food-101, COCO) for tests and end-to-end smoke runs.

Why: the real datasets cannot be downloaded here, yet every format reader, the check CLI and the
pipeline on an index must be exercised on the *native* layouts. Each function writes a few dozen
small seeded images (16 px by default) in the layout the real download has, and returns a
:class:`NativeFixture` saying how to index it (``build_index(fx.format, fx.root, out, **fx.options)``)
or configure a run on it (``load_config(None, fx.overrides())``). Same arguments, same bytes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

_OPTION_KEYS = {"masks": "data.masks", "captions": "data.captions", "seed": "data.seed",
                "val_fraction": "data.val_fraction", "classes": "data.classes",
                "min_captions": "data.coco.min_captions", "eval_per_class": "data.coco.eval_per_class",
                "split_dir": "data.coco.split_dir"}


@dataclass
class NativeFixture:
    """Where a fixture was written, the format options to index it, and what the index must hold."""

    format: str
    root: Path
    options: dict[str, Any] = field(default_factory=dict)
    #: expected images per split and class name (after the format's rules)
    expected: dict[str, dict[str, int]] = field(default_factory=dict)

    def overrides(self) -> list[str]:
        """Config overrides (``key=value``) that point a run at this fixture."""
        out = [f"data.format={self.format}", f"data.root={self.root}"]
        for k, v in self.options.items():
            out.append(f"{_OPTION_KEYS[k]}={json.dumps(v) if not isinstance(v, (str, Path)) else v}")
        return out


def _scene(rng: np.random.Generator, size: int, background: tuple[int, int, int],
           colour: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A flat background with noise and one square object; (uint8 RGB image, bool mask)."""
    img = np.clip(np.array(background, np.float32) + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    side = max(2, size // 2)
    y0, x0 = rng.integers(0, size - side + 1, 2)
    mask = np.zeros((size, size), bool)
    mask[y0:y0 + side, x0:x0 + side] = True
    img[mask] = colour
    return img, mask


def _save_jpeg(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG", quality=95)


# ------------------------------------------------------------------------------------ Waterbirds
WATERBIRDS_GROUPS = {"train": [6, 2, 2, 6], "val": [2, 2, 2, 2], "test": [2, 2, 2, 2]}  # (y, place) = 00 01 10 11


def make_waterbirds_fixture(dir: str | Path, image_size: int = 16, seed: int = 0) -> NativeFixture:
    """WILDS/group-DRO layout: ``waterbird_complete95_forest2water2/metadata.csv`` (img_id, img_filename,
    y, split, place, place_filename) and images under it; CUB-style ``segmentations/`` masks (.png)
    beside it; ``captions.csv`` (image, caption) whose image paths are relative to itself."""
    dir = Path(dir)
    root = dir / "waterbird_complete95_forest2water2"
    seg = dir / "segmentations"
    rng = np.random.default_rng(seed)
    species = ["001.Land_Sparrow", "002.Water_Gull"]
    backgrounds = [(70, 110, 40), (40, 90, 170)]
    rows, caps = [], []
    k = 0
    for split_code, split in enumerate(("train", "val", "test")):
        for g, n in enumerate(WATERBIRDS_GROUPS[split]):
            y, place = divmod(g, 2)
            for _ in range(n):
                k += 1
                name = f"{species[y]}/{species[y][4:]}_{k:04d}.jpg"
                img, mask = _scene(rng, image_size, backgrounds[place], (230, 200, 40) if y == 0 else (250, 250, 250))
                _save_jpeg(root / name, img)
                mpath = (seg / name).with_suffix(".png")
                mpath.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(mpath)
                rows.append((k, name, y, split_code, place, f"{'land' if place == 0 else 'water'}/{k}.jpg"))
                caps.append((f"{root.name}/{name}", f"a photo of a {'landbird' if y == 0 else 'waterbird'}"))
    pd.DataFrame(rows, columns=["img_id", "img_filename", "y", "split", "place", "place_filename"]).to_csv(
        root / "metadata.csv", index=False)
    pd.DataFrame(caps, columns=["image", "caption"]).to_csv(dir / "captions.csv", index=False)
    expected = {s: {"landbird": v[0] + v[1], "waterbird": v[2] + v[3]} for s, v in WATERBIRDS_GROUPS.items()}
    return NativeFixture("waterbirds", root, {"masks": str(seg), "captions": str(dir / "captions.csv")}, expected)


# -------------------------------------------------------------------------------------- Food-101
FOOD_CLASSES = ["apple_pie", "baby_back_ribs", "filet_mignon", "pork_chop", "prime_rib", "steak"]
FOOD_PER_CLASS = {"train": 10, "test": 4}


def make_food101_fixture(dir: str | Path, image_size: int = 16, seed: int = 0) -> NativeFixture:
    """Food-101 layout: ``food-101/images/<class>/<id>.jpg``, ``meta/{classes,train,test}.txt``; the five
    red-meat classes plus one other (``apple_pie``, which the index must leave out); and
    ``captions.jsonl`` ({"image", "caption"}) for the adapters."""
    dir = Path(dir)
    root = dir / "food-101"
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    caps = []
    for c_i, cls in enumerate(FOOD_CLASSES):
        colour = tuple(int(v) for v in rng.integers(40, 230, 3))
        for split, n in FOOD_PER_CLASS.items():
            for j in range(n):
                ident = f"{cls}/{100000 + 1000 * c_i + (j if split == 'train' else 500 + j)}"
                img, _ = _scene(rng, image_size, (200, 190, 170), colour)
                _save_jpeg(root / "images" / f"{ident}.jpg", img)
                lists[split].append(ident)
                caps.append({"image": f"food-101/images/{ident}.jpg", "caption": f"a plate of {cls.replace('_', ' ')}"})
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "classes.txt").write_text("\n".join(FOOD_CLASSES) + "\n")
    for split, ids in lists.items():
        (root / "meta" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (dir / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in caps))
    n_val = round(0.2 * FOOD_PER_CLASS["train"])
    red = [c for c in FOOD_CLASSES if c != "apple_pie"]
    expected = {"train": {c: FOOD_PER_CLASS["train"] - n_val for c in red}, "val": {c: n_val for c in red},
                "test": {c: FOOD_PER_CLASS["test"] for c in red}}
    return NativeFixture("food101", root, {"captions": str(dir / "captions.jsonl")}, expected)


# ------------------------------------------------------------------------------------------ COCO
def _coco_captions(kind: str, k: int) -> list[str]:
    """Five captions for an image whose true content is ``kind`` (man/woman/person/both/few/none)."""
    sets = {
        "man": ["A man riding a horse.", "A man on a brown horse", "The guy rides a horse.", "A horse in a field",
                "A rider on a horse."],
        "woman": ["A woman holding an umbrella.", "A lady with an umbrella", "She holds an umbrella in the rain.",
                  "An umbrella in the rain.", "Someone with an umbrella"],
        "person": ["A skier on a slope.", "A person skiing downhill", "Someone skiing fast.", "A snowy slope",
                   "A ski slope with trees"],
        "both": ["A man and a woman sitting on a bench.", "A man on a bench", "A guy on a bench", "A man sits",
                 "A bench in a park"],
        "few": ["A man with a dog.", "A dog on a leash", "A dog in a park", "A park", "A brown dog"],
        "none": ["A bowl of fruit.", "Apples and bananas", "Fruit on a table", "A wooden table", "Some fruit"],
    }
    return [f"{c} ({k})" if i == 3 else c for i, c in enumerate(sets[kind])]  # one caption varies per image


COCO_KINDS = {"train": ["man"] * 4 + ["woman"] * 3 + ["person"] * 2 + ["both", "few", "none"],
              "val": ["man"] * 6 + ["woman"] * 4 + ["person", "both"]}


def make_coco_fixture(dir: str | Path, image_size: int = 16, seed: int = 0) -> NativeFixture:
    """COCO 2014 layout: ``COCO/annotations/captions_{train,val}2014.json`` and ``COCO/{train,val}2014/``,
    with captions written so that GALS' rule gives known labels: train 4 man, 3 woman, 2 person (3 images
    dropped: man and woman in one caption, too few gendered captions, nobody); val2014 6 man, 4 woman,
    1 person, 1 dropped, so the balanced val and test get 2 man + 2 woman each."""
    dir = Path(dir)
    root = dir / "COCO"
    rng = np.random.default_rng(seed)
    image_id, ann_id = 1, 1
    for split, kinds in COCO_KINDS.items():
        images, anns = [], []
        for kind in kinds:
            name = f"COCO_{split}2014_{image_id:012d}.jpg"
            img, _ = _scene(rng, image_size, (120, 120, 120), (200, 60, 60) if kind == "woman" else (60, 60, 200))
            _save_jpeg(root / f"{split}2014" / name, img)
            images.append({"id": image_id, "file_name": name, "width": image_size, "height": image_size})
            for c in _coco_captions(kind, image_id):
                anns.append({"id": ann_id, "image_id": image_id, "caption": c})
                ann_id += 1
            image_id += 1
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{split}2014.json").write_text(
            json.dumps({"info": {}, "images": images, "annotations": anns}))
    expected = {"train": {"man": 4, "woman": 3, "person": 2}, "val": {"man": 2, "woman": 2, "person": 0},
                "test": {"man": 2, "woman": 2, "person": 0}}
    return NativeFixture("coco_gender", root, {}, expected)
