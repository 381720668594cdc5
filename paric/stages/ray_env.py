"""Connecting to Ray the same way from a laptop, a test session and ``ray job submit``.

Why: under a job (``RAY_ADDRESS`` set) resource arguments to ``ray.init`` are an error, while a
plain run must start a small local cluster; GPU requests on a CPU-only cluster hang forever.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import ray
import ray.data


def ensure_ray(num_cpus: int | None = None, object_store_mb: int = 512) -> None:
    """Connect to the cluster in ``RAY_ADDRESS`` if set, else start a local one (idempotent)."""
    if ray.is_initialized():
        return
    env = {"runtime_env": {"env_vars": worker_env()}}  # merged with a submitted job's own runtime env
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True, **env)
    else:
        own_temp_dir()
        ray.init(
            address="local",  # a fresh local cluster even when a `ray start` head runs on this machine
            num_cpus=num_cpus,
            object_store_memory=object_store_mb * 1024 * 1024,
            include_dashboard=True,  # Train V2 + Tune leak placement groups without it
            log_to_driver=True,
            **env,
        )
        advertise_local_cluster()


def worker_env() -> dict[str, str]:
    """Environment of every worker: Ray Data logs at WARNING (unless ``RAY_DATA_LOG_LEVEL`` says
    otherwise). Why: each Train worker's dataset shard runs its own executor, which logs three INFO
    lines per epoch ("Starting execution", "Execution plan", "execution finished"); forwarded to the
    driver from every worker they made most of a default run's 24,491-line log."""
    return {"RAY_DATA_LOG_LEVEL": os.environ.get("RAY_DATA_LOG_LEVEL", "WARNING")}


def own_temp_dir() -> str:
    """Give the local cluster this process starts a temp dir of its own (``RAY_TMPDIR``, which its
    raylet and workers inherit), unless one is set already.

    Why: Ray's address file (``ray_current_cluster``) lives in the temp dir, so two pipelines started
    plainly on one machine would otherwise point each other's placement-group cleaners at the wrong
    cluster ("Found multiple active Ray instances … Connecting to latest cluster").
    """
    if not os.environ.get("RAY_TMPDIR"):
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="paric-ray-", dir="/tmp")  # short: socket paths
    return os.environ["RAY_TMPDIR"]


def advertise_local_cluster() -> None:
    """Point this machine's Ray address file at the local cluster this process started.

    Why: Ray Train V2's placement-group cleaner (and the State API) find "the" cluster through that
    file (what ``ray start`` writes), and ``ray.init(address="local")`` does not update it. A file
    left by an earlier ``ray start`` sends the cleaner to a dead address; it gives up, and every Tune
    trial that ASHA stops or that fails keeps its CPUs reserved until the sweep starves (measured:
    the default sweep hung after its first trials).
    """
    from ray._private.utils import get_ray_address_file, write_ray_address  # what `ray start` itself uses

    # a cluster with its own temp dir (RAY_TMPDIR, the tests') may be the first to write to Ray's default one
    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    write_ray_address(ray.get_runtime_context().gcs_address)


def quiet_data(progress: bool) -> None:
    """Ray Data's progress bars on the driver: live bars on a terminal unless ``--no-progress``; none
    when the output is a log (a job, CI, a redirect), where Ray prints each bar as a block of log
    lines every few seconds that drown the ``[stage]`` and per-shard lines."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress and sys.stdout.isatty()
    ctx.enable_operator_progress_bars = ctx.enable_progress_bars


def without_progress(ds: "ray.data.Dataset") -> "ray.data.Dataset":
    """A dataset that shows no progress bars wherever it executes: the Train workers' shards run
    their own executors, and each worker's bars would reach the driver's log interleaved (issue 14
    measured 24,491 lines for one default run); the epoch lines say how training goes."""
    ds.context.enable_progress_bars = False
    ds.context.enable_operator_progress_bars = False
    return ds


def ordered_data() -> None:
    """Ray Data keeps row order in this process's datasets (``preserve_order``).

    Why: by default blocks leave an operator in completion order, so two builds of the same split
    yield rows in different orders and the same config and seed trained to different models
    (measured: the final run of a sweep's best values, retrained, differed from its trial at the
    first epoch). With the order kept, the seeded local shuffle makes Ray Train runs repeatable.
    """
    ray.data.DataContext.get_current().execution_options.preserve_order = True


def cluster_gpus() -> int:
    """GPUs the cluster has (0 on CPU-only clusters: never ask for one there)."""
    return int(ray.cluster_resources().get("GPU", 0))
