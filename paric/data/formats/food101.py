"""Food-101 restricted to GALS' "red meat" subset.

Native layout (the ETH Zürich download, ``food-101/``)::

    images/<class>/<id>.jpg
    meta/train.txt, meta/test.txt    one "<class>/<id>" per line (750 / 250 per class)
    meta/classes.txt                 optional: all 101 class names (then checked against)

Classes (GALS configs/food_*.yaml): prime_rib, pork_chop, steak, baby_back_ribs, filet_mignon,
indexed in sorted order as GALS does (baby_back_ribs=0, filet_mignon=1, pork_chop=2, prime_rib=3,
steak=4). One place, so a group is a class and worst-group accuracy is worst-class accuracy.

Splits: test = Food-101's ``test.txt`` (250 per class; GALS' worst-class numbers are multiples of
1/250). GALS carved its val set from ``train.txt`` but did not publish the rule, so this one is
ours: for each class separately, its train ids are sorted, permuted by
``numpy.random.default_rng(zlib.crc32(f"{seed}/{class}"))``, and the first
``round(val_fraction * n)`` (at least 1) become val, the rest train. A class's split therefore does
not depend on which other classes are selected, and the same seed always gives the same split.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from paric.data.formats.base import CheckReport, DatasetFormat, IndexTable, Listing
from paric.data.formats.captions import attach_captions
from paric.eval.fairness import class_metrics

if TYPE_CHECKING:
    from paric.config import DataConfig

RED_MEAT = ["prime_rib", "pork_chop", "steak", "baby_back_ribs", "filet_mignon"]
PLACES = ["all"]
_LINE = re.compile(r"([A-Za-z0-9_\-]+)/([^/\s]+)")


def native_root(src: Path) -> Path:
    """Accept the folder the archive unpacks into (``food-101/``) or its parent."""
    if not (src / "meta").is_dir() and (src / "food-101" / "meta").is_dir():
        return src / "food-101"
    return src


def val_split(ids: list[str], cls: str, val_fraction: float, seed: int) -> set[str]:
    """The ids of one class's train list that go to val (rule in the module docstring)."""
    ordered = sorted(ids)
    n_val = max(1, int(round(val_fraction * len(ordered)))) if len(ordered) > 1 else 0
    perm = np.random.default_rng(zlib.crc32(f"{seed}/{cls}".encode())).permutation(len(ordered))
    return {ordered[i] for i in perm[:n_val]}


def _read_list(path: Path, wanted: set[str], known: set[str] | None, report: CheckReport,
               seen: dict[str, tuple[Path, int]]) -> list[tuple[str, str, int]]:
    """(class, id, line) of the wanted classes in one meta list; every malformed line is a problem."""
    if not path.is_file():
        report.add(path, "", "file not found: expected Food-101's list of '<class>/<image id>' lines")
        return []
    out = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            report.add(path, f"line {n}", f"'{line}': expected '<class>/<image id>' (e.g. steak/1000205)")
            continue
        cls, _ = m.groups()
        if known is not None and cls not in known:
            report.add(path, f"line {n}", f"class '{cls}' is outside the class list in meta/classes.txt")
            continue
        if line in seen:
            p, k = seen[line]
            report.add(path, f"line {n}", f"'{line}' is listed twice (first at {p.name} line {k}): "
                       "expected each image in one split once")
            continue
        seen[line] = (path, n)
        if cls in wanted:
            out.append((cls, line, n))
    return out


def scan(src: Path, report: CheckReport, classes: list[str] | None = None, val_fraction: float = 0.2,
         seed: int = 0, captions: str | Path | None = None) -> IndexTable | None:
    """Read and check the meta lists of the selected classes; images are listed for verification."""
    root = native_root(src)
    meta = root / "meta"
    chosen = sorted(classes or RED_MEAT)
    if len(set(chosen)) != len(chosen):
        report.add(root, "", f"data.classes has duplicates: {chosen}")
    known = None
    classes_txt = meta / "classes.txt"
    if classes_txt.is_file():
        known = {ln.strip() for ln in classes_txt.read_text(encoding="utf-8").splitlines() if ln.strip()}
        for c in chosen:
            if c not in known:
                report.add(classes_txt, "", f"class '{c}' (data.classes) is not a Food-101 class: expected one of "
                           "the names in this file")
    if not 0.0 < val_fraction < 1.0:
        report.add(root, "", f"val_fraction={val_fraction}: expected a fraction in (0, 1)")
    seen: dict[str, tuple[Path, int]] = {}
    wanted = set(chosen)
    train = _read_list(meta / "train.txt", wanted, known, report, seen)
    test = _read_list(meta / "test.txt", wanted, known, report, seen)

    rows = []
    listings = []
    for split_code, entries, path in ((0, train, meta / "train.txt"), (2, test, meta / "test.txt")):
        by_class: dict[str, list[str]] = {c: [] for c in chosen}
        for cls, ident, n in entries:
            by_class[cls].append(ident)
            listings.append(Listing(root / "images" / f"{ident}.jpg", path, f"line {n}"))
        for c in chosen:
            if path.is_file() and not by_class[c]:
                report.add(path, "", f"class '{c}' has no images in this list: expected '{c}/<id>' lines")
            val = val_split(by_class[c], c, val_fraction, seed) if split_code == 0 else set()
            for ident in sorted(by_class[c]):
                rows.append((f"{ident}.jpg", chosen.index(c), 0, 1 if ident in val else split_code, ident))
    frame = pd.DataFrame(rows, columns=["img_filename", "y", "place", "split", "food_id"])
    table = IndexTable(frame=frame, classes=chosen, places=list(PLACES), image_dir=(root / "images").resolve(),
                       listings=listings, sources=[meta / "train.txt", meta / "test.txt"],
                       split_files={"train": meta / "train.txt", "val": meta / "train.txt", "test": meta / "test.txt"},
                       notes={"val_rule": f"per class: sorted train ids permuted by default_rng(crc32('{seed}/<class>')), "
                                          f"first round({val_fraction} * n) to val"})
    if known is not None:
        table.sources.append(classes_txt)
    if captions is not None:
        attach_captions(table, captions, report)
    return table


def options(data: "DataConfig") -> dict[str, Any]:
    """The class subset, the held-out share of train and its seed (``data.classes``, ``val_fraction``, ``seed``)."""
    return {"classes": data.classes, "val_fraction": data.val_fraction, "seed": data.seed}


#: GALS' red-meat table reports per-class and worst-class accuracy
FORMAT = DatasetFormat(scan, options, class_metrics)
