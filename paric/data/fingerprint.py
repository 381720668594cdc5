"""A dataset's content fingerprint: the data part of every downstream cache key.

Why content and not paths: a stage's output is a function of the pixels, masks, labels and captions
it read, so replacing images under the same file names must recompute it, and moving or copying an
output directory must not. Hashing every file on every invocation would cost seconds on a large
dataset, so each file's hash is kept in a stat cache (``.fingerprint.json`` in the dataset root) and
reused while its size and modification time are unchanged; a copied tree rehashes once and gets the
same fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from paric.data.dataset import CaptionCorpus, WaterbirdsDataset
from paric.io import sha256_file, write_json

CACHE = ".fingerprint.json"
#: the dataset-level files whose content (not just their listings) the stages read
META_FILES = ("metadata.csv", "captions.csv")


def dataset_files(root: Path) -> dict[str, Path]:
    """Every file a stage reads, by a location-free name (``image/<img_filename>``, ``mask/…``,
    ``caption/…``, ``metadata.csv`` …)."""
    root = Path(root)
    files: dict[str, Path] = {name: root / name for name in META_FILES if (root / name).is_file()}
    data = WaterbirdsDataset(root, None, with_masks=True)
    for i, name in enumerate(data.rows["img_filename"]):
        files[f"image/{name}"] = data.image_path(i)
        if data.has_masks:
            files[f"mask/{name}"] = data.mask_path(i)
    if (root / "captions.csv").is_file():
        corpus = CaptionCorpus(root)
        for name, path in zip(corpus.rows["img_filename"], corpus._images):
            files[f"caption/{name}"] = path
    return files


def _info_digest(root: Path) -> str:
    """dataset.json without the index's ``source`` record (it holds the native root's path and mtimes)."""
    path = root / "dataset.json"
    if not path.is_file():
        return ""
    info = json.loads(path.read_text())
    info.pop("source", None)
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()


#: root -> fingerprint while a :func:`fixed_data` block is open (None: not pinned, compute each time)
_PINNED: dict[str, str] | None = None


@contextmanager
def fixed_data() -> Iterator[None]:
    """Within the block, fingerprint each dataset root once (1.5 s for the embedded default, asked
    for by five stages). For one invocation, whose data stage calls :func:`forget` after it writes."""
    global _PINNED
    outer, _PINNED = _PINNED, {}
    try:
        yield
    finally:
        _PINNED = outer


def forget(root: str | Path) -> None:
    """The data under ``root`` was (re)written: fingerprint it afresh."""
    if _PINNED is not None:
        _PINNED.pop(str(Path(root).resolve()), None)


def dataset_fingerprint(root: str | Path) -> str:
    """sha256 (16 hex) over the dataset's files, by name and content; see the module docstring."""
    root = Path(root)
    if _PINNED is not None:
        key = str(root.resolve())
        if key not in _PINNED:
            _PINNED[key] = _fingerprint(root)
        return _PINNED[key]
    return _fingerprint(root)


def _fingerprint(root: Path) -> str:
    cache_path = root / CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    fresh: dict[str, list] = {}
    h = hashlib.sha256(_info_digest(root).encode())
    for name, path in sorted(dataset_files(root).items()):
        st = os.stat(path)
        stat = [str(path.resolve()), st.st_size, st.st_mtime_ns]
        hit = cache.get(name)
        digest = hit[3] if isinstance(hit, list) and len(hit) == 4 and hit[:3] == stat else sha256_file(path)
        fresh[name] = [*stat, digest]
        h.update(f"{name}\0{digest}\n".encode())
    if fresh != cache:
        try:
            write_json(cache_path, fresh)
        except OSError:  # a read-only dataset: the fingerprint is still right, only slower next time
            pass
    return h.hexdigest()[:16]
