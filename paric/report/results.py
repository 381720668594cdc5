"""``report/results.json`` (the contract in DESIGN.md) and ``report/report.md`` from a run's outputs."""
from __future__ import annotations

import json
from pathlib import Path

from paric.config import Config
from paric.io import atomic_path, write_json
from paric.report.table import methods_table

ZERO_SHOT_RESULT, ZERO_SHOT_FIGURE = "lazsl.json", "lazsl_crops.png"  # written by paric.stages.zeroshot


def build_results(cfg: Config, quality: dict | None, summary: dict, sweeps: dict[str, dict] | None = None) -> dict:
    """{"config", "maps": {"energy_in_mask": {...}, "pointing_game": {...}}, "methods": {...},
    "per_group_acc", "zero_shot": {task: {n, crops, classes, fell_back, acc}}, "sweep": {method: {best,
    best_score, trials, failed}}}."""
    maps = {}
    if quality:
        test = quality.get("splits", {}).get("test") or {}
        maps = {k: test[k] for k in ("energy_in_mask", "pointing_game") if k in test}
    out = {"config": cfg.model_dump(mode="json"), "maps": maps, "methods": summary["methods"],
           "seeds": summary.get("seeds", []), "per_group_acc": summary.get("per_group_acc", {})}
    zero = load_zero_shot(cfg)
    if zero:
        out["zero_shot"] = zero
    if sweeps:
        out["sweep"] = {m: {"best": s["best"], "best_score": s["best_score"], "failed": s.get("failed", 0),
                            "n_trials": len(s.get("trials", []))} for m, s in sweeps.items()}
    return out


def write_report(cfg: Config, results: dict, out_dir: Path | None = None, figures: list[Path] | None = None) -> Path:
    """Write results.json and report.md (methods × metrics, map quality, sweeps, figures) under ``report/``."""
    out = out_dir or cfg.output_path("report")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    lines = [f"# paric report: {cfg.run.name}", "",
             f"Seeds: {results.get('seeds')}; accuracies in %, mean ± std over seeds; best epoch by class-balanced "
             "validation accuracy.", "", methods_table(results["methods"]), ""]
    eim = results.get("maps", {}).get("energy_in_mask")
    if eim:
        lines += ["## Reference maps (test split)", "", "| map | energy-in-mask |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in eim.items()]
        lines.append("")
    zero = results.get("zero_shot")
    if zero:
        lines += ["## Zero-shot classification (test split)", "",
                  "CLIP with the class prompt, classification by description (mean over descriptors) and LaZSL "
                  "(optimal transport between crops and descriptors), accuracy in %.", "",
                  "| task | images | CLIP | by description | LaZSL | crops | fell back to the class prompt |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} ({len(r['classes'])} classes) | {r['n']} | {100 * r['acc']['clip']:.1f} | "
                  f"{100 * r['acc']['by_description']:.1f} | {100 * r['acc']['lazsl']:.1f} | {r['crops']} | "
                  f"{', '.join(r['fell_back']) or 'none'} |" for name, r in zero.items()]
        lines.append("")
    for method, sw in (results.get("sweep") or {}).items():
        best = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sw["best"].items())
        lines += [f"## Sweep: {method}", "", f"{sw['n_trials']} trials ({sw['failed']} failed); best validation "
                  f"balanced accuracy {100 * sw['best_score']:.1f}% at {best}. The final runs use these values.", ""]
    for fig in figures or []:
        lines += [f"![{fig.stem}]({fig.name})", ""]
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return out


def load_zero_shot(cfg: Config) -> dict | None:
    p = cfg.output_path("zeroshot", ZERO_SHOT_RESULT)
    return json.loads(p.read_text()) if p.is_file() else None


def load_quality(cfg: Config) -> dict | None:
    p = cfg.output_path("maps", "quality.json")
    return json.loads(p.read_text()) if p.is_file() else None
