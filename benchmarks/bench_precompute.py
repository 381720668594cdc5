"""Scaling of the maps stage (Ray Data actor pool) and the store's size per map value.

Prints the throughput of the real maps stage (``precompute_split``: Ray Data actors computing whole
shards and writing Parquet parts) on one split of the embedded benchmark with 1 and with 2 actors of
one torch thread each (``run.threads=1``), their ratio (scale-out; goal >= 1.7 on 2 cores), the
same split with 1 actor of 2 threads (what one actor gets on this machine without the flag), and
the store's bytes per stored map value (float16 = 2 bytes; goal <= 2.2). Random VLM and adapter
weights: timing and sizes do not depend on them, only shapes. Each setting runs ``--repeats``
times, interleaved, and the best time counts; the stage times include the actors' start-up (VLM
load, imports), so the ratio of the shard compute alone (each shard's seconds, as the stage logs
them, summed per actor) is printed beside it.
Last line:  actors2_over_1=<x> compute2_over_1=<c> actors2_over_1x2threads=<y> bytes_per_value=<z>

    python benchmarks/bench_precompute.py [--images 512] [--K 32] [--shard 128] [--repeats 2]
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

from paric.attention.gradcam import resolve_layer
from paric.catalog import load_config
from paric.stages.precompute import precompute_split
from paric.stages.prepare import VLMArtifact, data_stage
from paric.stages.ray_env import ensure_ray
from paric.store import list_parts, read_store
from paric.vlm.adapters import build_adapters

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1024, help="images in the mapped split")
    p.add_argument("--K", type=int, default=32)
    p.add_argument("--shard", type=int, default=128, help="maps.shard_size")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-precompute-"))
    try:
        cfg = load_config(REPO / "conf" / "default.yaml", [
            f"run.output_dir={tmp / 'out'}", "data.synthetic.n_train=64", "data.synthetic.n_val=32",
            f"data.synthetic.n_test={args.images}", "data.synthetic.n_captions=256", f"maps.K={args.K}",
            f"maps.shard_size={args.shard}"])
        root = data_stage(cfg, progress=False)
        art = VLMArtifact(cfg.vlm.name, None, None, "random")  # random weights: the same on every actor
        vlm = art.load()
        adapters = tmp / "adapters.pt"
        pair = build_adapters(vlm.encode_text(["x"]).shape[1], cfg.adapter)
        torch.save({"adapters": pair.state_dict(), "dim": vlm.encode_text(["x"]).shape[1],
                    "config": cfg.adapter.model_dump()}, adapters)
        layer = resolve_layer(vlm.model.visual, vlm.image_size, cfg.vlm.saliency_layer).path
        ensure_ray(num_cpus=2)
        shard_secs: list[float] = []

        class Shards(logging.Handler):  # the stage's "maps:<split> shard i: n images in s" lines
            def emit(self, record: logging.LogRecord) -> None:
                m = re.search(r"shard \d+: \d+ images in ([0-9.]+)s", record.getMessage())
                if m:
                    shard_secs.append(float(m.group(1)))

        logging.getLogger("paric").addHandler(Shards())
        logging.getLogger("paric").setLevel(logging.INFO)
        best: dict[tuple[int, int], float] = {}
        compute: dict[tuple[int, int], float] = {}  # busiest actor's summed shard seconds ≈ sum / n
        for _ in range(args.repeats):
            for n, threads in ((2, 1), (1, 1), (1, 2)):
                c = load_config(None, [f"{k}={v}" for k, v in (("run.output_dir", tmp / f"out{n}x{threads}"),
                                                               ("data.root", root), ("maps.num_actors", n),
                                                               ("run.threads", threads), ("maps.K", args.K),
                                                               ("maps.shard_size", args.shard),
                                                               ("vlm.name", cfg.vlm.name))])
                shutil.rmtree(c.layout.maps(), ignore_errors=True)
                shard_secs.clear()
                t0 = time.perf_counter()
                store_dir = precompute_split(c, root, "test", art, adapters, layer)
                best[n, threads] = min(best.get((n, threads), float("inf")), time.perf_counter() - t0)
                compute[n, threads] = min(compute.get((n, threads), float("inf")), sum(shard_secs) / n)
        ms = read_store(store_dir)
        values = sum(int(v.size) for v in ms.maps.values())
        size = sum(p.stat().st_size for p in list_parts(store_dir).values())
        for (n, threads), t in sorted(best.items()):
            print(f"{n} actor(s) x {threads} thread(s): {args.images / t:7.1f} images/s ({t:.1f} s for "
                  f"{args.images} images; shard compute {compute[n, threads]:.1f} s per actor)")
        print(f"store: {size} bytes for {values} map values ({len(ms)} images, columns {list(ms.maps)})")
        print(f"actors2_over_1={best[1, 1] / best[2, 1]:.2f} compute2_over_1={compute[1, 1] / compute[2, 1]:.2f} "
              f"actors2_over_1x2threads={best[1, 2] / best[2, 1]:.2f} "
              f"bytes_per_value={size / values:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
