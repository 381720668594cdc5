"""Native dataset formats, checked and turned into the canonical index every stage reads.

Why an index and not a converted copy: the pipeline reads every dataset through
``WaterbirdsDataset(root)`` (``metadata.csv`` with ``img_filename,y,place,split`` and
``dataset.json``). For a real dataset, ``root`` is a small directory written here whose
``dataset.json`` points with absolute paths at the original images (and masks, caption images), so
nothing is copied and the native directory is never written to.

    build_index("food101", "/data/food-101", "outputs/food/data", seed=0)

The index directory holds ``metadata.csv``, ``dataset.json`` (classes, places, ``image_dir``,
optional ``mask_dir`` and ``caption_dir``, and ``source``: format, root, options and the size and
mtime of the native files it was built from), ``captions.csv`` when there is a caption source, and
``check.txt`` (the check report). It is written under a temporary name and renamed into place.
"""
from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from paric.data.formats import coco_gender, food101, waterbirds
from paric.data.formats.base import (
    SPLIT_NAMES,
    CheckReport,
    DatasetCheckError,
    DatasetFormat,
    ImageCheck,
    IndexTable,
    Listing,
    Problem,
    verify_images,
)

from paric.registry import Registry
from paric.io import atomic_dir

if TYPE_CHECKING:
    from paric.config import DataConfig

log = logging.getLogger("paric")

Scanner = Callable[..., "IndexTable | None"]
#: format name -> its entry (scanner, options, metrics); a new format is one module defining a
#: ``DatasetFormat`` and its line here
FORMATS: Registry[DatasetFormat] = Registry("dataset format")
FORMATS.add("waterbirds", waterbirds.FORMAT)
FORMATS.add("food101", food101.FORMAT)
FORMATS.add("coco_gender", coco_gender.FORMAT)

#: bumped when the index layout changes, so an index written by older code is rebuilt
INDEX_VERSION = 1
_PATH_OPTIONS = ("masks", "captions", "split_dir")

__all__ = [
    "FORMATS",
    "CheckReport",
    "DatasetCheckError",
    "DatasetFormat",
    "IndexTable",
    "Problem",
    "build_index",
    "check_source",
    "index_is_current",
    "options_for",
    "prepare_index",
]


def _scanner(fmt: str, opts: dict[str, Any]) -> Scanner:
    scan = FORMATS.get(fmt).scan
    allowed = [p for p in inspect.signature(scan).parameters if p not in ("src", "report")]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise TypeError(f"format '{fmt}' has no option(s) {unknown}: its options are {', '.join(allowed)}")
    return scan


def _unique(listings: list[Listing]) -> list[Listing]:
    seen: set[Path] = set()
    out = []
    for it in listings:
        if it.path not in seen:
            seen.add(it.path)
            out.append(it)
    return out


def check_source(fmt: str, src: str | Path, images: ImageCheck = "decode",
                 **opts: Any) -> tuple[CheckReport, IndexTable | None]:
    """Check a native dataset directory; the report lists every problem found (not just the first).

    Checks: the format's metadata files and columns, label, place and split values, duplicates,
    empty splits, every image (and mask, caption image) file: present and readable (``images``).
    Group counts per split are in ``report.counts``; a group with no image in a split is a warning.
    """
    scan = _scanner(fmt, opts)
    src = Path(src).expanduser().resolve()
    report = CheckReport(fmt, src)
    if not src.is_dir():
        report.add(src, "", f"dataset directory not found (data.root): expected the native {fmt} directory")
        return report, None
    table = scan(src, report, **opts)
    if table is None:
        return report, None
    report.n_images = len(table.frame)
    counts = table.group_counts()
    if table.countable:
        report.counts = counts
    for s in SPLIT_NAMES if table.countable else ():
        where = table.split_files.get(s, src)
        if counts.loc[s].sum() == 0:
            report.add(where, "", f"split '{s}' has no images: expected images in each of train, val and test")
            continue
        for g in counts.columns[counts.loc[s] == 0]:
            if s == "train" or table.eval_classes is None or g.split("/")[0] in table.eval_classes:
                report.warn(where, "", f"group '{g}' has no images in split '{s}'")
    if table.captions is not None and len(table.captions) == 0:
        report.add(table.sources[-1], "", "the caption source has no captions: expected image-caption pairs")
    verify_images(_unique(table.listings), report, images)
    return report, table


def _fingerprint(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _normalise(opts: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in sorted(opts.items()):
        if k in _PATH_OPTIONS and v is not None:
            v = str(Path(v).expanduser().resolve())
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out


def _record(fmt: str, src: Path, opts: dict[str, Any], files: list[Path]) -> dict[str, Any]:
    return {"format": fmt, "root": str(src), "options": _normalise(opts), "index_version": INDEX_VERSION,
            "files": {str(p): _fingerprint(p) for p in files}}


def _read_index_info(out: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((out / "dataset.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def index_is_current(fmt: str, src: str | Path, out: str | Path, **opts: Any) -> bool:
    """Whether ``out`` holds an index of this source, with these options, built from native files
    that have not changed since (size and mtime of each; images themselves are not re-read)."""
    info = _read_index_info(Path(out))
    if info is None or not (Path(out) / "metadata.csv").is_file():
        return False
    old = info.get("source")
    if not isinstance(old, dict) or not isinstance(old.get("files"), dict):
        return False
    src = Path(src).expanduser().resolve()
    now = _record(fmt, src, opts, [Path(p) for p in old["files"]])
    return now == old


def _write_table(tmp: Path, table: IndexTable, record: dict[str, Any], report: CheckReport) -> None:
    frame = table.frame.copy()
    frame["split"] = [SPLIT_NAMES[int(s)] for s in frame["split"]]
    first = ["img_filename", "y", "place", "split"]
    frame[first + [c for c in frame.columns if c not in first]].to_csv(tmp / "metadata.csv", index=False)
    info: dict[str, Any] = {"format": "waterbirds", "classes": table.classes, "places": table.places,
                            "image_dir": str(table.image_dir)}
    if table.mask_dir is not None:
        info["mask_dir"] = str(table.mask_dir)
    if table.captions is not None and table.caption_dir is not None:
        table.captions[["img_filename", "caption"]].to_csv(tmp / "captions.csv", index=False)
        info["caption_dir"] = str(table.caption_dir)
    info["counts"] = {s: {g: int(n) for g, n in row.items()} for s, row in table.group_counts().iterrows()}
    info["notes"] = table.notes
    info["source"] = record
    (tmp / "check.txt").write_text(report.render() + "\n")
    (tmp / "dataset.json").write_text(json.dumps(info, indent=2, default=str))


def _is_index(out: Path) -> bool:
    info = _read_index_info(out)
    return info is not None and isinstance(info.get("source"), dict)


def build_index(fmt: str, src: str | Path, out: str | Path, images: ImageCheck = "decode", **opts: Any) -> Path:
    """Check the native dataset ``src`` and write its canonical index to ``out`` (returned).

    Raises :class:`DatasetCheckError`, whose message is the full check report, when the check finds
    any problem; ``out`` is then left as it was. An existing ``out`` is replaced only if it is an
    index written here (never a directory of the user's).
    """
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    report, table = check_source(fmt, src, images, **opts)
    if not report.ok or table is None:
        raise DatasetCheckError(report)
    if out.exists() and not (out.is_dir() and (_is_index(out) or not any(out.iterdir()))):
        raise FileExistsError(f"{out} exists and is not a dataset index written by paric (no dataset.json with "
                              "'source'); delete it or change run.output_dir. It is never deleted automatically.")
    with atomic_dir(out) as tmp:
        _write_table(tmp, table, _record(fmt, src, opts, table.sources), report)
    log.info("dataset index of %s (%s): %d images -> %s", src, fmt, len(table.frame), out)
    return out


def options_for(data: "DataConfig") -> dict[str, Any]:
    """The format options that the ``data`` config section sets (keyword arguments of ``build_index``)."""
    if not data.generated and not data.root:
        raise ValueError(f"data.root: format '{data.format}' needs the native dataset directory")
    if data.masks is not None and data.format != "waterbirds":
        raise ValueError(f"data.masks is for the waterbirds format only (data.format is '{data.format}')")
    if data.format not in FORMATS:
        raise ValueError(f"data.format '{data.format}' is not a native format ({', '.join(FORMATS)})")
    return FORMATS.get(data.format).scan_options(data)


def prepare_index(data: "DataConfig", out: str | Path, force: bool = False) -> bool:
    """The data stage for native formats: reuse ``out`` when it indexes the same unchanged source
    with the same options (returns True), else check and rebuild it (returns False; raises
    :class:`DatasetCheckError` with the full report when the check fails)."""
    opts = options_for(data)
    assert data.root is not None  # options_for checked it
    if not force and index_is_current(data.format, data.root, out, **opts):
        return True
    build_index(data.format, data.root, out, images=data.check_images, **opts)
    return False


def dataset_metrics(fmt: str, y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, float]:
    """The metrics a dataset's paper table reports beyond the group accuracies, as flat floats: the
    format's own ``metrics`` (``FORMATS``); {} for the embedded benchmark. ``y_pred`` are class indices."""
    from paric.eval.fairness import _same_shape

    if fmt not in FORMATS:
        _same_shape(y_true, y_pred)
        return {}
    return FORMATS.get(fmt).metrics(y_true, y_pred, classes)
