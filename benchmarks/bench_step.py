"""Seconds per training epoch of each method on one thread (as a final run gets it), relative to vanilla.

Why: the final runs are most of the default run's wall time, and a method's cost is its step's
cost times its epochs. The epochs are timed from in-memory data (the plain loop's path) on the
finished outputs of a config, methods interleaved so drift in machine load hits all alike. Prints
each method's median epoch seconds and its ratio to the first method:

    method=<name> epoch_s=<median> ratio=<to the first method>

    python benchmarks/bench_step.py [--config conf/default.yaml] [--methods vanilla,gals,...]
        [--epochs 3] [key=value ...]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from paric.catalog import load_config
from paric.train.data import iterate, load_split
from paric.train.run import dataset_info, make_spec, make_trainer, split_columns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="conf/default.yaml")
    p.add_argument("--methods", default="vanilla,gals,paric_mean,paric_norm_mean,oracle_mask")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides)
    root, maps, bs = cfg.data_root(), cfg.layout.maps(), cfg.train.batch_size
    n_classes, n_groups, _ = dataset_info(root)
    methods = args.methods.split(",")
    runs = {}
    for m in methods:
        cols, need_mask = split_columns(cfg, m)
        data = load_split(root, maps / "train", "train", cfg.classifier.image_size, cols, need_mask)
        spec = make_spec(cfg, m, 0, data["label"], data["group"], n_classes, n_groups, None)
        runs[m] = (make_trainer(spec), data)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for e in range(args.epochs):
        for m, (trainer, data) in runs.items():
            t0 = time.perf_counter()
            trainer.train_epoch(iterate(data, bs, True, 0, e))
            times[m].append(time.perf_counter() - t0)
    base = statistics.median(times[methods[0]])
    for m in methods:
        t = statistics.median(times[m])
        print(f"method={m} epoch_s={t:.2f} ratio={t / base:.2f}")


if __name__ == "__main__":
    main()
