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
from pathlib import Path

import numpy as np
import ray
import torch
from ray.data import ActorPoolStrategy

from paric import store
from paric.attention.sources import MapSource, build_sources, compute_columns, configured_sources
from paric.config import Config
from paric.data import WaterbirdsDataset
from paric.stages.cache import timed_stage
from paric.stages.prepare import VLMArtifact, map_provenance
from paric.stages.ray_env import cluster_gpus, ensure_ray

log = logging.getLogger("paric")


class ShardMapper:
    """Ray Data callable class: builds every source's runtime part (the Grad-CAM engine, LaZSL's
    scorer) once per actor, then maps whole shards."""

    def __init__(self, root: str, split: str, vlm_art: VLMArtifact, sources: list[MapSource], prompts: list[str],
                 layer: str, shard_size: int, batch_size: int, out_dir: str, provenance: dict, threads: int):
        torch.set_num_threads(max(1, threads))
        self.vlm = vlm_art.load()
        self.device = torch.device("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")
        self.vlm.model.to(self.device)
        self.sources = sources
        self.ds = WaterbirdsDataset(root, split, image_size=self.vlm.image_size, with_masks=False)
        self.engine = build_sources(sources, self.vlm, prompts, layer, self.device, self.ds.classes)
        self.split, self.shard_size, self.batch_size = split, shard_size, batch_size
        self.out_dir, self.provenance = Path(out_dir), provenance

    def compute_shard(self, shard: int) -> dict[str, np.ndarray | list]:
        """Every source's map columns for the images of one shard, in dataset order."""
        lo, hi = shard * self.shard_size, min(len(self.ds), (shard + 1) * self.shard_size)
        items = [self.ds[i] for i in range(lo, hi)]
        cols: dict[str, list] = {}
        for b in range(0, len(items), self.batch_size):
            batch = items[b : b + self.batch_size]
            x = self.vlm.normalise(torch.from_numpy(np.stack([it["image"] for it in batch]))).to(self.device)
            labels = np.array([it["label"] for it in batch])
            for k, v in compute_columns(self.sources, self.engine, x, [it["image_id"] for it in batch], labels).items():
                cols.setdefault(k, []).append(v)
        rows: dict[str, np.ndarray | list] = {k: np.concatenate(v) for k, v in cols.items()}
        rows["image_id"] = [it["image_id"] for it in items]
        rows["split"] = [self.split] * len(items)
        rows["label"] = np.array([it["label"] for it in items], dtype=np.int64)
        rows["group"] = np.array([it["group"] for it in items], dtype=np.int64)
        rows["place"] = np.array([it["place"] for it in items], dtype=np.int64)
        return rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards, counts, secs = [], [], []
        for shard in batch["shard"].tolist():
            t0 = time.time()
            rows = self.compute_shard(int(shard))
            store.write_part(store.build_table(rows, self.provenance), store.part_path(self.out_dir, int(shard)))
            shards.append(int(shard))
            counts.append(len(rows["image_id"]))
            secs.append(time.time() - t0)
        return {"shard": np.array(shards), "rows": np.array(counts), "seconds": np.array(secs)}


def precompute_split(cfg: Config, root: Path, split: str, vlm_art: VLMArtifact, adapter_ckpt: Path | None,
                     layer: str) -> Path:
    """Write (or finish) ``maps/<split>/`` with the columns of every source in ``maps.sources``;
    returns its directory."""
    out_dir = cfg.output_path("maps", split)
    sources = configured_sources(cfg, adapter_ckpt)
    prov = map_provenance(cfg, vlm_art, sources, layer)
    prov["split"] = split
    prov["hash"] = store.provenance_hash(prov)
    with timed_stage(f"maps:{split}", out_dir) as info:
        if info["forced"] and out_dir.exists():
            shutil.rmtree(out_dir)  # --force maps: recompute every shard
        if store.is_complete(out_dir, prov["hash"]):
            info["skipped"] = True
            return out_dir
        n = len(WaterbirdsDataset(root, split, with_masks=False))
        n_shards = math.ceil(n / cfg.maps.shard_size)
        done = store.finished_parts(out_dir, prov["hash"])
        todo = [s for s in range(n_shards) if s not in done]
        log.info("maps:%s: %d images, %d shards (%d already written)", split, n, n_shards, len(done))
        if todo:
            ensure_ray()
            gpus = cluster_gpus()
            n_actors = min(cfg.maps.num_actors, len(todo))
            cpus = int(ray.cluster_resources().get("CPU", 1))
            threads = max(1, cpus // n_actors) if cfg.run.threads == 0 else cfg.run.threads
            ds = ray.data.from_items([{"shard": s} for s in todo], override_num_blocks=len(todo))
            mapped = ds.map_batches(
                ShardMapper,
                fn_constructor_kwargs=dict(
                    root=str(root), split=split, vlm_art=vlm_art, sources=sources, prompts=list(cfg.vlm.prompts),
                    layer=layer, shard_size=cfg.maps.shard_size, batch_size=cfg.maps.batch_size,
                    out_dir=str(out_dir), provenance=prov, threads=threads,
                ),
                batch_size=1,
                compute=ActorPoolStrategy(size=n_actors),
                num_cpus=0 if gpus else 1,
                num_gpus=1 if gpus else 0,
            )
            for row in mapped.iter_rows():
                log.info("maps:%s shard %d: %d images in %.1fs", split, row["shard"], row["rows"], row["seconds"])
        store.mark_complete(out_dir, n, prov)
    return out_dir
