"""Ray Data precompute of the map store: one actor pool, each actor loads VLM + adapters once.

Why this shape: a split is cut into fixed shards of ``maps.shard_size`` images; the dataset that
Ray maps over holds shard indices, and each actor computes a whole shard and writes it as one
Parquet part (atomically). So the maps are bit-identical whatever the actor count (a shard is
computed the same way anywhere), finished shards survive an interruption, and a rerun only
computes the shards whose part is missing.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import ray
import torch
from ray.data import ActorPoolStrategy

from paric import store
from paric.attention.sources import MapSource, build_sources, compute_columns, configured_sources
from paric.config import Config
from paric.io import remove_staging, stale_temps, staging_dir
from paric.data import WaterbirdsDataset
from paric.stages.cache import forced, record_stage
from paric.stages.prepare import VLMArtifact, map_provenance
from paric.stages.ray_env import cluster_gpus, ensure_ray

log = logging.getLogger("paric")


class ShardMapper:
    """Ray Data callable class: builds every source's runtime part (the Grad-CAM engine, LaZSL's
    scorer) once per actor, then maps whole shards of any split (one pool serves every split, so
    the actors' start-up, imports and VLM load, is paid once per precompute, not once per split)."""

    def __init__(self, root: str, classes: list[str], vlm_art: VLMArtifact, sources: list[MapSource],
                 prompts: list[str], layer: str, shard_size: int, batch_size: int, out_dirs: dict[str, str],
                 provenance: dict[str, dict], threads: int, staging: dict[str, str]):
        torch.set_num_threads(max(1, threads))
        self.vlm = vlm_art.load()
        self.device = torch.device("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")
        self.vlm.model.to(self.device)
        self.sources, self.root = sources, root
        self.engine = build_sources(sources, self.vlm, prompts, layer, self.device, classes)
        self.datasets: dict[str, WaterbirdsDataset] = {}
        self.shard_size, self.batch_size = shard_size, batch_size
        self.out_dirs = {k: Path(v) for k, v in out_dirs.items()}
        self.provenance = provenance
        self.staging = {k: Path(v) for k, v in staging.items()}  # temp files, removed by the driver

    def dataset(self, split: str) -> WaterbirdsDataset:
        if split not in self.datasets:
            self.datasets[split] = WaterbirdsDataset(self.root, split, image_size=self.vlm.image_size,
                                                     with_masks=False)
        return self.datasets[split]

    def compute_shard(self, split: str, shard: int) -> dict[str, np.ndarray | list]:
        """Every source's map columns for the images of one shard, in dataset order."""
        ds = self.dataset(split)
        lo, hi = shard * self.shard_size, min(len(ds), (shard + 1) * self.shard_size)
        items = [ds[i] for i in range(lo, hi)]
        cols: dict[str, list] = {}
        for b in range(0, len(items), self.batch_size):
            batch = items[b : b + self.batch_size]
            x = self.vlm.normalise(torch.from_numpy(np.stack([it["image"] for it in batch]))).to(self.device)
            labels = np.array([it["label"] for it in batch])
            for k, v in compute_columns(self.sources, self.engine, x, [it["image_id"] for it in batch], labels).items():
                cols.setdefault(k, []).append(v)
        rows: dict[str, np.ndarray | list] = {k: np.concatenate(v) for k, v in cols.items()}
        rows["image_id"] = [it["image_id"] for it in items]
        rows["split"] = [split] * len(items)
        rows["label"] = np.array([it["label"] for it in items], dtype=np.int64)
        rows["group"] = np.array([it["group"] for it in items], dtype=np.int64)
        rows["place"] = np.array([it["place"] for it in items], dtype=np.int64)
        return rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        splits, shards, counts, secs = [], [], [], []
        for split, shard in zip(batch["split"].tolist(), batch["shard"].tolist()):
            t0 = time.time()
            rows = self.compute_shard(str(split), int(shard))
            store.write_part(store.build_table(rows, self.provenance[split]),
                             store.part_path(self.out_dirs[split], int(shard)), self.staging[split])
            splits.append(str(split))
            shards.append(int(shard))
            counts.append(len(rows["image_id"]))
            secs.append(time.time() - t0)
        return {"split": np.array(splits), "shard": np.array(shards), "rows": np.array(counts),
                "seconds": np.array(secs)}


def precompute_split(cfg: Config, root: Path, split: str, vlm_art: VLMArtifact, adapter_ckpt: Path | None,
                     layer: str) -> Path:
    """Write (or finish) ``maps/<split>/`` with the columns of every source in ``maps.sources``;
    returns its directory."""
    return precompute_splits(cfg, root, [split], vlm_art, adapter_ckpt, layer)[split]


def precompute_splits(cfg: Config, root: Path, splits: list[str], vlm_art: VLMArtifact, adapter_ckpt: Path | None,
                      layer: str) -> dict[str, Path]:
    """Write (or finish) ``maps/<split>/`` for each split, every missing shard of every split in one
    Ray Data pass over one actor pool; returns each split's directory. Each split stays its own
    cached stage (``maps:<split>``), timed from the start of the pass to its last shard."""
    sources = configured_sources(cfg, adapter_ckpt)
    base = map_provenance(cfg, vlm_art, sources, layer)  # the same for every split but its name
    out_dirs = {split: cfg.layout.maps(split) for split in splits}
    provs: dict[str, dict] = {}
    sizes: dict[str, int] = {}  # images of each split that has shards to compute
    todo: list[tuple[str, int]] = []
    classes: list[str] = []
    t0 = time.time()
    for split, out_dir in out_dirs.items():
        prov = provs[split] = {**base, "split": split}
        prov["hash"] = store.provenance_hash(prov)
        if forced(f"maps:{split}") and out_dir.exists():
            shutil.rmtree(out_dir)  # --force maps: recompute every shard
        for stale in stale_temps(out_dir):  # left by a writer killed mid-write in an earlier pass
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        if store.is_complete(out_dir, prov["hash"]):
            record_stage(f"maps:{split}", "skipped (cached)", 0.0, out_dir)
            continue
        ds = WaterbirdsDataset(root, split, with_masks=False)
        n, classes = len(ds), ds.classes
        n_shards = math.ceil(n / cfg.maps.shard_size)
        done = store.finished_parts(out_dir, prov["hash"])
        log.info("maps:%s: %d images, %d shards (%d already written)", split, n, n_shards, len(done))
        missing = [(split, s) for s in range(n_shards) if s not in done]
        if missing:
            todo += missing
            sizes[split] = n
        else:  # every part written, the manifest not yet (killed just before it)
            finish_split(split, out_dir, n, prov, t0)
    if todo:
        staging = {split: staging_dir(out_dirs[split]) for split in sizes}
        try:
            _map_shards(cfg, root, todo, classes, vlm_art, sources, layer, provs, sizes, out_dirs, staging, t0)
        finally:  # after a failure, actors still dying may be mid-write: their temp files go with it
            for d in staging.values():
                remove_staging(d)
    return out_dirs


def _map_shards(cfg: Config, root: Path, todo: list[tuple[str, int]], classes: list[str], vlm_art: VLMArtifact,
                sources: list[MapSource], layer: str, provs: dict[str, dict], sizes: dict[str, int],
                out_dirs: dict[str, Path], staging: dict[str, Path], t0: float) -> None:
    """The Ray Data pass: one actor pool computes and writes every shard in ``todo`` (temp files in
    ``staging``); each split is finished (its manifest written) as soon as its last shard is in."""
    ensure_ray()
    gpus = cluster_gpus()
    n_actors = min(cfg.maps.num_actors, len(todo))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = max(1, cpus // n_actors) if cfg.run.threads == 0 else cfg.run.threads
    ds = ray.data.from_items([{"split": sp, "shard": s} for sp, s in todo], override_num_blocks=len(todo))
    mapped = ds.map_batches(
        ShardMapper,
        fn_constructor_kwargs=dict(
            root=str(root), classes=classes, vlm_art=vlm_art, sources=sources, prompts=list(cfg.vlm.prompts),
            layer=layer, shard_size=cfg.maps.shard_size, batch_size=cfg.maps.batch_size,
            out_dirs={k: str(v) for k, v in out_dirs.items()}, provenance=provs, threads=threads,
            staging={k: str(v) for k, v in staging.items()},
        ),
        batch_size=1,
        compute=ActorPoolStrategy(size=n_actors),
        num_cpus=0 if gpus else 1,
        num_gpus=1 if gpus else 0,
    )
    left = Counter(split for split, _ in todo)
    for row in mapped.iter_rows():
        split = str(row["split"])
        log.info("maps:%s shard %d: %d images in %.1fs", split, row["shard"], row["rows"], row["seconds"])
        left[split] -= 1
        if left[split] == 0:
            finish_split(split, out_dirs[split], sizes[split], provs[split], t0)


def finish_split(split: str, out_dir: Path, n: int, prov: dict, t0: float) -> None:
    """Mark a split's store complete (only now may a reader trust it) and log its stage line."""
    store.mark_complete(out_dir, n, prov)
    record_stage(f"maps:{split}", "done", time.time() - t0, out_dir)
