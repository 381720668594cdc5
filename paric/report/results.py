"""``report/results.json`` (the contract in DESIGN.md) and ``report/report.md`` from a run's outputs."""
from __future__ import annotations

import json
from pathlib import Path

from paric.config import Config
from paric.io import atomic_path, write_json
from paric.report.table import methods_table


def build_results(cfg: Config, quality: dict | None, summary: dict) -> dict:
    """{"config", "maps": {"energy_in_mask": {...}, "pointing_game": {...}}, "methods": {...}}."""
    maps = {}
    if quality:
        test = quality.get("splits", {}).get("test") or {}
        maps = {k: test[k] for k in ("energy_in_mask", "pointing_game") if k in test}
    return {"config": cfg.model_dump(mode="json"), "maps": maps, "methods": summary["methods"],
            "seeds": summary.get("seeds", [])}


def write_report(cfg: Config, results: dict, out_dir: Path | None = None) -> Path:
    """Write results.json and report.md (methods × metrics, map quality) under ``report/``."""
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
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return out


def load_quality(cfg: Config) -> dict | None:
    p = cfg.output_path("maps", "quality.json")
    return json.loads(p.read_text()) if p.is_file() else None
