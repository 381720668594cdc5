"""The whole pipeline in order: data → VLM → adapters → maps → quality → backbone → sweeps →
final runs of each method's best configuration over seeds → report, under one MLflow parent run.

Why one function: ``pipelines/full.py`` (plain or under ``ray job submit``) and the tests run the
same sequence. Every stage is cached by a hash of its config and inputs, so a rerun only logs
"skipped (cached)" lines, and ``force`` redoes chosen stages.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from paric.attention.sources import declared_columns
from paric.catalog import CATALOG, MAP_SOURCES, check
from paric.config import Config
from paric.data.fingerprint import fixed_data
from paric.regularizers import REGULARIZERS
from paric.regularizers.reference import REFERENCES
from paric.io import write_json
from paric.report.ladder import build_ladder
from paric.report.results import ZERO_SHOT_FIGURE, build_results, load_quality, write_report
from paric.stages.cache import StageLog, stage_log
from paric.stages.runner import Stage, run_stage
from paric.stages.classifier import backbone_stage
from paric.stages.maps import run_precompute
from paric.stages.ray_env import quiet_data
from paric.search_space import distributions
from paric.stages.sweep import adopt_best_trial, apply_best, sweep_stage
from paric.stages.compare import compare_stage
from paric.stages.train import Tracking
from paric.stages.train_data import run_datasets
from paric.train.loop import check_precision
from paric.tracking import (OUTPUT_TAG, close_stale_runs, ensure_experiment, log_artifact, log_metrics, start_run,
                            tracking_uri)
from paric.vlm.families import VLM_FAMILIES

log = logging.getLogger("paric")


def check_pipeline_config(cfg: Config) -> None:
    """Config problems that would otherwise surface an hour in (raises ValueError naming the key)."""
    if cfg.report.families:
        raise ValueError(f"report.families={cfg.report.families}: this config compares VLM families; run it with "
                         "pipelines/families.py (one run per family and a merged report), or drop the key")
    for m in cfg.train.compare:
        if m not in cfg.train.methods:
            raise ValueError(f"train.compare: '{m}' is not defined in train.methods ({sorted(cfg.train.methods)})")
        CATALOG.method_in_use(m, cfg.method(m))
        base = cfg.method(m).base
        if cfg.method(m).posthoc != "none" and base not in cfg.train.compare:
            raise ValueError(f"train.methods.{m}: posthoc '{cfg.method(m).posthoc}' starts from base '{base}', "
                             f"which train.compare {cfg.train.compare} does not train")
        if cfg.method(m).posthoc != "none" and cfg.method(base).posthoc != "none":
            raise ValueError(f"train.methods.{m}: base '{base}' must be a trained method, not another post-hoc one")
        check_precision(cfg.train.precision, m, cfg.method(m).regularizer)
        if cfg.method(m).two_stage != "none" and cfg.train.num_workers > 0:
            raise ValueError(f"train.methods.{m}: two-stage method '{cfg.method(m).two_stage}' runs in the plain loop "
                             f"only (train.num_workers=0), got train.num_workers={cfg.train.num_workers}")
    for m in cfg.sweep.methods:
        if m in cfg.train.methods and cfg.method(m).two_stage != "none" and cfg.train.num_workers > 0:
            raise ValueError(f"sweep.methods: '{m}' is two-stage method '{cfg.method(m).two_stage}', which runs in the "
                             f"plain loop only: its trials too (train.num_workers=0), got "
                             f"train.num_workers={cfg.train.num_workers}")
        if m not in cfg.train.methods:
            raise ValueError(f"sweep.methods: '{m}' is not defined in train.methods")
        if m not in cfg.sweep.spaces:
            raise ValueError(f"sweep.methods: '{m}' has no search space in sweep.spaces ({sorted(cfg.sweep.spaces)})")
    for name in cfg.maps.sources:
        family = MAP_SOURCES.get(name).family
        if family is not None and family != cfg.vlm.family:
            raise ValueError(f"maps.sources: '{name}' samples a {family} VLM's own Gaussians; it needs "
                             f"vlm.family={family} (got {cfg.vlm.family})")
    for m in cfg.train.compare:
        if (REGULARIZERS.get(cfg.method(m).regularizer).needs_text
                and not VLM_FAMILIES[cfg.vlm.family].prompt_text_tower):
            raise ValueError(f"train.methods.{m}: regularizer '{cfg.method(m).regularizer}' trains through a CLIP "
                             f"text tower (CoOp prompts); vlm.family={cfg.vlm.family} has none. Leave it out of "
                             "train.compare")
    written = set(declared_columns(cfg.maps.sources))
    for m in sorted({*cfg.train.compare, *cfg.sweep.methods}):
        refs = {cfg.method(m).reference, *(cfg.sweep.spaces[m].choices("reference") if m in cfg.sweep.methods else [])}
        for ref in sorted(refs - {"none"}):
            missing = [c for c in REFERENCES.get(ref).columns if c != "mask" and c not in written]
            if missing:
                raise ValueError(f"train.methods.{m}: reference '{ref}' reads {missing}, which maps.sources "
                                 f"{cfg.maps.sources} do not write; add the source that does")
    for key in ("before", "after"):  # the map figure shows these methods' trained classifiers
        name = getattr(cfg.report, key)
        if name not in cfg.train.compare:
            raise ValueError(f"report.{key}='{name}' is not trained by this config (train.compare: "
                             f"{cfg.train.compare}); name one of those")


@contextmanager
def invocation(cfg: Config, name: str) -> Iterator[Tracking]:
    """This invocation's MLflow parent run (tagged with its output directory), after marking ``KILLED``
    whatever a killed earlier invocation on the same output left running; each dataset is
    fingerprinted once inside it. Hold the output lock."""
    out = cfg.output_path()
    uri = tracking_uri(out)
    tracking = Tracking(uri, ensure_experiment(uri, cfg.run.name))
    output = str(Path(out).resolve())
    stale = close_stale_runs(uri, tracking.experiment_id, output)
    if stale:
        log.info("tracking: marked %d run(s) of a killed earlier invocation KILLED", len(stale))
    with start_run(uri, tracking.experiment_id, name, params=cfg.model_dump(mode="json"),
                   tags={OUTPUT_TAG: output}) as rid, fixed_data():
        tracking.parent_id = rid
        yield tracking


def report_stage(cfg: Config, root: Path, summary: dict, sweeps: dict[str, dict], tracking: Tracking) -> Path:
    """results.json, report.md and figures (cached by the results they show); logged to MLflow."""
    out = cfg.layout.report()
    results = build_results(cfg, load_quality(cfg), summary, sweeps)
    digest = hashlib.sha256(json.dumps(results, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def write() -> dict:
        from paric.report.figures import ladder_figure, maps_figure, methods_ci_figure, sweep_figures  # matplotlib: slow import

        figures = [methods_ci_figure(summary["methods"], out / "methods_ci.png")]
        ladder = build_ladder(cfg, root, summary)
        write_json(out / "ladder.json", ladder)
        if "skipped" not in ladder:
            figures.append(ladder_figure(ladder, out / "ladder.png"))
        before, after = figure_runs(cfg, summary)
        if before and after:
            figures.append(maps_figure(cfg, root, before, after, out / "maps.png", cfg.report.examples_per_group))
        crops = cfg.layout.zeroshot() / ZERO_SHOT_FIGURE
        if crops.is_file():  # LaZSL's crops figure, beside the others (and in MLflow with them)
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(crops, out / crops.name)
            figures.append(out / crops.name)
        for method, sw in sweeps.items():
            dists = distributions(cfg.sweep.spaces[method], cfg.maps.K)
            figures.extend(sweep_figures(sw["trials"], dists, method, out))
        write_report(cfg, results, out, figures, ladder)
        for path in [out / "results.json", out / "report.md", out / "ladder.json", *figures]:
            log_artifact(tracking.uri, tracking.parent_id, path, "report")
        return {"figures": [f.name for f in figures]}

    # keyed by the results it shows (and the report's own options)
    stage = Stage("report", out, ("report",), (digest,), outputs=("results.json", "report.md"))
    return run_stage(cfg, stage, write, lambda: out)


def figure_runs(cfg: Config, summary: dict) -> tuple[tuple[str, Path] | None, tuple[str, Path] | None]:
    """(before, after) runs for the map figure: vanilla vs the configured regularised method, first seed."""
    seed = summary["seeds"][0]

    def run(method: str) -> tuple[str, Path] | None:
        path = cfg.layout.model(method, seed)
        return (method, path) if path.is_file() else None

    return run(cfg.report.before), run(cfg.report.after)


def stage_table(events: list[dict]) -> str:
    """The terminal summary: one row per stage with its state, wall time and output."""
    w = max([len(e["stage"]) for e in events] + [5])
    lines = [f"{'stage':<{w}}  {'state':<16} {'seconds':>8}  output", "-" * (w + 40)]
    lines += [f"{e['stage']:<{w}}  {e['state']:<16} {e['seconds']:>8.1f}  {e['output']}" for e in events]
    return "\n".join(lines)


def run_sweeps(cfg: Config, methods: list[str], force: list[str] | tuple[str, ...] = (), progress: bool = True) -> dict:
    """Precompute (cached), backbone (cached), then sweep ``methods`` under one MLflow parent run."""
    cfg = check(cfg)
    quiet_data(progress)
    with stage_log(force), invocation(cfg, f"sweep {','.join(methods)}") as tracking:
        run_precompute(cfg, progress=progress)
        root = cfg.data_root()
        backbone = backbone_stage(cfg, root, progress)
        shared = functools.cache(lambda: run_datasets(cfg, root, methods, test=False))
        return {m: sweep_stage(cfg, root, m, backbone, tracking, shared) for m in methods}


def run_full(cfg: Config, force: list[str] | tuple[str, ...] = (), progress: bool = True) -> dict:
    """Run (or resume) every stage; returns {"results", "report", "stages", "seconds"}."""
    cfg = check(cfg)  # names and plugin options, if the caller loaded it unchecked (paric.config.load_config)
    check_pipeline_config(cfg)
    with stage_log(force) as log:
        return _run_full(cfg, log, force, progress)


def _run_full(cfg: Config, log: StageLog, force: list[str] | tuple[str, ...], progress: bool) -> dict:
    quiet_data(progress)
    t0 = time.time()
    out = cfg.output_path()
    out.mkdir(parents=True, exist_ok=True)
    if "data" in force and cfg.data.generated and cfg.data_root().exists():
        shutil.rmtree(cfg.data_root())  # the generator skips an existing benchmark otherwise
    with invocation(cfg, f"full {cfg.run.name}") as tracking:
        uri, parent = tracking.uri, tracking.parent_id
        run_precompute(cfg, progress=progress)
        root = cfg.data_root()
        backbone = backbone_stage(cfg, root, progress)
        # one set of Ray Datasets (images joined to every column any method reads) for trials and final runs
        shared = functools.cache(lambda: run_datasets(cfg, root, sorted({*cfg.train.compare, *cfg.sweep.methods})))
        sweeps = {m: sweep_stage(cfg, root, m, backbone, tracking, shared) for m in cfg.sweep.methods}
        final = apply_best(cfg, sweeps)
        summary = compare_stage(final, root, final.train.compare, final.train.seeds, backbone, tracking, shared,
                                adopt=lambda m, s: adopt_best_trial(final, root, m, s, sweeps.get(m), tracking))
        report = report_stage(final, root, summary, sweeps, tracking)
        seconds = round(time.time() - t0, 1)
        for e in log.events:  # one child run per stage: its wall time and whether it was cached
            with start_run(uri, tracking.experiment_id, f"stage {e['stage']}", parent,
                           {"output": e["output"], "state": e["state"]}) as rid:
                log_metrics(uri, rid, {"seconds": e["seconds"], "skipped": float(e["state"] != "done")})
        log_metrics(uri, parent, {"pipeline_seconds": seconds})
    stages = list(log.events)
    write_json(out / "pipeline_summary.json", {"stages": stages, "seconds": seconds, "force": list(force)})
    return {"results": json.loads((report / "results.json").read_text()), "report": report, "stages": stages,
            "seconds": seconds}
