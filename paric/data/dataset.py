"""Reader for Waterbirds-format datasets (the real benchmark and the embedded synthetic one).

Why: every later stage (map precompute, training, evaluation) reads images through this one
class, so a broken row must be reported here, at construction time where possible, naming the
file, the row and what was expected, rather than surfacing as a shape error hours later.

Layout: ``root/metadata.csv`` with at least ``img_filename,y,place,split`` (split 0/1/2 or
train/val/test). Images live in ``root/<image_dir>/<img_filename>``, where ``image_dir`` comes
from ``dataset.json``, else ``images`` if that folder exists, else ``root`` itself (the real
Waterbirds layout). Optional masks: ``root/masks/<img_filename with .png>``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

REQUIRED_COLUMNS = ("img_filename", "y", "place", "split")
CAPTION_COLUMNS = ("img_filename", "caption")
SPLIT_NAMES = ("train", "val", "test")
_SPLIT_ALIASES = {"0": 0, "1": 1, "2": 2, "train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and row."""


def _where(row: int, path: Path) -> str:
    """Position of a data row: 1-based data row and the CSV line (the header is line 1)."""
    return f"row {row} (line {row + 1}) of {path}"


def load_image(path: str | Path, image_size: int | None = None) -> np.ndarray:
    """Decode an image as uint8 HxWx3 RGB, optionally resized (bilinear) to a square."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if image_size is not None and im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DatasetError(f"image file not found: {path}") from exc
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"cannot read image file {path}: {exc}") from exc


def load_mask(path: str | Path, image_size: int | None = None) -> np.ndarray:
    """Decode a mask as uint8 HxW in {0, 1} (pixels > 127 are foreground); nearest resize."""
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if image_size is not None and im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.NEAREST)
            return (np.asarray(im) > 127).astype(np.uint8)
    except FileNotFoundError as exc:
        raise DatasetError(f"mask file not found: {path}") from exc
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"cannot read mask file {path}: {exc}") from exc


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{path}: {path.name} not found (expected a {what} with columns {', '.join(required)})")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable CSV file: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    for col in required:
        if col not in df.columns:
            raise DatasetError(
                f"{path}: missing column '{col}'; required columns: {', '.join(required)} "
                f"(found: {', '.join(df.columns)})"
            )
    # Short rows leave NaN even with dtype=str; treat them as empty strings for the checks.
    return df.fillna("").reset_index(drop=True)


def _int_column(df: pd.DataFrame, col: str, path: Path, expected: str) -> np.ndarray:
    values = df[col].astype(str).str.strip()
    ok = values.str.fullmatch(r"[+-]?\d+")
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise DatasetError(f"'{col}' value '{df[col].iat[i]}' at {_where(i + 1, path)}: expected {expected}")
    return values.astype(np.int64).to_numpy()


def _check_range(vals: np.ndarray, col: str, n: int | None, path: Path, expected: str) -> None:
    bad = (vals < 0) if n is None else ((vals < 0) | (vals >= n))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        limit = "a non-negative integer" if n is None else f"an integer in 0..{n - 1}"
        raise DatasetError(f"'{col}' value {vals[i]} at {_where(i + 1, path)}: expected {expected}, {limit}")


def _non_empty(df: pd.DataFrame, col: str, path: Path) -> None:
    empty = df[col].astype(str).str.strip() == ""
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise DatasetError(f"empty '{col}' at {_where(i + 1, path)}")


def _read_info(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(info).__name__}")
    for key in ("classes", "places"):
        names = info.get(key)
        if names is not None and not (isinstance(names, list) and names and all(isinstance(x, str) for x in names)):
            raise DatasetError(f"{path}: '{key}' must be a non-empty list of names, got {names!r}")
    return info


def _check_files(paths: list[Path], rows: np.ndarray, meta: Path, what: str) -> None:
    missing = [(p, r) for p, r in zip(paths, rows) if not p.exists()]
    if missing:
        p, r = missing[0]
        more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise DatasetError(f"{what} not found: {p} (listed at {_where(int(r), meta)}){more}")


class WaterbirdsDataset:
    """One split (or all) of a Waterbirds-format dataset; items are numpy arrays.

    ``rows`` is a DataFrame with img_filename, y, place, split (0/1/2), group
    (= y * n_places + place), split_name, plus any extra metadata columns, indexed like the
    dataset (``rows.iloc[i]`` describes ``self[i]``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        image_size: int | None = None,
        with_masks: bool = True,
    ) -> None:
        self.root = Path(root)
        self.image_size = image_size
        if split is not None and split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES} or None, got {split!r}")
        self.split = split
        info = _read_info(self.root)
        self.metadata_path = self.root / "metadata.csv"
        df = _read_csv(self.metadata_path, REQUIRED_COLUMNS, "Waterbirds-format metadata file")
        path = self.metadata_path

        _non_empty(df, "img_filename", path)
        y = _int_column(df, "y", path, "an integer class index")
        place = _int_column(df, "place", path, "an integer place index")
        codes = df["split"].astype(str).str.strip().str.lower().map(_SPLIT_ALIASES)
        if codes.isna().any():
            i = int(np.flatnonzero(codes.isna().to_numpy())[0])
            raise DatasetError(
                f"'split' value '{df['split'].iat[i]}' at {_where(i + 1, path)}: expected 0/1/2 or train/val/test"
            )
        classes, places = info.get("classes"), info.get("places")
        _check_range(y, "y", len(classes) if classes else None, path, "a class index")
        _check_range(place, "place", len(places) if places else None, path, "a place index")
        self.classes: list[str] = list(classes) if classes else [f"class{i}" for i in range(int(y.max()) + 1)]
        self.places: list[str] = list(places) if places else [f"place{i}" for i in range(int(place.max()) + 1)]

        df["y"], df["place"], df["split"] = y, place, codes.astype(np.int64).to_numpy()
        df["group"] = df["y"] * len(self.places) + df["place"]
        df["split_name"] = [SPLIT_NAMES[s] for s in df["split"]]
        df["_row"] = np.arange(1, len(df) + 1)  # 1-based data row, for error messages
        if split is not None:
            df = df[df["split"] == SPLIT_NAMES.index(split)]
        df = df.reset_index(drop=True)
        extra = [c for c in df.columns if c not in (*REQUIRED_COLUMNS, "group", "split_name", "_row")]
        self.rows: pd.DataFrame = df[[*REQUIRED_COLUMNS, "group", "split_name", *extra]]
        self._data_rows = df["_row"].to_numpy()

        image_dir = info.get("image_dir")
        if image_dir is None:
            image_dir = "images" if (self.root / "images").is_dir() else ""
        self.image_dir = self.root / image_dir
        self._images = [self.image_dir / f for f in df["img_filename"]]
        _check_files(self._images, self._data_rows, path, "image file")

        self.mask_dir = self.root / info.get("mask_dir", "masks")
        self._masks: list[Path] | None = None
        if with_masks and self.mask_dir.is_dir():
            self._masks = [(self.mask_dir / f).with_suffix(".png") for f in df["img_filename"]]
            _check_files(self._masks, self._data_rows, path, "mask file")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_places(self) -> int:
        return len(self.places)

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_places

    @property
    def has_masks(self) -> bool:
        return self._masks is not None

    def image_path(self, i: int) -> Path:
        return self._images[i]

    def mask_path(self, i: int) -> Path:
        if self._masks is None:
            raise FileNotFoundError(f"{self.mask_dir}: this dataset has no object masks")
        return self._masks[i]

    def __len__(self) -> int:
        return len(self._images)

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        return i % n

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._index(int(i))
        r = self.rows.iloc[i]
        try:
            image = load_image(self._images[i], self.image_size)
            mask = load_mask(self._masks[i], self.image_size) if self._masks is not None else None
        except DatasetError as exc:
            raise DatasetError(f"{exc} (listed at {_where(int(self._data_rows[i]), self.metadata_path)})") from exc
        return {
            "image_id": str(r["img_filename"]),
            "image": image,
            "label": int(r["y"]),
            "place": int(r["place"]),
            "group": int(r["group"]),
            "split": str(r["split_name"]),
            "mask": mask,
        }

    def __repr__(self) -> str:
        return f"WaterbirdsDataset(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"


class CaptionCorpus:
    """The image-caption corpus (``captions.csv`` + ``captions/``) used for VLM pretraining."""

    def __init__(self, root: str | Path, image_size: int | None = None) -> None:
        self.root = Path(root)
        self.image_size = image_size
        info = _read_info(self.root)
        self.captions_path = self.root / "captions.csv"
        df = _read_csv(self.captions_path, CAPTION_COLUMNS, "caption file")
        _non_empty(df, "img_filename", self.captions_path)
        _non_empty(df, "caption", self.captions_path)
        self.rows: pd.DataFrame = df
        self.image_dir = self.root / info.get("caption_dir", "captions")
        self._images = [self.image_dir / f for f in df["img_filename"]]
        _check_files(self._images, np.arange(1, len(df) + 1), self.captions_path, "image file")

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a corpus of {n} images")
        i %= n
        try:
            image = load_image(self._images[i], self.image_size)
        except DatasetError as exc:
            raise DatasetError(f"{exc} (listed at {_where(i + 1, self.captions_path)})") from exc
        return image, str(self.rows["caption"].iat[i])

    def __repr__(self) -> str:
        return f"CaptionCorpus(root={str(self.root)!r}, n={len(self)})"
