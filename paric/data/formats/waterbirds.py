"""Waterbirds in the WILDS / group-DRO layout (Sagawa & Koh et al.), as GALS uses it.

Native layout (e.g. ``waterbird_complete95_forest2water2/``)::

    metadata.csv    img_id,img_filename,y,split,place,place_filename   (extra columns kept)
    001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg   (images under the root)

``y``: 0 landbird, 1 waterbird; ``place``: 0 land, 1 water; ``split``: 0/1/2 (train/val/test; the
names are accepted too). Groups are (y, place). Optional object masks: the CUB-200-2011
``segmentations/`` folder, which mirrors the image paths with ``.png`` (``data.masks``); GALS reads
them from ``CUB_200_2011/segmentations``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from paric.data.formats.base import (
    DatasetFormat,
    SPLIT_ALIASES,
    CheckReport,
    IndexTable,
    Listing,
    read_csv_lenient,
    require_columns,
    row_where,
)
from paric.data.formats.captions import attach_captions

if TYPE_CHECKING:
    from paric.config import DataConfig

CLASSES = ["landbird", "waterbird"]
PLACES = ["land", "water"]
REQUIRED = ("img_filename", "y", "place", "split")


def _index_column(df: pd.DataFrame, col: str, names: list[str], path: Path, report: CheckReport) -> np.ndarray:
    """Integer column with values in 0..len(names)-1; -1 (and a problem) where a row is wrong."""
    out = np.full(len(df), -1, dtype=np.int64)
    allowed = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    for i, v in enumerate(df[col].astype(str).str.strip()):
        if v.lstrip("+-").isdigit() and 0 <= int(v) < len(names):
            out[i] = int(v)
        else:
            report.add(path, row_where(i + 1), f"'{col}' value '{v}' is outside the class list: expected one of {allowed}"
                       if col == "y" else f"'{col}' value '{v}': expected one of {allowed}")
    return out


def scan(src: Path, report: CheckReport, masks: str | Path | None = None,
         captions: str | Path | None = None) -> IndexTable | None:
    """Read and check ``src/metadata.csv``; images (and masks) are listed for the caller to verify."""
    meta = src / "metadata.csv"
    df = read_csv_lenient(meta, report, "the WILDS/group-DRO Waterbirds metadata.csv with columns "
                          "img_filename, y, place, split")
    if df is None:
        return None
    missing = require_columns(df, meta, REQUIRED, report)
    ok = np.ones(len(df), dtype=bool)
    n = len(df)
    names = df["img_filename"].astype(str).str.strip() if "img_filename" in df else pd.Series([""] * n)
    if "img_filename" not in missing:
        first: dict[str, int] = {}
        for i, f in enumerate(names, start=1):
            if not f:
                report.add(meta, row_where(i), "empty 'img_filename': expected an image path relative to "
                           f"{src}")
                ok[i - 1] = False
            elif f in first:
                report.add(meta, row_where(i), f"duplicate img_filename '{f}' (first at {row_where(first[f])}): "
                           "expected each image once")
                ok[i - 1] = False
            else:
                first[f] = i
    y = _index_column(df, "y", CLASSES, meta, report) if "y" not in missing else np.full(n, -1)
    place = _index_column(df, "place", PLACES, meta, report) if "place" not in missing else np.full(n, -1)
    split = np.full(n, -1, dtype=np.int64)
    if "split" not in missing:
        for i, v in enumerate(df["split"].astype(str).str.strip()):
            code = SPLIT_ALIASES.get(v.lower())
            if code is None:
                report.add(meta, row_where(i + 1), f"unknown 'split' value '{v}': expected 0/1/2 or train/val/test")
            else:
                split[i] = code
    ok &= (y >= 0) & (place >= 0) & (split >= 0)

    mask_dir = None
    if masks is not None:
        mask_dir = Path(masks).expanduser().resolve()
        if not mask_dir.is_dir():
            report.add(mask_dir, "", "masks folder not found (data.masks): expected the CUB segmentations folder "
                       "with one <img_filename>.png per image")
            mask_dir = None

    listings = []
    if "img_filename" not in missing:
        for i, f in enumerate(names, start=1):
            if f:
                listings.append(Listing(src / f, meta, row_where(i)))
                if mask_dir is not None:
                    listings.append(Listing((mask_dir / f).with_suffix(".png"), meta, row_where(i), "mask",
                                            same_size_as=src / f))
    frame = df[ok].copy()
    frame["img_filename"] = names[ok]
    frame["y"], frame["place"], frame["split"] = y[ok], place[ok], split[ok]
    table = IndexTable(frame=frame.reset_index(drop=True), classes=list(CLASSES), places=list(PLACES),
                       image_dir=src, mask_dir=mask_dir, listings=listings, sources=[meta],
                       split_files={"train": meta, "val": meta, "test": meta},
                       countable=not set(missing) & {"y", "place", "split"})
    if captions is not None:
        attach_captions(table, captions, report)
    return table


def options(data: "DataConfig") -> dict[str, Any]:
    """The CUB segmentations folder (``data.masks``)."""
    return {"masks": data.masks}


#: mean and worst-group accuracy are its paper's numbers (paric.eval.groups): no metrics of its own
FORMAT = DatasetFormat(scan, options)
