"""The families report (``families.json`` / ``families.md``): several VLM families' runs of one
config merged into one methods table, with each family's zero-shot accuracy, map quality and sweeps.

Why its own check: the comparison is fair only if the families share data, backbone and seeds. The
VLM-independent baseline that every family trains (``report.before``) is the witness: its per-seed
metrics must agree across families, and the report says whether they do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paric.io import atomic_path, write_json
from paric.report.results import best_values, map_lines, vlm_lines
from paric.report.table import methods_table

#: per-run values that may differ between identical runs (wall time)
UNSTABLE = ("seconds",)


@dataclass(frozen=True)
class FamilyResults:
    """One family's results.json, and which of its methods read the VLM (from the plan)."""

    family: str
    output: Path
    results: dict
    vlm_methods: tuple[str, ...]
    shared_methods: tuple[str, ...]


def row_name(method: str, family: str) -> str:
    return f"{method} ({family})"


def agreement(runs: list[FamilyResults], method: str) -> dict:
    """Whether a VLM-independent method's per-seed metrics agree across the families that trained it."""
    having = [r for r in runs if method in r.shared_methods and method in r.results["methods"]]
    first = having[0].results["methods"][method]
    diff = 0.0
    for other in having[1:]:
        metrics = other.results["methods"][method]
        for key, entry in first.items():
            if key in UNSTABLE or not isinstance(entry, dict) or "runs" not in entry:
                continue
            theirs = metrics.get(key, {}).get("runs", [])
            if len(theirs) != len(entry["runs"]):
                diff = float("inf")
                continue
            diff = max([diff] + [abs(float(a) - float(b)) for a, b in zip(entry["runs"], theirs)])
    return {"families": [r.family for r in having], "identical": diff == 0.0, "max_abs_diff": diff}


def merge_families(runs: list[FamilyResults]) -> dict:
    """{"families", "outputs", "methods" (rows "<m> (<family>)" for VLM-dependent methods, "<m>" once for
    the others, each with its "family"), "vlm", "maps", "sweep", "agreement", "seeds"}."""
    rows: dict[tuple, tuple[str, dict]] = {}  # ordered: the shared methods, then each method under every family
    for i, r in enumerate(runs):
        for m, metrics in r.results["methods"].items():
            if m in r.vlm_methods:
                rows[(1, m, i)] = (row_name(m, r.family), {**metrics, "family": r.family})
            elif m in r.shared_methods and not any(k[:2] == (0, m) for k in rows):
                rows[(0, m, i)] = (m, {**metrics, "family": r.family})
    methods = dict(rows[k] for k in sorted(rows))
    shared = sorted({m for r in runs for m in r.shared_methods})
    twice = [m for m in shared if sum(m in r.shared_methods for r in runs) > 1]
    seeds = {tuple(r.results.get("seeds", [])) for r in runs}
    if len(seeds) != 1:
        raise ValueError(f"the families were trained on different seeds: {sorted(seeds)}")
    return {"families": [r.family for r in runs], "outputs": {r.family: str(r.output) for r in runs},
            "seeds": list(seeds.pop()), "methods": methods,
            "vlm": {r.family: r.results.get("vlm") for r in runs},
            "maps": {r.family: r.results.get("maps", {}) for r in runs},
            "sweep": {r.family: r.results.get("sweep", {}) for r in runs},
            "agreement": {m: agreement(runs, m) for m in twice}}


def side_by_side_maps(merged: dict) -> list[str]:
    """Each reference map's energy-in-mask / pointing game under every family (— where a family's
    sources do not write it), so the VLMs' maps compare on one table."""
    fams = merged["families"]
    kinds = list(dict.fromkeys(k for f in fams for k in (merged["maps"].get(f) or {}).get("energy_in_mask", {})))
    if not kinds:
        return []

    def cell(f: str, k: str) -> str:
        maps = merged["maps"].get(f) or {}
        if k not in maps.get("energy_in_mask", {}):
            return "— | —"
        return f"{maps['energy_in_mask'][k]:.3f} | {maps.get('pointing_game', {}).get(k, float('nan')):.3f}"

    head = "| map | " + " | ".join(f"{f} energy-in-mask | {f} pointing game" for f in fams) + " |"
    lines = ["## Reference maps under each VLM (test split)", "", head, "|---|" + "---|---|" * len(fams)]
    lines += [f"| {k} | " + " | ".join(cell(f, k) for f in fams) + " |" for k in kinds]
    return lines + [""]


def write_families(merged: dict, out: Path, title: str) -> Path:
    """``families.json`` and ``families.md`` under ``out`` (each written to a temp name, then renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "families.json", merged)
    fams = merged["families"]
    dirs = ", ".join(f"`{merged['outputs'][f]}`" for f in fams)
    lines = [f"# paric families report: {title}", "",
             f"One config run under each VLM family ({', '.join(fams)}), each into its own output directory "
             f"({dirs}), on the same benchmark, backbone and seeds "
             f"{merged['seeds']}. A method that reads the VLM is a row per family, `<method> (<family>)`; the "
             "others are trained once. Accuracies in %, mean ± std over seeds.", "",
             methods_table(merged["methods"]), ""]
    for m, a in merged["agreement"].items():
        verdict = ("identical in every per-seed metric" if a["identical"] else
                   f"NOT identical (largest per-seed difference {a['max_abs_diff']:.3g})")
        lines += [f"Equal footing: `{m}` was trained by {', '.join(a['families'])}; its runs are {verdict}.", ""]
    lines += side_by_side_maps(merged)
    for f in fams:
        lines += [f"## {f}", ""]
        lines += [s.replace("## ", "### ", 1) for s in vlm_lines(merged["vlm"].get(f))]
        lines += [s.replace("## ", "### ", 1) for s in map_lines(merged["maps"].get(f) or {})]
        for method, sw in (merged["sweep"].get(f) or {}).items():
            lines += [f"Sweep `{method}`: {sw['n_trials']} trials ({sw['failed']} failed), best validation balanced "
                      f"accuracy {100 * sw['best_score']:.1f}% at {best_values(sw['best'])}.", ""]
        lines += [f"Its own report: `{merged['outputs'][f]}/report/report.md`.", ""]
    with atomic_path(out / "families.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return out
