"""Parquet store for per-image reference attention maps.

A split's store is a directory ``maps/<split>/`` holding ``part-<shard:05d>.parquet``
files (one shard of images each; the unit of resume) and a ``_SUCCESS.json``
manifest written last. Maps are float16 and use Arrow's canonical
``arrow.fixed_shape_tensor`` extension type, so pyarrow, pandas, DuckDB and Polars
can read the files without Ray or this package. Provenance (VLM, checkpoints,
prompts, K, seed, ...) travels inside every part as JSON under the schema metadata
key ``paric``; its ``hash`` entry keys resume decisions.

Temp files start with "." and the manifest with "_", which pyarrow/pandas dataset
readers skip, so ``pq.read_table(store_dir)`` only ever sees finished parts.

Deliberately plain pyarrow: no Ray imports, so evaluation code and notebooks can use
the maps without a cluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from paric.io import atomic_path, sha256_file

__all__ = [
    "METADATA_KEY",
    "SUCCESS_NAME",
    "MAP_COLUMNS",
    "MapStore",
    "IncompleteStoreError",
    "map_schema",
    "build_table",
    "write_part",
    "part_path",
    "list_parts",
    "finished_parts",
    "mark_complete",
    "is_complete",
    "read_store",
    "read_provenance",
    "provenance_hash",
]

log = logging.getLogger(__name__)

METADATA_KEY = b"paric"
SUCCESS_NAME = "_SUCCESS.json"
COMPRESSION = "zstd"

#: every map column starts with this; a column's shape is (h, w) per image, or (K, h, w) for samples.
#: Which map columns a store holds is up to its map sources (paric/attention/sources.py): the store
#: checks shapes and finiteness, not names.
MAP_PREFIX = "map_"
#: the columns of the default sources (gals + paric), in their schema order
MAP_COLUMNS: tuple[str, ...] = ("map_det", "map_samples", "map_mean", "map_median", "map_std")
_ID_COLUMNS: tuple[str, ...] = ("image_id", "split", "label", "group", "place")
_PART_RE = re.compile(r"^part-(\d+)\.parquet$")


class IncompleteStoreError(RuntimeError):
    """The store directory exists but was not finished (no valid ``_SUCCESS.json``)."""


# --------------------------------------------------------------------------- provenance


def _json_default(obj: Any) -> Any:
    """Make common non-JSON values (numpy scalars/arrays, paths, sets) serialisable.

    Converting numpy scalars to Python numbers (rather than ``str``) keeps the hash of
    ``{"K": np.int64(8)}`` equal to that of ``{"K": 8}``.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"provenance value of type {type(obj).__name__} is not JSON serialisable")


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def provenance_hash(provenance: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex chars) of the canonical JSON of ``provenance``.

    The ``hash`` key itself is excluded so that hashing a dict that already carries its
    hash is idempotent.
    """
    body = {k: v for k, v in provenance.items() if k != "hash"}
    return hashlib.sha256(_canonical_json(body).encode("utf-8")).hexdigest()[:16]


def _with_hash(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``provenance`` with a ``hash`` entry (kept if the caller supplied one).

    A caller-supplied hash wins so pipelines can key resume on their own notion of
    identity (e.g. excluding cosmetic fields); otherwise it is derived from the content.
    """
    if not isinstance(provenance, Mapping):
        raise TypeError(f"provenance must be a mapping, got {type(provenance).__name__}")
    out = dict(provenance)
    if not out.get("hash"):
        out["hash"] = provenance_hash(out)
    # Round-trip once so what we store is exactly what readers will get back.
    return json.loads(_canonical_json(out))


# --------------------------------------------------------------------------- schema


def _tensor_type(shape: Sequence[int]) -> pa.FixedShapeTensorType:
    return pa.fixed_shape_tensor(pa.float16(), list(shape))


def map_schema(K: int, h: int, w: int, with_place: bool = True,
               maps: Mapping[str, str] | None = None) -> pa.Schema:
    """Arrow schema of a map part: ids/labels plus float16 fixed-shape tensor maps.

    ``maps``: column name -> ``"map"`` (h, w) or ``"samples"`` (K, h, w), in schema order (default:
    the gals + paric columns). ``place`` is nullable and omitted entirely (``with_place=False``) for
    datasets without a place attribute, rather than stored as an all-null column.
    """
    for name, v in (("K", K), ("h", h), ("w", w)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"map_schema: {name} must be a positive int, got {v!r}")
    if maps is None:
        maps = {c: "samples" if c == "map_samples" else "map" for c in MAP_COLUMNS}
    fields = [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("group", pa.int64(), nullable=False),
    ]
    if with_place:
        fields.append(pa.field("place", pa.int64(), nullable=True))
    for name, kind in maps.items():
        fields.append(pa.field(name, _tensor_type((K, h, w) if kind == "samples" else (h, w)), nullable=False))
    return pa.schema(fields)


# --------------------------------------------------------------------------- build


def _as_str_list(name: str, values: Any, n: int | None) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name}: expected a sequence of strings, got a single string")
    out = list(values.tolist() if isinstance(values, np.ndarray) else values)
    if n is not None and len(out) != n:
        raise ValueError(f"{name}: expected {n} values (len(image_id)), got {len(out)}")
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{name}: expected strings, got {type(bad[0]).__name__} ({bad[0]!r})")
    return out


def _as_int_array(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {arr.shape}")
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        raise ValueError(f"{name}: expected integer values, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _place_array(values: Any, n: int) -> pa.Array:
    """``place`` may contain missing entries (None / NaN / masked) which become nulls."""
    if isinstance(values, np.ma.MaskedArray):
        data = _as_int_array("place", values.filled(0), n)
        return pa.array(data, type=pa.int64(), mask=np.ma.getmaskarray(values))
    arr = np.asarray(values, dtype=object if isinstance(values, list) else None)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"place: expected shape ({n},), got {arr.shape}")
    if arr.dtype.kind in "iub":
        return pa.array(arr.astype(np.int64, copy=False), type=pa.int64())
    mask = np.array(
        [v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)) for v in arr], bool
    )
    filled = np.where(mask, 0, arr)
    data = _as_int_array("place", filled.astype(np.float64), n)
    return pa.array(data, type=pa.int64(), mask=mask)


def _as_map(name: str, values: Any, expected: tuple[int, ...], dims: str) -> np.ndarray:
    """Validate shape and cast to contiguous float16, refusing silent overflow to inf."""
    arr = np.asarray(values)
    if arr.shape != expected:
        raise ValueError(
            f"{name}: expected shape {dims} = {expected}, got {arr.shape}"
        )
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a float array, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):  # overflow is reported below, with the column name
        out = np.ascontiguousarray(arr, dtype=np.float16)
    if arr.dtype != np.float16:
        overflow = np.isinf(out) & np.isfinite(arr)
        if overflow.any():
            raise ValueError(
                f"{name}: {int(overflow.sum())} finite values overflow float16 "
                f"(|x| > 65504); normalise maps before storing"
            )
    return out


def _nonfinite_rows(arr: np.ndarray) -> np.ndarray:
    """Indices of the rows holding a NaN or inf. Why refuse them: a non-finite reference turns the
    training loss into NaN, which reads as a diverging learning rate (and silently drops sweep trials)."""
    return np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))


def _require_finite(name: str, arr: np.ndarray, image_id: list[str]) -> None:
    rows = _nonfinite_rows(arr)
    if len(rows):
        ids = [image_id[i] for i in rows[:5]]
        raise ValueError(f"build_table: {name} has non-finite values (NaN or inf) in {len(rows)} row(s), first at "
                         f"row {int(rows[0])}: image_id {ids}{' …' if len(rows) > 5 else ''}")


def _tensor_array(values: np.ndarray) -> pa.ExtensionArray:
    """float16 ndarray [N, *shape] -> FixedShapeTensorArray (works for N == 0 too)."""
    shape = values.shape[1:]
    size = int(np.prod(shape))
    storage = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float16()), size)
    return pa.ExtensionArray.from_storage(_tensor_type(shape), storage)


def build_table(rows: Mapping[str, Any], provenance: Mapping[str, Any]) -> pa.Table:
    """Validate one shard's rows and assemble a map table with provenance metadata.

    ``rows`` keys: image_id, split, label, group, [place], map_det (N,h,w),
    map_samples (N,K,h,w), map_mean, map_median, map_std (N,h,w). Maps may be any real
    dtype and are cast to float16. Provenance is stored as JSON under schema metadata
    key ``b"paric"`` with a ``hash`` entry added if absent (see ``provenance_hash``).
    Validation happens here, before any I/O, so a bad shard fails fast and loudly.
    """
    required = ("image_id", "split", "label", "group")
    missing = [k for k in required if k not in rows]
    if missing:
        raise ValueError(f"build_table: missing column(s) {missing}")
    map_names = [k for k in rows if k.startswith(MAP_PREFIX)]
    unknown = sorted(set(rows) - set(_ID_COLUMNS) - set(map_names))
    if unknown:
        raise ValueError(f"build_table: unknown column(s) {unknown}; expected {list(_ID_COLUMNS)} and "
                         f"map columns named '{MAP_PREFIX}*'")
    if not map_names:
        raise ValueError(f"build_table: no map column ('{MAP_PREFIX}*'); a map source writes at least one")

    image_id = _as_str_list("image_id", rows["image_id"], None)
    n = len(image_id)
    if len(set(image_id)) != n:
        dup = next(i for i in image_id if image_id.count(i) > 1)
        raise ValueError(f"image_id: duplicate id {dup!r} within one part")
    split = _as_str_list("split", rows["split"], n)
    label = _as_int_array("label", rows["label"], n)
    group = _as_int_array("group", rows["group"], n)

    arrays_in = {k: np.asarray(rows[k]) for k in map_names}
    first = next((k for k in map_names if arrays_in[k].ndim == 3), None)
    if first is None:  # samples only: the grid comes from them
        first = map_names[0]
    ref = arrays_in[first]
    if ref.ndim not in (3, 4) or ref.shape[0] != n:
        raise ValueError(f"{first}: expected shape (N={n}, h, w) or (N={n}, K, h, w), got {ref.shape}")
    h, w = int(ref.shape[-2]), int(ref.shape[-1])
    K = 1
    maps: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for name in map_names:
        arr = arrays_in[name]
        if arr.ndim == 4:
            K = int(arr.shape[1])
            if min(h, w, K) < 1:
                raise ValueError(f"maps must have positive K, h, w; got K={K}, h={h}, w={w}")
            maps[name] = _as_map(name, arr, (n, K, h, w), f"(N={n}, K={K}, h={h}, w={w})")
            kinds[name] = "samples"
        else:
            if min(h, w) < 1:
                raise ValueError(f"maps must have positive h, w; got h={h}, w={w}")
            maps[name] = _as_map(name, arr, (n, h, w), f"(N={n}, h={h}, w={w})")
            kinds[name] = "map"
    if len({maps[k].shape[1] for k in maps if kinds[k] == "samples"}) > 1:
        raise ValueError(f"build_table: sample columns with different K: "
                         f"{ {k: maps[k].shape[1] for k in maps if kinds[k] == 'samples'} }")
    for name, arr in maps.items():
        _require_finite(name, arr, image_id)

    place = rows.get("place")
    with_place = place is not None
    schema = map_schema(K, h, w, with_place=with_place, maps=kinds)
    prov = _with_hash(provenance)
    schema = schema.with_metadata({METADATA_KEY: _canonical_json(prov).encode("utf-8")})

    arrays: dict[str, pa.Array] = {
        "image_id": pa.array(image_id, pa.string()),
        "split": pa.array(split, pa.string()),
        "label": pa.array(label, pa.int64()),
        "group": pa.array(group, pa.int64()),
    }
    if with_place:
        arrays["place"] = _place_array(place, n)
    for name in kinds:
        arrays[name] = _tensor_array(maps[name])
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)


# --------------------------------------------------------------------------- write


def _atomic_write(final: Path, write: Any, staging: Path | None = None) -> Path:
    """Write via ``write(fileobj)`` under a temp name, then rename (paric.io.atomic_path): readers and
    resume logic only ever see complete files."""
    with atomic_path(final, staging) as tmp:
        with open(tmp, "wb") as f:
            write(f)
    return Path(final)


def write_part(table: pa.Table, path: Path, staging: Path | None = None) -> Path:
    """Atomically write one part file (zstd-compressed Parquet) and return its path; ``staging``:
    the directory for its temp file (paric.io.atomic_path).

    Encodings are left at pyarrow's defaults (dictionary/plain) rather than e.g.
    BYTE_STREAM_SPLIT for float16, so that other Parquet readers can decode the maps.
    """
    if METADATA_KEY not in (table.schema.metadata or {}):
        raise ValueError("write_part: table has no 'paric' provenance metadata; use build_table")
    return _atomic_write(
        Path(path), lambda f: pq.write_table(table, f, compression=COMPRESSION), staging
    )


# --------------------------------------------------------------------------- layout / resume


def part_path(store_dir: Path, shard: int) -> Path:
    """Path of shard ``shard``'s part file inside ``store_dir``."""
    if isinstance(shard, bool) or not isinstance(shard, (int, np.integer)) or shard < 0:
        raise ValueError(f"shard must be a non-negative int, got {shard!r}")
    return Path(store_dir) / f"part-{int(shard):05d}.parquet"


def list_parts(store_dir: Path) -> dict[int, Path]:
    """All part files present in ``store_dir`` keyed by shard, sorted by shard index.

    Sorting numerically (not lexically) keeps order right past shard 99999.
    """
    store_dir = Path(store_dir)
    if not store_dir.is_dir():
        return {}
    found: dict[int, Path] = {}
    for p in store_dir.iterdir():
        m = _PART_RE.match(p.name)
        if m and p.is_file():
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def _part_provenance(path: Path) -> dict[str, Any] | None:
    """Provenance of one part from its footer only; None (with a warning) if unreadable."""
    try:
        meta = pq.read_schema(path).metadata or {}
        raw = meta.get(METADATA_KEY)
        if raw is None:
            raise ValueError("no 'paric' metadata key")
        prov = json.loads(raw)
        if not isinstance(prov, dict):
            raise ValueError("'paric' metadata is not a JSON object")
        return prov
    except (OSError, pa.ArrowException, ValueError) as exc:
        msg = f"ignoring unreadable map part {path}: {exc}"
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return None


def finished_parts(store_dir: Path, provenance_hash: str) -> set[int]:
    """Shards whose part exists with matching provenance hash (footer read only).

    Parts from a different configuration or that are truncated/corrupt count as not
    finished, so a resumed run recomputes (and atomically overwrites) them.
    """
    done: set[int] = set()
    damaged = damaged_parts(store_dir)
    for shard, path in list_parts(store_dir).items():
        if path.name in damaged:
            continue
        prov = _part_provenance(path)
        if prov is not None and prov.get("hash") == provenance_hash:
            done.add(shard)
    return done


def _write_json(path: Path, obj: Any) -> None:
    data = json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode("utf-8")
    _atomic_write(path, lambda f: f.write(data))


def mark_complete(store_dir: Path, n_rows: int, provenance: Mapping[str, Any]) -> None:
    """Write ``_SUCCESS.json`` ({"n_rows", "parts", "provenance"}) atomically, last.

    Checks first that every part present carries this provenance and that their row
    counts sum to ``n_rows``: third-party readers load *every* part in the directory,
    so a stale part from another configuration must not hide in a "complete" store.
    """
    store_dir = Path(store_dir)
    prov = _with_hash(provenance)
    parts = list_parts(store_dir)
    if not parts:
        raise ValueError(f"mark_complete: no part files in {store_dir}")
    total = 0
    stale: list[str] = []
    for path in parts.values():
        try:
            md = pq.read_metadata(path)
            kv = md.metadata or {}
            part_prov = json.loads(kv[METADATA_KEY]) if METADATA_KEY in kv else None
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise ValueError(f"mark_complete: unreadable part {path}: {exc}") from exc
        if not isinstance(part_prov, dict) or part_prov.get("hash") != prov["hash"]:
            stale.append(path.name)
        total += md.num_rows
    if stale:
        raise ValueError(
            f"mark_complete: parts in {store_dir} with different provenance "
            f"(expected hash {prov['hash']}): {stale}; remove or recompute them"
        )
    if total != n_rows:
        raise ValueError(
            f"mark_complete: parts in {store_dir} hold {total} rows, expected n_rows={n_rows}"
        )
    manifest = {
        "n_rows": int(n_rows),
        "parts": [p.name for p in parts.values()],
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in parts.values()},
        "provenance": prov,
    }
    _write_json(store_dir / SUCCESS_NAME, manifest)




def damaged_parts(store_dir: Path) -> dict[str, str]:
    """Parts whose size or sha256 differs from what ``_SUCCESS.json`` recorded: {name: what differs}.

    Why: a part truncated or overwritten after the store was finished still looks complete to a
    footer check (or fails deep inside Arrow); its recorded checksum finds it before any stage reads it.
    """
    try:
        files = json.loads((Path(store_dir) / SUCCESS_NAME).read_text("utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    bad: dict[str, str] = {}
    for name, rec in (files or {}).items() if isinstance(files, dict) else ():
        path = Path(store_dir) / name
        if not path.is_file():
            continue  # a missing part is found by the manifest check itself
        size = path.stat().st_size
        if size != rec.get("bytes"):
            bad[name] = f"{size} bytes, {SUCCESS_NAME} recorded {rec.get('bytes')}"
        elif sha256_file(path) != rec.get("sha256"):
            bad[name] = f"sha256 differs from the one {SUCCESS_NAME} recorded"
    return bad


def _read_manifest(store_dir: Path) -> dict[str, Any] | None:
    """Parsed ``_SUCCESS.json`` if present and well-formed with all its parts on disk, each of the
    size and checksum it recorded."""
    path = Path(store_dir) / SUCCESS_NAME
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable manifest {path}: {exc}", RuntimeWarning, stacklevel=3)
        return None
    if not (
        isinstance(manifest, dict)
        and isinstance(manifest.get("parts"), list)
        and isinstance(manifest.get("provenance"), dict)
        and isinstance(manifest.get("n_rows"), int)
    ):
        warnings.warn(f"ignoring malformed manifest {path}", RuntimeWarning, stacklevel=3)
        return None
    if not all((Path(store_dir) / name).is_file() for name in manifest["parts"]):
        return None
    bad = damaged_parts(store_dir)
    if bad:
        msg = f"map store {store_dir}: damaged part(s) {bad}; the store counts as incomplete"
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return None
    return manifest


def is_complete(store_dir: Path, provenance_hash: str) -> bool:
    """True if ``_SUCCESS.json`` exists, matches ``provenance_hash`` and its parts exist."""
    manifest = _read_manifest(store_dir)
    return manifest is not None and manifest["provenance"].get("hash") == provenance_hash


# --------------------------------------------------------------------------- read


@dataclass
class MapStore:
    """A split's ids and labels, and its map columns by name (``maps``; ``store.map_det`` reads
    ``maps["map_det"]``). Columns not requested, or not in the store, are None."""

    image_id: list[str] | None
    split: list[str] | None
    label: np.ndarray | None
    group: np.ndarray | None
    place: np.ndarray | None
    maps: dict[str, np.ndarray]
    provenance: dict[str, Any]
    n_rows: int = 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith(MAP_PREFIX):
            return self.__dict__.get("maps", {}).get(name)
        raise AttributeError(name)

    def __len__(self) -> int:
        return self.n_rows


def _tensor_to_numpy(col: pa.ChunkedArray) -> np.ndarray:
    """Fixed-shape tensor column -> writable float16 ndarray [N, *shape] with one copy.

    Uses each chunk's storage (a FixedSizeList) flattened and reshaped, then one
    concatenate; ``flatten`` honours slice offsets, unlike ``.values``.
    """
    typ = col.type
    if isinstance(typ, pa.FixedShapeTensorType):
        shape = tuple(typ.shape)
        if list(typ.permutation or range(len(shape))) != list(range(len(shape))):
            # Not produced by this module; let pyarrow apply the permutation.
            return np.array(col.combine_chunks().to_numpy_ndarray())
        chunks = [c.storage for c in col.chunks]
    else:  # e.g. extension metadata lost and only the FixedSizeList storage survived
        raise TypeError(f"expected arrow.fixed_shape_tensor column, got {typ}")
    flat = [c.flatten().to_numpy(zero_copy_only=False) for c in chunks]
    values = np.concatenate(flat) if flat else np.empty(0, np.float16)
    return values.astype(np.float16, copy=False).reshape((len(col),) + shape)


def _place_to_numpy(col: pa.ChunkedArray) -> np.ndarray:
    """int64 array, or an int64 masked array where some places are null."""
    if col.null_count == 0:
        return col.to_numpy().astype(np.int64, copy=False)
    mask = col.is_null().to_numpy(zero_copy_only=False)
    data = col.fill_null(0).to_numpy().astype(np.int64, copy=False)
    return np.ma.MaskedArray(data, mask=mask)


def read_store(
    store_dir: Path,
    columns: list[str] | None = None,
    require_complete: bool = True,
) -> MapStore:
    """Load a split's parts (in shard order, rows as written) into numpy.

    With ``require_complete`` (default) only the parts listed in ``_SUCCESS.json`` are
    read and the row count is checked against it; otherwise every part present is read
    (useful for inspecting a run in progress). ``place`` is None when the dataset has
    no place column.
    """
    store_dir = Path(store_dir)
    _check_requested(columns)
    paths, manifest = _parts_to_read(store_dir, require_complete)
    tables = [pq.read_table(path) for path in paths]
    provenance = manifest["provenance"] if manifest is not None else _tables_provenance(tables)
    table = _concat(store_dir, [_select(store_dir, t, columns) for t in tables])
    if manifest is not None and table.num_rows != manifest["n_rows"]:
        raise ValueError(
            f"map store {store_dir}: read {table.num_rows} rows, "
            f"{SUCCESS_NAME} says {manifest['n_rows']}"
        )
    ids, maps = _columns_to_numpy(table)
    _check_finite(store_dir, maps, paths, [t.num_rows for t in tables], ids["image_id"])
    return MapStore(**ids, maps=maps, provenance=provenance, n_rows=table.num_rows)


def _check_requested(columns: list[str] | None) -> None:
    """Refuse column names a store cannot hold (before any file is opened)."""
    if columns is None:
        return
    unknown = sorted(c for c in columns if c not in _ID_COLUMNS and not c.startswith(MAP_PREFIX))
    if unknown:
        raise ValueError(f"read_store: unknown column(s) {unknown}; valid: {list(_ID_COLUMNS)} and the "
                         f"store's map columns ('{MAP_PREFIX}*')")


def _parts_to_read(store_dir: Path, require_complete: bool) -> tuple[list[Path], dict | None]:
    """The parts a reader may trust, in shard order, and the manifest that lists them: the manifest's
    parts (a stray part is ignored with a warning), or without a manifest every part present when
    ``require_complete`` is off, else an error saying what is wrong."""
    if not store_dir.is_dir():
        raise FileNotFoundError(f"map store {store_dir} does not exist")
    present = list_parts(store_dir)
    manifest = _read_manifest(store_dir)
    if manifest is not None:
        paths = sorted((store_dir / name for name in manifest["parts"]),
                       key=lambda p: int(_PART_RE.match(p.name).group(1)))  # type: ignore[union-attr]
        extra = sorted(set(present.values()) - set(paths))
        if extra:
            warnings.warn(
                f"map store {store_dir} has parts not listed in {SUCCESS_NAME} (ignored): "
                f"{[p.name for p in extra]}",
                RuntimeWarning,
                stacklevel=3,
            )
    elif require_complete:
        bad = damaged_parts(store_dir)
        raise IncompleteStoreError(
            f"map store {store_dir}: damaged part(s) {bad}; rerun the maps stage, which recomputes them"
            if bad else
            f"map store {store_dir} is not complete (no valid {SUCCESS_NAME}); "
            f"{len(present)} part(s) present. Pass require_complete=False to read anyway."
        )
    else:
        paths = list(present.values())
    if not paths:
        raise FileNotFoundError(f"map store {store_dir} has no part files")
    return paths, manifest


def _tables_provenance(tables: list[pa.Table]) -> dict:
    """Provenance from the first part whose schema metadata has it (a store read without its manifest)."""
    for table in tables:
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        if raw:
            return json.loads(raw)
    return {}


def _select(store_dir: Path, table: pa.Table, columns: list[str] | None) -> pa.Table:
    """A part's requested columns (all when None), without its schema metadata; a requested map
    column the part lacks is an error naming what it holds."""
    if columns is not None:
        absent = [c for c in columns if c.startswith(MAP_PREFIX) and c not in table.column_names]
        if absent:
            have = [c for c in table.column_names if c.startswith(MAP_PREFIX)]
            raise ValueError(f"map store {store_dir} has no column(s) {absent}; it holds {have} "
                             "(maps.sources decides which)")
    keep = [c for c in table.column_names if columns is None or c in columns]
    return table.select(keep).replace_schema_metadata(None)


def _concat(store_dir: Path, tables: list[pa.Table]) -> pa.Table:
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"map store {store_dir}: parts have inconsistent schemas: {exc}") from exc


def _columns_to_numpy(table: pa.Table) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The id columns (None where absent) and the map columns of a table, as Python / numpy."""
    ids: dict[str, Any] = {name: None for name in _ID_COLUMNS}
    maps: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name)
        if name in ("image_id", "split"):
            ids[name] = col.to_pylist()
        elif name in ("label", "group"):
            ids[name] = col.to_numpy().astype(np.int64, copy=False)
        elif name == "place":
            ids[name] = _place_to_numpy(col)
        else:
            maps[name] = _tensor_to_numpy(col)
    return ids, maps


def _check_finite(store_dir: Path, maps: dict[str, np.ndarray], paths: list[Path], part_rows: list[int],
                  image_ids: list[str] | None) -> None:
    """A map with NaN or inf is an error naming the part, row and image of the first bad value."""
    for name, values in maps.items():
        bad = _nonfinite_rows(values)
        if len(bad):
            first = int(bad[0])
            ends = np.cumsum(part_rows)
            part = int(np.searchsorted(ends, first, side="right"))
            row = first - (int(ends[part - 1]) if part else 0)
            who = f" (image_id {image_ids[first]!r})" if image_ids is not None else ""
            raise ValueError(f"map store {store_dir}: {name} has non-finite values (NaN or inf) in {len(bad)} "
                             f"row(s), first in {paths[part].name} row {row}{who}; recompute it (--force maps)")


def read_provenance(store_dir: Path) -> dict[str, Any]:
    """Provenance from ``_SUCCESS.json`` if complete, else from the first readable part."""
    store_dir = Path(store_dir)
    manifest = _read_manifest(store_dir)
    if manifest is not None:
        return manifest["provenance"]
    for path in list_parts(store_dir).values():
        prov = _part_provenance(path)
        if prov is not None:
            return prov
    raise FileNotFoundError(f"map store {store_dir} has no readable parts or {SUCCESS_NAME}")
