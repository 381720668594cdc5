"""The Ray Datasets that training reads: each split's map store joined to its images, and a
method's view of the shared train split (its columns, its rows).

Why apart from the trainer: the sweep and the final runs build these once on the driver and share
them; a lazy projection inside a trainer's shard could wait for a CPU that the trials hold.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import ray

from paric.config import Config
from paric.stages.ray_env import ensure_ray, ordered_data
from paric.store import list_parts, read_store
from paric.train.data import join_images, majority_groups, train_view
from paric.train.run import dataset_info, split_columns

log = logging.getLogger("paric")


def split_dataset(cfg: Config, root: Path, split: str, columns: list[str], with_mask: bool) -> ray.data.Dataset:
    """A split as a materialised Ray Dataset: map-store columns joined to decoded images (and masks)."""
    ensure_ray()  # connect (or start a local cluster) only when Ray is needed: cached reruns never start it
    ordered_data()
    store = cfg.layout.maps(split)
    parts = [str(p) for _, p in sorted(list_parts(store).items())]
    if not parts:
        raise FileNotFoundError(f"{store}: no map-store parts; run the precompute stage first")
    ds = ray.data.read_parquet(parts).select_columns(["image_id", "label", "group", *columns])
    # tasks, not an actor: Ray's pooled workers are warm after the first task, whereas every build
    # with an actor pool started a fresh process (7-8 s per split at toy size, three splits per run)
    ds = ds.map_batches(join_images, fn_args=(str(root), split, cfg.classifier.image_size, with_mask),
                        batch_format="numpy", batch_size=256)
    return ds.drop_columns(["image_id"]).materialize()


def run_datasets(cfg: Config, root: Path, methods: list[str], test: bool = True) -> dict[str, ray.data.Dataset]:
    """train (with every column the ``methods`` need), val and test as materialised Ray Datasets,
    built once and shared by all the runs (and sweep trials) that read them."""
    needs = [split_columns(cfg, m) for m in methods]
    cols = sorted({col for columns, _ in needs for col in columns})
    need_mask = any(m for _, m in needs)
    out = {"train": split_dataset(cfg, root, "train", cols, need_mask),
           "val": split_dataset(cfg, root, "val", [], False)}
    if test:
        out["test"] = split_dataset(cfg, root, "test", [], dataset_info(root)[2])
    return out


def train_columns(cfg: Config, method: str, references: list[str] | None = None) -> list[str]:
    """Columns of the joined train dataset that ``method`` reads (see :func:`split_columns`)."""
    cols, need_mask = split_columns(cfg, method, references)
    return sorted({"image", "label", "group", *cols, *(["mask"] if need_mask else [])})


def train_labels(cfg: Config, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(label, group) of the train rows ``method`` trains on (its ``train_groups`` view)."""
    labels = read_store(cfg.layout.maps("train"), columns=["label", "group"])
    keep = train_view(cfg.method(method).train_groups, labels.label, labels.group)
    return (labels.label, labels.group) if keep is None else (labels.label[keep], labels.group[keep])


def _keep_groups(batch: dict[str, np.ndarray], groups: list[int]) -> dict[str, np.ndarray]:
    keep = np.isin(batch["group"], groups)
    return {k: v[keep] for k, v in batch.items()}


def method_train_data(cfg: Config, datasets: dict[str, ray.data.Dataset], method: str,
                      references: list[str] | None = None) -> dict[str, ray.data.Dataset]:
    """The shared datasets with train reduced to ``method``'s columns and rows (``train_groups``)."""
    datasets = project_train(datasets, train_columns(cfg, method, references))
    if cfg.method(method).train_groups == "all":
        return datasets
    labels = read_store(cfg.layout.maps("train"), columns=["label", "group"])
    groups = majority_groups(labels.label, labels.group)
    train = datasets["train"].map_batches(_keep_groups, fn_kwargs={"groups": groups}, batch_format="numpy")
    return {**datasets, "train": train.materialize()}


def project_train(datasets: dict[str, ray.data.Dataset], columns: list[str]) -> dict[str, ray.data.Dataset]:
    """Keep ``columns`` of the shared train dataset, materialised now, unless it has exactly those.

    Why: a shared dataset may carry other methods' columns, and a lazy projection would run as
    CPU tasks inside the trainer's shards, where no CPU may be free. Inside a sweep trial even the
    eager one can wait for ever (the other trials' workers hold every CPU), so the sweep projects
    on its driver before any trial starts and trials find nothing left to do.
    """
    if sorted(datasets["train"].columns()) == sorted(columns):
        return datasets
    return {**datasets, "train": datasets["train"].select_columns(columns).materialize()}
