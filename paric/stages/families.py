"""One config, run once per VLM family (``report.families``), so that one report compares a CLIP
VLM's maps and methods with a ProLIP VLM's on the same data, backbone and seeds.

Why a plan and not a second pipeline: every family is an ordinary :func:`run_full` into
``<output_dir>/<family>``, so caching, locking, MLflow and the report work as for any run. The plan
only decides what each family trains: a method that reads the VLM (a map reference, a text tower)
is trained in every family whose map sources write what it reads; a method that does not (vanilla,
the oracle, the group baselines) is trained once, in the first family, except ``report.before``,
which every family trains for its map figure (and whose runs must then agree bit for bit: the
families' data and backbone are the same). The synthetic benchmark is generated once, into
``<output_dir>/data``, and shared.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paric.attention.sources import declared_columns
from paric.catalog import MAP_SOURCES, check
from paric.config import Config, with_value
from paric.regularizers import REGULARIZERS
from paric.regularizers.reference import REFERENCES
from paric.vlm.families import VLM_FAMILIES


@dataclass(frozen=True)
class FamilyRun:
    """One family's share of the comparison: its config, and which of its methods read the VLM."""

    family: str
    cfg: Config
    vlm_methods: tuple[str, ...]  # named "<method> (<family>)" in the merged report
    shared_methods: tuple[str, ...]  # VLM-independent: reported once, from the first family that trains them

    @property
    def output(self) -> Path:
        return self.cfg.output_path()


def method_references(cfg: Config, method: str) -> set[str]:
    """Every reference a method may read: its own, and the sweep's choices of it."""
    refs = {cfg.method(method).reference}
    if method in cfg.sweep.methods and method in cfg.sweep.spaces:
        refs |= set(cfg.sweep.spaces[method].choices("reference"))
    return refs - {"none"}


def vlm_inputs(cfg: Config, method: str) -> tuple[bool, set[str]]:
    """What of the VLM a method's training reads: (trains through its text tower, the map columns its
    references read, the masks left out); a post-hoc method reads what its base does."""
    m = cfg.method(method)
    if m.posthoc != "none" and m.base is not None:
        return vlm_inputs(cfg, m.base)
    columns = {c for ref in method_references(cfg, method) for c in REFERENCES.get(ref).columns} - {"mask"}
    return REGULARIZERS.get(m.regularizer).needs_text, columns


def reads_vlm(cfg: Config, method: str) -> bool:
    """Whether a method's training depends on the VLM (so it is trained, and reported, per family)."""
    text, columns = vlm_inputs(cfg, method)
    return text or bool(columns)


def _runs_under(cfg: Config, method: str, family: str, sources: list[str]) -> bool:
    """Whether ``family`` with map ``sources`` can train a method: a text tower only under CLIP (as
    ``check_pipeline_config`` requires), and every column it reads written by the sources."""
    text, columns = vlm_inputs(cfg, method)
    return (not text or VLM_FAMILIES[family].prompt_text_tower) and columns <= set(declared_columns(sources))


def plan_families(cfg: Config) -> list[FamilyRun]:
    """Each family's config (``run.output_dir=<out>/<family>``, ``vlm.family``, the map sources it can
    compute, the methods it trains and sweeps) in ``report.families`` order. Raises ValueError naming
    the key when the plan would compare nothing."""
    families = list(cfg.report.families)
    if len(families) < 2:
        raise ValueError(f"report.families: name at least two VLM families to compare (got {families})")
    if len(set(families)) != len(families):
        raise ValueError(f"report.families: {families} names a family twice")
    if cfg.report.before in cfg.train.compare and reads_vlm(cfg, cfg.report.before):
        raise ValueError(f"report.before='{cfg.report.before}' reads the VLM; the families report needs a "
                         "VLM-independent baseline there (vanilla)")
    if cfg.report.before in cfg.sweep.methods:
        raise ValueError(f"sweep.methods: report.before='{cfg.report.before}' is trained by every family, so it "
                         "is not swept here (its runs must agree across families); leave it out")
    out = cfg.output_path()
    plan: list[FamilyRun] = []
    trained_shared: set[str] = set()
    for family in families:
        sources = [s for s in cfg.maps.sources if MAP_SOURCES.get(s).family in (None, family)]
        vlm_methods = [m for m in cfg.train.compare if reads_vlm(cfg, m) and _runs_under(cfg, m, family, sources)]
        shared = [m for m in cfg.train.compare if not reads_vlm(cfg, m)
                  and (m not in trained_shared or m == cfg.report.before)]
        trained_shared |= set(shared)
        compare = [m for m in cfg.train.compare if m in vlm_methods or m in shared]
        sweep = [m for m in cfg.sweep.methods if m in compare]
        after = cfg.report.after if cfg.report.after in compare else next(iter(vlm_methods), cfg.report.before)
        fam = cfg
        for key, value in (("vlm.family", family), ("maps.sources", sources), ("train.compare", compare),
                           ("sweep.methods", sweep), ("report.after", after), ("report.families", []),
                           ("run.name", f"{cfg.run.name}-{family}"), ("run.output_dir", str(out / family))):
            fam = with_value(fam, key, value)
        if cfg.data.generated and not cfg.data.root:  # one benchmark for every family
            fam = with_value(fam, "data.root", str(out / "data"))
        plan.append(FamilyRun(family, check(fam, f"report.families: {family}"), tuple(vlm_methods), tuple(shared)))
    if not any(p.vlm_methods for p in plan):
        raise ValueError(f"train.compare {cfg.train.compare}: no method reads a VLM, so the families would not "
                         "differ; add a map-regularised method (gals, paric_mean, ...)")
    return plan


def check_families(cfg: Config) -> list[FamilyRun]:
    """The plan, after every family's config problems (each named with its family), so that none
    surfaces after the first family's hour of work."""
    from paric.stages.pipeline import check_pipeline_config  # the pipeline module imports Ray Data's stages

    plan = plan_families(cfg)
    for p in plan:
        try:
            check_pipeline_config(p.cfg)
        except ValueError as exc:
            raise ValueError(f"family '{p.family}': {exc}") from None
    return plan


def run_families(cfg: Config, force: list[str] | tuple[str, ...] = (), progress: bool = True) -> dict:
    """Run (or resume) :func:`run_full` per family, then write ``<output_dir>/families.{json,md}``.
    Returns {"merged", "report", "runs": {family: run_full's result}}."""
    from paric.stages.lock import exclusive
    from paric.report.families import FamilyResults, merge_families, write_families
    from paric.stages.pipeline import run_full

    plan = check_families(cfg)
    runs, results = {}, []
    for p in plan:
        with exclusive(p.cfg):
            runs[p.family] = run_full(p.cfg, force=force, progress=progress)
        results.append(FamilyResults(p.family, p.output, runs[p.family]["results"], p.vlm_methods,
                                     p.shared_methods))
    merged = merge_families(results)
    out = write_families(merged, cfg.output_path(), cfg.run.name)
    return {"merged": merged, "report": out, "runs": runs}
