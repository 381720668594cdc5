"""Tests for the Parquet map store (paric.store): plain pyarrow, no Ray."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from paric import store
from paric.store import (
    IncompleteStoreError,
    build_table,
    finished_parts,
    is_complete,
    map_schema,
    mark_complete,
    part_path,
    provenance_hash,
    read_provenance,
    read_store,
    write_part,
)

K, H, W = 4, 7, 7
PROV = {"vlm": "ViT-B/32", "weights": "openai", "prompts": ["a photo of a bird"], "K": K, "seed": 0}


def make_rows(n: int, start: int = 0, seed: int = 0, place: bool = True) -> dict:
    """Random float32/float64 maps so the float16 cast is exercised."""
    rng = np.random.default_rng(seed)
    rows = {
        "image_id": [f"img{start + i:04d}" for i in range(n)],
        "split": ["train"] * n,
        "label": rng.integers(0, 2, n),
        "group": rng.integers(0, 4, n),
        "map_det": rng.random((n, H, W), dtype=np.float32),
        "map_samples": rng.random((n, K, H, W)),
        "map_mean": rng.random((n, H, W)),
        "map_median": rng.random((n, H, W)),
        "map_std": rng.random((n, H, W), dtype=np.float32),
    }
    if place:
        rows["place"] = rng.integers(0, 2, n)
    return rows


def write_store(d: Path, prov: dict = PROV, parts: tuple[int, ...] = (3, 2)) -> list[dict]:
    """Write one part per entry of ``parts`` (rows per part); shard indices 0, 1, ..."""
    all_rows, start = [], 0
    for shard, n in enumerate(parts):
        rows = make_rows(n, start=start, seed=shard)
        write_part(build_table(rows, prov), part_path(d, shard))
        all_rows.append(rows)
        start += n
    return all_rows


def cat(rows: list[dict], key: str) -> np.ndarray:
    return np.concatenate([np.asarray(r[key]) for r in rows])


# --------------------------------------------------------------------------- round trip


def test_round_trip_two_parts(tmp_path: Path) -> None:
    d = tmp_path / "maps" / "train"
    rows = write_store(d, parts=(3, 2))  # N = 5
    mark_complete(d, 5, PROV)

    ms = read_store(d)
    assert len(ms) == 5
    assert ms.image_id == [f"img{i:04d}" for i in range(5)]  # shard order, rows as written
    assert ms.split == ["train"] * 5
    for key in ("label", "group", "place"):
        assert ms.__dict__[key].dtype == np.int64
        np.testing.assert_array_equal(ms.__dict__[key], cat(rows, key))
    for key in ("map_det", "map_mean", "map_median", "map_std", "map_samples"):
        got = getattr(ms, key)
        assert got.dtype == np.float16 and got.flags.writeable
        np.testing.assert_array_equal(got, cat(rows, key).astype(np.float16))
    assert ms.map_samples.shape == (5, K, H, W)
    assert ms.map_det.shape == (5, H, W)

    expected_prov = {**PROV, "hash": provenance_hash(PROV)}
    assert ms.provenance == expected_prov
    assert read_provenance(d) == expected_prov
    # every part also carries it in its footer
    assert json.loads(pq.read_schema(part_path(d, 0)).metadata[b"paric"]) == expected_prov


def test_read_selected_columns_and_no_place(tmp_path: Path) -> None:
    d = tmp_path / "s"
    rows = make_rows(4, place=False)
    write_part(build_table(rows, PROV), part_path(d, 0))
    mark_complete(d, 4, PROV)
    assert "place" not in pq.read_schema(part_path(d, 0)).names

    ms = read_store(d, columns=["image_id", "map_mean", "place"])
    assert ms.image_id == rows["image_id"]
    assert ms.place is None and ms.map_det is None and ms.label is None
    np.testing.assert_array_equal(ms.map_mean, rows["map_mean"].astype(np.float16))
    with pytest.raises(ValueError, match=r"no column\(s\) \['map_nope'\]; it holds \['map_det'"):
        read_store(d, columns=["map_nope"])
    with pytest.raises(ValueError, match="unknown column"):
        read_store(d, columns=["nope"])


def test_nullable_place(tmp_path: Path) -> None:
    rows = make_rows(3)
    rows["place"] = [1, None, 0]
    d = tmp_path / "s"
    write_part(build_table(rows, PROV), part_path(d, 0))
    ms = read_store(d, require_complete=False)
    assert isinstance(ms.place, np.ma.MaskedArray)
    assert ms.place.mask.tolist() == [False, True, False]
    assert ms.place[0] == 1 and ms.place[2] == 0


# --------------------------------------------------------------------------- interop


def test_readable_without_paric_reader(tmp_path: Path) -> None:
    d = tmp_path / "maps" / "train"
    write_store(d, parts=(3, 2))
    mark_complete(d, 5, PROV)
    # temp-looking files in the dir must be ignored by dataset readers
    (d / ".part-00009.parquet.tmp-1-abcd").write_bytes(b"garbage")

    t = pq.read_table(d)
    assert t.num_rows == 5
    for key, shape in (("map_det", [H, W]), ("map_samples", [K, H, W])):
        typ = t.schema.field(key).type
        assert isinstance(typ, pa.FixedShapeTensorType)
        assert typ.extension_name == "arrow.fixed_shape_tensor"
        assert typ.value_type == pa.float16()
        assert list(typ.shape) == shape
    arr = t.column("map_samples").combine_chunks().to_numpy_ndarray()
    assert arr.shape == (5, K, H, W) and arr.dtype == np.float16

    df = pd.read_parquet(d)
    assert len(df) == 5
    assert df["image_id"].tolist() == [f"img{i:04d}" for i in range(5)]


def test_on_disk_float16_and_zstd(tmp_path: Path) -> None:
    p = write_part(build_table(make_rows(2), PROV), tmp_path / "part-00000.parquet")
    md = pq.ParquetFile(p).metadata
    names = [md.schema.column(i).path for i in range(md.num_columns)]
    for i, name in enumerate(names):
        col = md.row_group(0).column(i)
        assert col.compression == "ZSTD", name
        if name.startswith("map_"):
            assert col.physical_type == "FIXED_LEN_BYTE_ARRAY"
            assert str(md.schema.column(i).logical_type) == "Float16"
            assert md.schema.column(i).length == 2  # 2 bytes per value


def test_map_schema() -> None:
    s = map_schema(K, H, W)
    assert s.names == ["image_id", "split", "label", "group", "place", "map_det",
                       "map_samples", "map_mean", "map_median", "map_std"]
    assert s.field("place").nullable and not s.field("label").nullable
    assert list(s.field("map_samples").type.shape) == [K, H, W]
    assert "place" not in map_schema(K, H, W, with_place=False).names
    with pytest.raises(ValueError, match="K"):
        map_schema(0, H, W)


# --------------------------------------------------------------------------- atomic write


def _failing_write(table, where, **kwargs):
    """Write some bytes then fail, like a crash midway through a Parquet write."""
    if hasattr(where, "write"):
        where.write(b"PAR1 partial")
    else:
        Path(where).write_bytes(b"PAR1 partial")
    raise OSError("disk full (simulated)")


def test_atomic_write_failure_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / "s"
    table = build_table(make_rows(2), PROV)
    monkeypatch.setattr(store.pq, "write_table", _failing_write)
    with pytest.raises(OSError, match="simulated"):
        write_part(table, part_path(d, 0))
    assert list(d.iterdir()) == []  # no final file, no temp file


def test_failed_rewrite_keeps_existing_part(tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / "s"
    p = write_part(build_table(make_rows(2), PROV), part_path(d, 0))
    before = p.read_bytes()
    monkeypatch.setattr(store.pq, "write_table", _failing_write)
    with pytest.raises(OSError):
        write_part(build_table(make_rows(3, seed=1), PROV), p)
    assert p.read_bytes() == before
    assert sorted(x.name for x in d.iterdir()) == [p.name]


def test_a_writer_that_outlives_its_staging_directory_leaves_nothing(tmp_path: Path) -> None:
    """Why staging exists: a Ray actor killed (or still dying) after a pass failed must not leave a
    temp file beside the parts. Its owner removes the staging directory; a write started before
    that is removed with it, and one started after fails instead of recreating it."""
    from paric.io import remove_staging, staging_dir, stale_temps

    d = tmp_path / "s"
    d.mkdir()
    staging = staging_dir(d)
    assert stale_temps(d) == [staging]  # hidden, and found as stale by the next pass
    (staging / ".part-00000.parquet.tmp-1-abc").write_bytes(b"PAR1 half")  # killed mid-write
    remove_staging(staging)
    assert list(d.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        write_part(build_table(make_rows(2), PROV), part_path(d, 0), staging)
    assert list(d.iterdir()) == []
    staging = staging_dir(d)
    p = write_part(build_table(make_rows(2), PROV), part_path(d, 0), staging)  # the normal path
    assert sorted(x.name for x in d.iterdir()) == sorted([p.name, staging.name]) and not any(staging.iterdir())


# --------------------------------------------------------------------------- resume


def test_finished_parts(tmp_path: Path) -> None:
    d = tmp_path / "s"
    h = provenance_hash(PROV)
    assert finished_parts(d, h) == set()  # missing dir
    write_store(d, parts=(2, 2, 2, 2))
    other = {**PROV, "seed": 1}
    write_part(build_table(make_rows(2, seed=9), other), part_path(d, 1))
    good = part_path(d, 2).read_bytes()
    part_path(d, 2).write_bytes(good[: len(good) // 2])  # truncated
    part_path(d, 3).write_bytes(b"not parquet at all")

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert finished_parts(d, h) == {0}
    msgs = " ".join(str(w.message) for w in rec)
    assert "part-00002.parquet" in msgs and "part-00003.parquet" in msgs
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert finished_parts(d, provenance_hash(other)) == {1}


def test_caller_supplied_hash_is_kept(tmp_path: Path) -> None:
    prov = {**PROV, "hash": "custom0123456789"}
    write_part(build_table(make_rows(1), prov), part_path(tmp_path, 0))
    assert finished_parts(tmp_path, "custom0123456789") == {0}
    # hash is insensitive to key order and to an existing hash entry
    assert provenance_hash({"b": 1, "a": 2}) == provenance_hash({"a": 2, "b": 1, "hash": "x"})
    assert provenance_hash({"K": np.int64(4)}) == provenance_hash({"K": 4})


# --------------------------------------------------------------------------- completion


def test_complete_semantics(tmp_path: Path) -> None:
    d = tmp_path / "s"
    h = provenance_hash(PROV)
    assert not is_complete(d, h)
    write_store(d, parts=(3, 2))
    assert not is_complete(d, h)
    with pytest.raises(IncompleteStoreError, match=str(d)):
        read_store(d)
    assert len(read_store(d, require_complete=False)) == 5

    with pytest.raises(ValueError, match="expected n_rows=6"):
        mark_complete(d, 6, PROV)
    assert not (d / "_SUCCESS.json").exists()

    mark_complete(d, 5, PROV)
    assert is_complete(d, h)
    assert not is_complete(d, provenance_hash({**PROV, "seed": 1}))
    manifest = json.loads((d / "_SUCCESS.json").read_text())
    assert manifest["n_rows"] == 5
    assert manifest["parts"] == ["part-00000.parquet", "part-00001.parquet"]
    assert manifest["provenance"]["hash"] == h
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []

    part_path(d, 1).unlink()  # a listed part vanished -> no longer complete
    assert not is_complete(d, h)


def test_mark_complete_rejects_stale_parts(tmp_path: Path) -> None:
    d = tmp_path / "s"
    write_store(d, parts=(2,))
    write_part(build_table(make_rows(2, start=2), {**PROV, "seed": 7}), part_path(d, 1))
    with pytest.raises(ValueError, match="part-00001.parquet"):
        mark_complete(d, 4, PROV)


def test_read_store_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        read_store(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        read_store(tmp_path / "empty", require_complete=False)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "key, bad_shape",
    [("map_mean", (5, H, W + 1)), ("map_std", (4, H, W)), ("map_samples", (5, K, H, W - 1)),
     ("map_median", (5, H * W))],
)
def test_validation_names_column(key: str, bad_shape: tuple[int, ...]) -> None:
    rows = make_rows(5)
    rows[key] = np.zeros(bad_shape)
    with pytest.raises(ValueError, match=rf"{key}: expected shape .* got \({bad_shape[0]}"):
        build_table(rows, PROV)


def test_validation_other_errors() -> None:
    rows = make_rows(3)
    rows["label"] = rows["label"][:2]
    with pytest.raises(ValueError, match=r"label: expected shape \(3,\), got \(2,\)"):
        build_table(rows, PROV)
    rows = make_rows(3)
    for name in [k for k in rows if k.startswith("map_")]:
        del rows[name]
    with pytest.raises(ValueError, match="no map column"):
        build_table(rows, PROV)
    rows = make_rows(3)
    del rows["label"]
    with pytest.raises(ValueError, match="missing column.*label"):
        build_table(rows, PROV)
    rows = make_rows(3)
    rows["map_det"] = rows["map_det"] * 1e6
    with pytest.raises(ValueError, match="map_det: .*overflow float16"):
        build_table(rows, PROV)
    rows = make_rows(3)
    rows["image_id"] = ["a", "b", "a"]
    with pytest.raises(ValueError, match="duplicate"):
        build_table(rows, PROV)
    with pytest.raises(ValueError, match="shard"):
        part_path(Path("."), -1)


def test_non_finite_maps_are_refused_when_written_and_when_read(tmp_path: Path) -> None:
    rows = make_rows(4)
    rows["map_mean"][2, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"map_mean has non-finite .* 1 row\(s\), first at row 2: image_id \['img0002'\]"):
        build_table(rows, PROV)
    # a part written by another tool (or damaged) with an inf in its second file's row 1
    d = tmp_path / "maps"
    write_store(d, parts=(3, 2))
    good = pq.read_table(part_path(d, 1))
    std = good.column("map_std").combine_chunks().to_numpy_ndarray().astype(np.float16)
    std[1, 0, 0] = np.inf
    from paric.store import _tensor_array

    bad = good.set_column(good.schema.get_field_index("map_std"), good.schema.field("map_std"), _tensor_array(std))
    pq.write_table(bad, part_path(d, 1))
    mark_complete(d, 5, PROV)
    with pytest.raises(ValueError, match=r"map_std has non-finite .* first in part-00001\.parquet row 1 \(image_id 'img0004'\)"):
        read_store(d)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_part_is_found_by_its_recorded_checksum(tmp_path: Path, damage: str) -> None:
    """Issue 14 item 5: a part truncated (or overwritten with other bytes of the same size) after the
    store was finished makes it incomplete, names the part, and only that shard counts as unfinished."""
    write_store(tmp_path, parts=(3, 2))
    mark_complete(tmp_path, 5, PROV)
    prov = provenance_hash(PROV)
    assert is_complete(tmp_path, prov) and store.damaged_parts(tmp_path) == {}
    part = part_path(tmp_path, 1)
    data = bytearray(part.read_bytes())
    if damage == "truncate":
        part.write_bytes(bytes(data[: len(data) // 2]))
    else:
        mid = len(data) // 2
        data[mid] ^= 0xFF
        part.write_bytes(bytes(data))
    bad = store.damaged_parts(tmp_path)
    assert list(bad) == [part.name]
    with pytest.warns(RuntimeWarning, match="damaged part"):
        assert not is_complete(tmp_path, prov)
    with pytest.warns(RuntimeWarning), pytest.raises(IncompleteStoreError, match=part.name):
        read_store(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert finished_parts(tmp_path, prov) == {0}  # the resumed maps stage recomputes shard 1 only


def test_a_store_holds_the_columns_its_sources_write(tmp_path: Path) -> None:
    """Issue 13: a GALS-only store (no samples), or one with another source's columns, writes and
    reads back; the schema is what the rows hold."""
    rows = make_rows(3)
    gals_only = {k: v for k, v in rows.items() if not k.startswith("map_") or k == "map_det"}
    t = build_table(gals_only, PROV)
    assert [n for n in t.schema.names if n.startswith("map_")] == ["map_det"]
    other = {**gals_only, "map_other_samples": np.random.default_rng(0).random((3, 2, H, W))}
    write_part(build_table(other, PROV), part_path(tmp_path, 0))
    mark_complete(tmp_path, 3, PROV)
    ms = read_store(tmp_path)
    assert set(ms.maps) == {"map_det", "map_other_samples"} and ms.map_samples is None
    assert ms.map_other_samples.shape == (3, 2, H, W)
    with pytest.raises(ValueError, match="unknown column"):
        build_table({**gals_only, "det": rows["map_det"]}, PROV)
