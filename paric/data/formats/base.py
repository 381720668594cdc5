"""What every native-format reader produces: a list of problems, and the canonical index table.

Why one shape for all formats: the check CLI, the index writer and the data stage treat every
format alike, so a format module only has to say how its native files map onto
``img_filename, y, place, split`` (plus where each image was listed, for error messages), and
every problem it finds is collected instead of raised, so one run reports all of them.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Sequence

import numpy as np

import pandas as pd
from PIL import Image, UnidentifiedImageError

from paric.data.dataset import DatasetError

if TYPE_CHECKING:
    from paric.config import DataConfig

SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {"0": 0, "1": 1, "2": 2, "train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
#: how images are checked: decode every pixel, read the header only, or only test existence
ImageCheck = Literal["decode", "open", "exists"]


def row_where(row: int) -> str:
    """A CSV data row (1-based) and its line (the header is line 1), as the reader names it."""
    return f"row {row} (line {row + 1})"


@dataclass(frozen=True)
class Problem:
    """One defect: the file it is in, where in that file (row, line, JSON entry), and what was expected."""

    file: Path
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}" if self.where else f"{self.file}: {self.message}"


@dataclass
class Listing:
    """An image the index refers to, and where the native dataset lists it (for messages)."""

    path: Path
    file: Path
    where: str
    kind: str = "image"
    same_size_as: Path | None = None  # a mask: the image it must match pixel for pixel


@dataclass
class IndexTable:
    """A native dataset mapped onto the canonical Waterbirds layout (see paric.data.dataset).

    ``frame`` holds ``img_filename`` (relative to ``image_dir``), ``y``, ``place``, ``split`` (0/1/2)
    and any extra columns; ``captions`` (``img_filename`` relative to ``caption_dir``, ``caption``)
    feeds the adapters. ``sources`` are the native files whose change invalidates the index;
    ``split_files`` the file that lists each split (named in split-level messages); ``eval_classes``
    the classes val and test are meant to hold (None: all; COCO's balanced eval has no 'person').
    """

    frame: pd.DataFrame
    classes: list[str]
    places: list[str]
    image_dir: Path
    mask_dir: Path | None = None
    captions: pd.DataFrame | None = None
    caption_dir: Path | None = None
    listings: list[Listing] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    split_files: dict[str, Path] = field(default_factory=dict)
    eval_classes: list[str] | None = None
    #: False when label/place/split columns are missing: split and group counts would only repeat that
    countable: bool = True
    notes: dict[str, Any] = field(default_factory=dict)

    def group_counts(self) -> pd.DataFrame:
        """Images per split (rows) and group ``class/place`` (columns), zeros included."""
        names = [f"{c}/{p}" if len(self.places) > 1 else c for c in self.classes for p in self.places]
        counts = pd.DataFrame(0, index=list(SPLIT_NAMES), columns=names)
        if len(self.frame):
            g = self.frame["y"].to_numpy() * len(self.places) + self.frame["place"].to_numpy()
            for s, gi in zip(self.frame["split"].to_numpy(), g):
                counts.iat[int(s), int(gi)] += 1
        return counts


@dataclass
class CheckReport:
    """Everything a check found; ``ok`` when there is no problem (warnings do not fail a check)."""

    format: str
    source: Path
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    counts: pd.DataFrame | None = None
    n_images: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: Path, where: str, message: str) -> None:
        self.problems.append(Problem(Path(file), where, message))

    def warn(self, file: Path, where: str, message: str) -> None:
        self.warnings.append(Problem(Path(file), where, message))

    def render(self) -> str:
        """The human report: counts per split and group, then every warning and problem."""
        lines = [f"{self.format} dataset at {self.source}: {self.n_images} images listed"]
        if self.counts is not None:
            lines.append("images per split and group:")
            table = self.counts.copy()
            table["total"] = table.sum(axis=1)
            lines += ["  " + row for row in table.to_string().splitlines()]
        for w in self.warnings:
            lines.append(f"warning: {w}")
        for p in self.problems:
            lines.append(f"problem: {p}")
        n = len(self.problems)
        lines.append("OK: no problems found" if n == 0 else f"FAILED: {n} problem{'s' * (n != 1)} found")
        return "\n".join(lines)


class DatasetCheckError(DatasetError):
    """A native dataset failed its check; the message is the whole report (every problem)."""

    def __init__(self, report: CheckReport) -> None:
        super().__init__(report.render())
        self.report = report


def read_csv_lenient(path: Path, report: CheckReport, what: str) -> pd.DataFrame | None:
    """A CSV as strings (None, with a problem recorded, when it is missing or unreadable)."""
    if not path.is_file():
        report.add(path, "", f"file not found (expected {what})")
        return None
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        report.add(path, "", f"not a readable CSV file ({exc}); expected {what}")
        return None
    df.columns = [str(c).strip() for c in df.columns]
    return df.fillna("").reset_index(drop=True)


def require_columns(df: pd.DataFrame, path: Path, required: Iterable[str], report: CheckReport) -> list[str]:
    """Record a problem per missing column; return the missing ones."""
    required = list(required)
    missing = [c for c in required if c not in df.columns]
    for c in missing:
        report.add(path, "header (line 1)", f"missing column '{c}': expected columns {', '.join(required)} "
                   f"(found: {', '.join(map(str, df.columns)) or 'none'})")
    return missing


def _check_one(item: Listing, mode: ImageCheck) -> str | None:
    """None when the file is fine, else what is wrong with it."""
    if not item.path.is_file():
        return f"{item.kind} file not found: {item.path}"
    if mode == "exists":
        return None
    try:
        with Image.open(item.path) as im:
            size = im.size  # from the header, before any draft scaling
            if mode == "open":
                im.verify()
            else:
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))  # DCT scaling: still reads every byte
                im.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        return f"{item.kind} file cannot be decoded: {item.path} ({exc}); expected a readable image"
    if item.same_size_as is not None and item.same_size_as.is_file():
        try:
            with Image.open(item.same_size_as) as ref:
                want = ref.size  # from the header: no decoding
        except (OSError, UnidentifiedImageError):
            return None  # the image's own listing reports it
        if size != want:
            return (f"{item.kind} {item.path} is {size[0]}×{size[1]} but its image {item.same_size_as} is "
                    f"{want[0]}×{want[1]}; expected the same size")
    return None


def verify_images(items: list[Listing], report: CheckReport, mode: ImageCheck = "decode",
                  workers: int | None = None) -> None:
    """Check every listed file (threads: PIL decoding releases the GIL) and record each failure
    against the file and row that lists it."""
    if not items:
        return
    workers = workers or min(16, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda it: _check_one(it, mode), items, chunksize=64))
    for item, err in zip(items, results):
        if err is not None:
            report.add(item.file, item.where, err)


def no_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """A format whose paper reports only the group accuracies (paric.eval.groups has them)."""
    return {}


def no_options(data: "DataConfig") -> dict[str, Any]:
    """A format without keys of its own in the data section (``data.options`` still reaches it)."""
    return {}


@dataclass(frozen=True)
class DatasetFormat:
    """A native dataset format: one module's entry in ``FORMATS``.

    ``scan(src, report, **options)`` reads and checks the native layout into an :class:`IndexTable`;
    ``options(data)`` picks the keys of its own from the config's data section; ``metrics(y, pred,
    classes)`` adds what the dataset's paper reports beyond the group accuracies.
    """

    scan: Callable[..., "IndexTable | None"]
    options: Callable[["DataConfig"], dict[str, Any]] = no_options
    metrics: Callable[[np.ndarray, np.ndarray, Sequence[str]], dict[str, float]] = no_metrics

    def scan_options(self, data: "DataConfig") -> dict[str, Any]:
        """The keyword options of ``scan``: its own keys, the caption source, then ``data.options``
        (checked against ``scan``'s signature by the caller)."""
        return {**self.options(data), "captions": data.captions, **data.options}
