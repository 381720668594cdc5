"""Image-caption sources for the ProbVLM adapters, read into the canonical ``captions.csv``.

Why: no adapter checkpoints are published (METHODS.md §2), so the user trains them on whatever
image-caption pairs they have. Three source formats are accepted:

- ``.csv`` with columns ``image,caption``;
- ``.jsonl``, one object ``{"image": ..., "caption": ...}`` per line;
- ``.json`` in COCO captions style (``images`` with ``id, file_name``; ``annotations`` with
  ``image_id, caption``), named ``captions_<folder>.json`` inside ``<coco>/annotations/``: its
  images are ``<coco>/<folder>/<file_name>`` (the layout COCO's downloads unpack to).

Relative image paths in CSV/JSONL are relative to the source file's folder; absolute ones stay as
they are. The result is ``img_filename`` relative to ``caption_dir`` (absolute), one row per caption.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from paric.data.formats.base import CheckReport, IndexTable, Listing, read_csv_lenient, require_columns, row_where

CAPTION_SOURCE_SUFFIXES = (".csv", ".jsonl", ".json")


class Captions:
    """Captions read from one source: the table, its image folder, and where each image is listed."""

    def __init__(self, frame: pd.DataFrame, caption_dir: Path, listings: list[Listing], source: Path) -> None:
        self.frame = frame
        self.caption_dir = caption_dir
        self.listings = listings
        self.source = source


def captions_from_rows(rows: list[tuple[str, str, str]], base: Path, source: Path) -> Captions:
    """rows: (image path as written, caption, where) -> Captions with one listing per distinct image."""
    frame = pd.DataFrame({"img_filename": [r[0] for r in rows], "caption": [r[1] for r in rows]})
    seen: dict[str, Listing] = {}
    for image, _, where in rows:
        if image not in seen:
            seen[image] = Listing(base / image, source, where, "caption image")
    return Captions(frame, base, list(seen.values()), source)


def read_caption_csv(path: Path, report: CheckReport) -> Captions | None:
    df = read_csv_lenient(path, report, "an image-caption CSV with columns image, caption")
    if df is None or require_columns(df, path, ("image", "caption"), report):
        return None
    rows = []
    for i, (image, caption) in enumerate(zip(df["image"].str.strip(), df["caption"].str.strip()), start=1):
        bad = [c for c, v in (("image", image), ("caption", caption)) if not v]
        for c in bad:
            report.add(path, row_where(i), f"empty '{c}': expected an image path and a non-empty caption")
        if not bad:
            rows.append((image, caption, row_where(i)))
    return captions_from_rows(rows, path.parent.resolve(), path)


def read_caption_jsonl(path: Path, report: CheckReport) -> Captions | None:
    if not path.is_file():
        report.add(path, "", "file not found (expected JSON lines {\"image\": ..., \"caption\": ...})")
        return None
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"line {n}"
            try:
                obj = json.loads(line)
            except ValueError as exc:
                report.add(path, where, f"not valid JSON ({exc}); expected {{\"image\": ..., \"caption\": ...}}")
                continue
            if not isinstance(obj, dict):
                report.add(path, where, f"expected a JSON object with keys image, caption, got {type(obj).__name__}")
                continue
            ok = True
            for key in ("image", "caption"):
                v = obj.get(key)
                if not isinstance(v, str) or not v.strip():
                    report.add(path, where, f"key '{key}' missing or empty: expected a non-empty string")
                    ok = False
            if ok:
                rows.append((obj["image"].strip(), obj["caption"].strip(), where))
    return captions_from_rows(rows, path.parent.resolve(), path)


def load_json_object(path: Path, report: CheckReport, what: str) -> dict | None:
    """A JSON file whose top level is an object (None, with a problem recorded, otherwise)."""
    if not path.is_file():
        report.add(path, "", f"file not found (expected {what})")
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        report.add(path, "", f"not valid JSON ({exc}); expected {what}")
        return None
    if not isinstance(obj, dict):
        report.add(path, "", f"top level is a {type(obj).__name__}; expected {what} (a JSON object)")
        return None
    return obj


def _entries(obj: dict, key: str, keys: tuple[str, ...], path: Path, report: CheckReport):
    """Yield (location, entry) for the well-formed objects of list ``obj[key]``, recording the rest."""
    expected = ", ".join(keys)
    for i, e in enumerate(obj.get(key) or []):
        where = f"{key}[{i}]"
        if not isinstance(e, dict):
            report.add(path, where, f"expected an object with keys {expected}")
            continue
        missing = [k for k in keys if k not in e]
        for k in missing:
            report.add(path, where, f"missing key '{k}': expected keys {expected}")
        if not missing:
            yield where, e


def coco_entries(obj: dict, path: Path, report: CheckReport) -> tuple[dict[int, str], dict[int, list[str]]]:
    """COCO captions JSON -> ({image id: file_name}, {image id: [captions]}), recording every bad entry."""
    files: dict[int, str] = {}
    caps: dict[int, list[str]] = {}
    for key in ("images", "annotations"):
        if not isinstance(obj.get(key), list):
            report.add(path, "top level", f"missing list '{key}': expected COCO captions JSON "
                       "(images: [{id, file_name}], annotations: [{image_id, caption}])")
    for where, e in _entries(obj, "images", ("id", "file_name"), path, report):
        if e["id"] in files:
            report.add(path, where, f"duplicate image id {e['id']}: expected each image listed once")
            continue
        files[e["id"]] = str(e["file_name"])
        caps[e["id"]] = []
    for where, e in _entries(obj, "annotations", ("image_id", "caption"), path, report):
        if e["image_id"] not in caps:
            report.add(path, where, f"image_id {e['image_id']} is not in 'images': expected the id of a listed image")
            continue
        caps[e["image_id"]].append(str(e["caption"]))
    return files, caps


def coco_image_folder(path: Path) -> str | None:
    """``.../annotations/captions_train2014.json`` -> ``train2014``."""
    m = re.fullmatch(r"captions_(\w+)\.json", path.name)
    return m.group(1) if m else None


def read_caption_coco(path: Path, report: CheckReport) -> Captions | None:
    folder = coco_image_folder(path)
    if folder is None:
        report.add(path, "", "a COCO captions file must be named captions_<image folder>.json "
                   "(e.g. captions_train2014.json), so that its images can be found")
        return None
    obj = load_json_object(path, report, "COCO captions JSON")
    if obj is None:
        return None
    files, caps = coco_entries(obj, path, report)
    rows = []
    index = {image_id: i for i, image_id in enumerate(files)}
    for image_id, name in files.items():
        for c in caps[image_id]:
            rows.append((f"{folder}/{name}", c.strip(), f"images[{index[image_id]}]"))
    return captions_from_rows(rows, path.parent.parent.resolve(), path)


def read_caption_source(path: str | Path, report: CheckReport) -> Captions | None:
    """Any supported caption source, by suffix; problems go to ``report``."""
    path = Path(path).expanduser().resolve()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_caption_csv(path, report)
    if suffix == ".jsonl":
        return read_caption_jsonl(path, report)
    if suffix == ".json":
        return read_caption_coco(path, report)
    report.add(path, "", f"unknown caption source type '{suffix}': expected one of {', '.join(CAPTION_SOURCE_SUFFIXES)}")
    return None


def attach_captions(table: IndexTable, source: str | Path, report: CheckReport) -> None:
    """Read a caption source into ``table`` (its images are then checked with the dataset's)."""
    path = Path(source).expanduser().resolve()
    table.sources.append(path)
    cap = read_caption_source(path, report)
    if cap is not None:
        table.captions, table.caption_dir = cap.frame, cap.caption_dir
        table.listings += cap.listings
