"""``report/results.json`` (the contract in DESIGN.md) and ``report/report.md`` from a run's outputs."""
from __future__ import annotations

import json
from pathlib import Path

from paric.config import Config
from paric.eval.faithfulness import protocol
from paric.eval.map_quality import POINTING_RULE
from paric.io import atomic_path, write_json
from paric.report.ladder import ladder_lines
from paric.report.table import DETAIL_COLUMNS, methods_table, paired_table

ZERO_SHOT_RESULT, ZERO_SHOT_FIGURE = "lazsl.json", "lazsl_crops.png"  # written by paric.stages.zeroshot


def build_results(cfg: Config, quality: dict | None, summary: dict, sweeps: dict[str, dict] | None = None) -> dict:
    """{"config", "maps": {"energy_in_mask": {...}, "pointing_game": {...}}, "methods": {...},
    "per_group_acc", "zero_shot": {task: {n, crops, classes, fell_back, acc}}, "sweep": {method: {best,
    best_score, trials, failed}}}."""
    maps = {}
    if quality:
        test = quality.get("splits", {}).get("test") or {}
        maps = {k: test[k] for k in ("energy_in_mask", "pointing_game", "pixel_std") if k in test}
    out = {"config": cfg.model_dump(mode="json"), "maps": maps, "methods": summary["methods"],
           "seeds": summary.get("seeds", []), "per_group_acc": summary.get("per_group_acc", {}),
           "paired": summary.get("paired", [])}
    zero = load_zero_shot(cfg)
    if zero:
        out["zero_shot"] = zero
    vlm = load_vlm_report(cfg)
    if vlm:
        out["vlm"] = vlm
    e = cfg.eval
    out["protocols"] = {
        "insertion_deletion": protocol(cfg.classifier.image_size, e.faith_steps, e.faith_blur, e.faith_max_images),
        "pointing_game": POINTING_RULE}
    if sweeps:
        out["sweep"] = {m: {"best": s["best"], "best_score": s["best_score"], "failed": s.get("failed", 0),
                            "n_trials": len(s.get("trials", [])), "seeds": s.get("seeds", [cfg.run.seed]),
                            "configs": [{k: c[k] for k in ("params", "score", "scores")} for c in s.get("configs", [])]}
                        for m, s in sweeps.items()}
    return out


def results_rows(methods: dict) -> list[dict]:
    """One row per (method, metric): n seeds, mean, std, the bootstrap CI where there is one, and the
    per-seed values, so a spreadsheet or pandas reads the table without parsing results.json."""
    rows = []
    for method, metrics in methods.items():
        for metric, v in metrics.items():
            if not isinstance(v, dict) or "mean" not in v:
                continue
            ci = v.get("ci") or {}
            rows.append({"method": method, "metric": metric, "n": len(v.get("runs", [])), "mean": v["mean"],
                         "std": v.get("std"), "ci_lo": ci.get("lo"), "ci_hi": ci.get("hi"),
                         "seeds": " ".join(map(str, v.get("seeds", []))),
                         "runs": " ".join(f"{x:.6g}" for x in v.get("runs", []) if isinstance(x, (int, float)))})
    return rows


def write_results_csv(methods: dict, path: Path) -> None:
    """``results.csv`` beside results.json (written to a temp name, then renamed)."""
    import csv

    rows = results_rows(methods)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "metric", "n", "mean", "std", "ci_lo", "ci_hi", "seeds", "runs"])
        w.writeheader()
        w.writerows(rows)


def write_report(cfg: Config, results: dict, out_dir: Path | None = None, figures: list[Path] | None = None,
                 ladder: dict | None = None) -> Path:
    """Write results.json and report.md (methods × metrics, map quality, sweeps, figures) under ``report/``."""
    out = out_dir or cfg.layout.report()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    write_results_csv(results["methods"], out / "results.csv")
    lines = [f"# paric report: {cfg.run.name}", "",
             f"Seeds: {results.get('seeds')}; accuracies in %: worst-group, mean-of-groups, overall and ECE as mean "
             "[95 % bootstrap CI over seeds], the rest mean ± std; best epoch by class-balanced validation accuracy.",
             "", methods_table(results["methods"]), "",
             "Every other metric (robust accuracy, NLL, where each model's own Grad-CAM falls, its insertion / deletion "
             "AUC, seconds per run); `results.csv` has each one per seed.", "",
             methods_table(results["methods"], DETAIL_COLUMNS), ""]
    if results.get("paired"):
        lines += ["## Paired differences (per seed, percentage points)", "",
                  "Runs of two methods with the same seed share data order and initialisation; the mean of their "
                  "per-seed differences and its 95 % bootstrap CI (an interval that excludes 0 is a difference "
                  "this benchmark resolves).", "", paired_table(results["paired"]), ""]
    lines += map_lines(results.get("maps", {})) + vlm_lines(results.get("vlm"))
    if ladder is not None:
        lines += ladder_lines(ladder)
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
        best = best_values(sw["best"])
        seeds = sw.get("seeds") or []
        over = f", each configuration trained with seeds {seeds} and scored by their mean" if len(seeds) > 1 else ""
        lines += [f"## Sweep: {method}", "", f"{sw['n_trials']} trials ({sw['failed']} failed){over}; best validation "
                  f"accuracy {100 * sw['best_score']:.1f}% at {best}. The final runs use these values.", ""]
        if len(seeds) > 1 and sw.get("configs"):
            lines += ["| values | mean | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                      "|---|---|" + "---|" * len(seeds)]
            lines += [f"| {best_values(c['params'])} | {100 * c['score']:.1f} | " + " | ".join(
                f"{100 * c['scores'][str(s)]:.1f}" if str(s) in c["scores"] else "—" for s in seeds) + " |"
                for c in sw["configs"]]
            lines.append("")
    for fig in figures or []:
        lines += [f"![{fig.stem}]({fig.name})", ""]
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return out


def best_values(best: dict) -> str:
    """A sweep's best values as ``weight=0.3, k=8``."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items())


def map_lines(maps: dict) -> list[str]:
    """The reference-map table: energy-in-mask, pointing game, and a sampling source's per-pixel std
    over its K maps (on its mean's row)."""
    eim, pg, spread = maps.get("energy_in_mask"), maps.get("pointing_game", {}), maps.get("pixel_std", {})
    if not eim:
        return []
    lines = ["## Reference maps (test split)", "", "| map | energy-in-mask | pointing game | per-pixel std of "
             "the K maps (all / in object / outside) |", "|---|---|---|---|"]
    for k, v in eim.items():
        sd = spread.get(k.replace("mean", "std")) if k.endswith("mean") else None
        sd_txt = f"{sd['mean']:.4f} / {sd['in_mask']:.4f} / {sd['out_mask']:.4f}" if sd else ""
        lines.append(f"| {k} | {v:.3f} | {pg.get(k, float('nan')):.3f} | {sd_txt} |")
    return lines + [""]


def vlm_lines(vlm: dict | None) -> list[str]:
    """The VLM's zero-shot accuracy (and a ProLIP's CSD ranking and text uncertainty)."""
    if not vlm:
        return []
    lines = ["## The VLM (test split, zero-shot)", "", "| task | prompt μ only | CSD ranking |", "|---|---|---|"]
    for task in ("classes", "all_shapes"):
        if f"acc_{task}" in vlm:
            csd = vlm.get(f"csd_{task}", {}).get("csd")
            lines.append(f"| {task} | {100 * vlm[f'acc_{task}']:.1f} | {'' if csd is None else f'{100 * csd:.1f}'} |")
    unc = vlm.get("text_uncertainty")
    if unc:
        (p1, v1), (p2, v2) = list(unc["probes"].items())
        lines += ["", f"Text uncertainty (mean σ² per dimension): '{p1}' {v1:.3g}, '{p2}' {v2:.3g}; over the "
                  f"corpus' {unc['captions']} distinct captions, generic-noun {unc['mean_var_generic']:.3g} against "
                  f"shape-named {unc['mean_var_named']:.3g}, Spearman ρ(words, σ²) = {unc['spearman_words_vs_var']:.2f}. "
                  f"Image σ per dimension: {vlm.get('image_std_per_dim', float('nan')):.3g}."]
    return lines + [""]


def load_vlm_report(cfg: Config) -> dict | None:
    """The vlm stage's zero-shot report (``vlm/clip/pretrain.json``), for a VLM pretrained here."""
    p = cfg.layout.vlm() / "pretrain.json"
    return json.loads(p.read_text()).get("zero_shot") if p.is_file() else None


def load_zero_shot(cfg: Config) -> dict | None:
    p = cfg.layout.zeroshot() / ZERO_SHOT_RESULT
    return json.loads(p.read_text()) if p.is_file() else None


def load_quality(cfg: Config) -> dict | None:
    p = cfg.layout.quality()
    return json.loads(p.read_text()) if p.is_file() else None
