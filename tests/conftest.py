"""Shared fixtures: one real local Ray cluster per test session, and a tiny end-to-end config."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from paric.stages.ray_env import advertise_local_cluster, own_temp_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail fast on hub downloads: there is no network
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

CONF = Path(__file__).resolve().parents[1] / "conf" / "default.yaml"

TINY = [
    "data.synthetic.image_size=32",
    "data.synthetic.n_train=24",
    "data.synthetic.n_val=8",
    "data.synthetic.n_test=16",
    "data.synthetic.n_captions=256",
    "vlm.name=paric-micro-vit",
    "vlm.pretrain.epochs=1",
    "vlm.pretrain.batch_size=32",
    "vlm.pretrain.warmup_steps=2",
    "adapter.hidden=32",
    "adapter.epochs=2",
    "adapter.batch_size=64",
    "maps.K=4",
    "maps.sources=[gals,paric,paric_norm,lazsl]",  # every source the embedded benchmark can compute
    "maps.shard_size=8",
    "maps.batch_size=4",
    "maps.num_actors=2",
    "run.threads=1",
]


#: modules whose tests run whole stages (subprocess pipelines, Ray Train, sweeps)
SLOW_MODULES = {"test_full", "test_formats_pipeline", "test_sweep", "test_train", "test_precompute"}


def pytest_collection_modifyitems(config, items):
    """``slow``: every test that needs the Ray cluster or runs whole stages; ``pytest -m "not slow"``
    is the unit tier (minutes), ``pytest`` (the README's ``make test``) runs everything."""
    for item in items:
        if "ray_cluster" in item.fixturenames or item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    if not ray.is_initialized():
        # a temp dir of its own (``own_temp_dir``: RAY_TMPDIR, inherited by its raylet and workers, where
        # its address file lives), so the clusters that tests start (``ray start``, plain pipelines) and
        # this one do not point each other's placement-group cleaners at the wrong cluster. Set only while
        # the cluster starts, so the subprocesses the tests launch pick temp dirs of their own.
        before = os.environ.pop("RAY_TMPDIR", None)
        own_temp_dir()
        try:
            # the dashboard is on: without it Train V2 leaks the placement groups of finished Tune trials.
            # Up to 6 idle workers are kept (Ray's default: num_cpus, counting live actors), so a test's runs
            # reuse the workers earlier tests started, torch and paric imported, instead of each new test
            # paying ~6 s of imports per worker while a maps stage's actors hold the count
            ray.init(address="local", num_cpus=2, object_store_memory=512 * 1024 * 1024, include_dashboard=True,
                     log_to_driver=False, _system_config={"num_workers_soft_limit": 6})
            advertise_local_cluster()
        finally:
            if before is None:
                os.environ.pop("RAY_TMPDIR", None)
            else:
                os.environ["RAY_TMPDIR"] = before
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_overrides():
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_precomputed(tmp_path_factory, ray_cluster):
    """The tiny config's precompute (data, VLM, adapters, maps, quality, zero-shot) run once per session;
    modules start from a copy of it (:func:`precomputed_copy`). Caches are keyed on content, not paths,
    so a copy's stages are all cached (``test_cache_keys`` checks that a copied output keeps every key)."""
    from paric.catalog import load_config
    from paric.stages.maps import run_precompute

    out = tmp_path_factory.mktemp("tiny_precomputed")
    run_precompute(load_config(CONF, TINY + [f"run.output_dir={out}"]), progress=False)
    return out


def precomputed_copy(source, dest):
    """A private copy of the session's precomputed outputs (tests may delete or corrupt their parts)."""
    import shutil

    shutil.copytree(source, dest, dirs_exist_ok=True)
    return dest
