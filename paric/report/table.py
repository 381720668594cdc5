"""Methods × metrics tables (mean ± std over seeds) as Markdown."""
from __future__ import annotations

#: the columns that matter first (the report's and the terminal's table) ...
DEFAULT_COLUMNS = [("group_labels", "group labels used"), ("worst_group_acc", "worst-group"),
                   ("mean_group_acc", "mean-of-groups"), ("acc", "overall"), ("ece", "ECE"),
                   ("best_epoch", "best epoch"), ("epochs_trained", "epochs run"), ("selection", "selected by")]
#: ... and the rest (the report's second table; every metric with its per-seed values is in results.csv)
DETAIL_COLUMNS = [("weighted_acc", "train-weighted avg"), ("pgd_acc", "PGD acc"), ("fgsm_acc", "FGSM acc"),
                  ("nll", "NLL"), ("cam_energy_in_mask", "CAM in mask"), ("insertion_auc", "insertion"),
                  ("deletion_auc", "deletion"), ("faithfulness", "ins − del"), ("seconds", "s / run")]
#: the order of the rows: methods without group labels, then those using validation's, then training's
GROUP_ORDER = ("none", "validation", "training")
#: metrics that are not fractions (shown as they are, not in %)
UNSCALED = ("nll",)
#: columns that hold a word per method, not a mean ± std
TEXT_COLUMNS = ("group_labels", "selection")


def fmt(entry: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean [lo, hi]`` (the 95 % bootstrap CI over seeds) where the entry has one, else ``mean ± std``."""
    if not entry:
        return "—"
    ci = entry.get("ci")
    if ci and ci.get("n", 0) > 1:
        return f"{entry['mean'] * scale:.{digits}f} [{ci['lo'] * scale:.{digits}f}, {ci['hi'] * scale:.{digits}f}]"
    return f"{entry['mean'] * scale:.{digits}f} ± {entry['std'] * scale:.{digits}f}"


def paired_table(paired: list[dict], metrics: tuple[tuple[str, str], ...] = (
        ("worst_group_acc", "worst-group"), ("mean_group_acc", "mean-of-groups"))) -> str:
    """Paired per-seed differences a − b: mean [95 % CI], the seeds where a > b, and each seed's
    difference (percentage points)."""
    head = "| a − b | " + " | ".join(f"{label} Δ [95 % CI] | a > b | per seed" for _, label in metrics) + " |"
    rows = [head, "|---|" + "---|---|---|" * len(metrics)]
    for p in paired:
        cells = []
        for key, _ in metrics:
            d = p.get(key)
            cells += ["—", "—", "—"] if not d else [
                f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]", f"{d['wins']}/{d['n']}",
                " / ".join(f"{100 * x:+.1f}" for x in d["diffs"])]
        rows.append(f"| {p['a']} − {p['b']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def epochs(entry: dict | None) -> str:
    """Each seed's epoch count ("7/9/8"): a run whose best epoch is its last was too short."""
    return "/".join(str(int(v)) for v in entry["runs"]) if entry else "—"


def methods_table(methods: dict[str, dict], columns: list[tuple[str, str]] | None = None) -> str:
    """Markdown table; accuracies and ECE in percent, seconds as is."""
    columns = columns or DEFAULT_COLUMNS
    head = "| method | " + " | ".join(label for _, label in columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    rows = []
    # sorted by the group information a method uses (none, validation, training), as issue 18 asks
    order = sorted(methods.items(), key=lambda kv: GROUP_ORDER.index(kv[1].get("group_labels", "none"))
                   if kv[1].get("group_labels", "none") in GROUP_ORDER else len(GROUP_ORDER))
    for name, metrics in order:
        cells = [str(metrics.get(key, "—")) if key in TEXT_COLUMNS else
                 epochs(metrics.get(key)) if key in ("best_epoch", "epochs_trained") else
                 fmt(metrics.get(key), 1.0, 0) if key == "seconds" else
                 fmt(metrics.get(key), 1.0, 3) if key in UNSCALED else fmt(metrics.get(key)) for key, _ in columns]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])
