"""Cost of streaming training data (map store → Ray Data → ``iter_torch_batches``) relative to
training from in-memory tensors, on the same model, method and config.

Both paths feed the same :class:`paric.train.loop.Trainer`; the Ray Data path reads the Parquet
map store with ``read_parquet``, joins the images with an actor pool and materialises the result
once (what ``paric/stages/train.py`` does), then iterates each epoch. Needs a finished precompute
(``make run``) for the config. Prints per-epoch times and the ratios:

    steady_ratio=<ray epoch / memory epoch>  amortised_ratio=<(ray epochs + one-off load) / memory epochs>

    python benchmarks/bench_train_io.py [--config conf/default.yaml] [--epochs 2] [key=value ...]
"""
from __future__ import annotations

import argparse
import time

import torch

from paric.catalog import load_config
from paric.stages.ray_env import ensure_ray
from paric.stages.train_data import split_dataset
from paric.train.data import iterate, load_split
from paric.train.run import dataset_info, make_spec, make_trainer, split_columns

# A cheap regulariser that still reads all K stored samples per image: the I/O is what is measured.
BENCH = ["train.methods.bench.regularizer=gradcam", "train.methods.bench.reference=mean",
         "train.methods.bench.weight=1.0"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="conf/default.yaml")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg = load_config(args.config, BENCH + args.overrides)
    root, maps, bs = cfg.data_root(), cfg.layout.maps(), cfg.train.batch_size
    cols, need_mask = split_columns(cfg, "bench")
    n_classes, n_groups, _ = dataset_info(root)

    t0 = time.perf_counter()
    train = load_split(root, maps / "train", "train", cfg.classifier.image_size, cols, need_mask)
    load_mem = time.perf_counter() - t0
    spec = make_spec(cfg, "bench", 0, train["label"], train["group"], n_classes, n_groups, None)

    ensure_ray()
    t0 = time.perf_counter()
    ds = split_dataset(cfg, root, "train", cols, need_mask)
    load_ray = time.perf_counter() - t0

    mem_times, ray_times = [], []
    mem, ray_ = make_trainer(spec), make_trainer(spec)
    for e in range(args.epochs):  # interleaved, so drift in machine load hits both paths alike
        t0 = time.perf_counter()
        mem.train_epoch(iterate(train, bs, True, 0, e))
        mem_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ray_.train_epoch(ds.iter_torch_batches(batch_size=bs, local_shuffle_buffer_size=4 * bs, local_shuffle_seed=e))
        ray_times.append(time.perf_counter() - t0)
    m, r = min(mem_times), min(ray_times)
    print(f"torch threads: {torch.get_num_threads()}, images: {len(train['label'])}, batch: {bs}")
    print(f"load: in-memory {load_mem:.1f}s  ray-data (read+join+materialise) {load_ray:.1f}s")
    print(f"epoch: in-memory {m:.2f}s  ray-data {r:.2f}s  (all: {[round(t, 2) for t in mem_times]} / "
          f"{[round(t, 2) for t in ray_times]})")
    epochs = cfg.train.epochs
    amortised = (r * epochs + load_ray) / (m * epochs + load_mem)
    print(f"steady_ratio={r / m:.3f} amortised_ratio={amortised:.3f}")


if __name__ == "__main__":
    main()
